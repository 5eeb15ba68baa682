"""Resumable, streamed HTTP(S) downloads of media brought by URL (``media import --url``).

One call, :func:`download`, fetches a URL into a staging folder of its own
(``<staging>/<hash of the URL>/``), never holding more than one chunk in memory:

* bytes arrive in ``.download.part``; ``.download.json`` beside it records the validator they
  belong to (a strong ``ETag``, else ``Last-Modified``), the announced size and the file name;
* a dropped connection (reset, read timeout, fewer bytes than announced) is re-requested from
  the end of the partial file with ``Range`` and ``If-Range`` (the server sends the rest only if
  the file is still that version, else all of it again), at most :data:`RETRIES` times in a row
  without progress; a later call for the same URL resumes the same way;
* the size cap is checked before the body is read (``Content-Length``/``Content-Range``) and
  while it streams (a server announcing nothing); a refused download keeps nothing;
* redirects are followed up to the limit, http and https only; a loop is reported as such;
* ``head_check`` sees the first bytes as soon as they arrive and may refuse them (a web page
  instead of media): the download stops there and keeps nothing;
* the finished file is renamed to its name (``Content-Disposition``, else the URL's last path
  segment) in the staging folder.

Errors are :class:`DownloadError` subclasses whose messages name the URL without its user
info or query (:func:`shown_url`): a signed URL's token never reaches a log or the catalog.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit, urlunsplit

import requests
import urllib3

from watch_pipeline.sources import _transfer
from watch_pipeline.sources.base import SourceError

CHUNK = 1024 * 1024
"""Bytes read and written at a time (the only buffer a download holds)."""
HEAD_BYTES = 64 * 1024
"""How many first bytes ``head_check`` sees (fewer when the whole body is shorter)."""
RETRIES = 5
"""Re-requests after a dropped connection without progress, before giving up."""
PARTIAL = ".download.part"
META = ".download.json"
LOCK = ".download.lock"
_SCHEMES = ("http", "https")
_STREAM_ERRORS = (requests.exceptions.ChunkedEncodingError,
                  requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                  urllib3.exceptions.HTTPError, OSError)


class DownloadError(SourceError):
    """A URL could not be downloaded; the message names it safely and says why."""


class DownloadNotFoundError(DownloadError):
    """The server answered 404 or 410."""


class DownloadTooLargeError(DownloadError):
    """The body is larger than the size cap; nothing was kept."""


class DownloadRedirectError(DownloadError):
    """Too many redirects, a redirect loop, or a redirect to a scheme other than http(s)."""


class DownloadRefusedError(DownloadError):
    """``head_check`` refused the first bytes (not media); nothing was kept."""


@dataclass(frozen=True)
class DownloadLimits:
    """What a download may take: bytes, seconds of silence, and redirects.

    Attributes:
        max_bytes: The largest body accepted.
        timeout_seconds: The longest wait to connect or for the next bytes.
        max_redirects: Redirects followed before giving up.
    """

    max_bytes: int
    timeout_seconds: float
    max_redirects: int


@dataclass(frozen=True)
class Downloaded:
    """A finished download.

    Attributes:
        path: The file in its staging folder.
        size: Its size in bytes.
        filename: Its name (also ``path.name``).
        resumed_from: Bytes that were already there from an earlier attempt (0: fresh).
    """

    path: Path
    size: int
    filename: str
    resumed_from: int = 0


def shown_url(url: str) -> str:
    """``url`` without user info and with any query or fragment elided: safe to log."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<unparseable URL>"
    query = "?…" if parts.query else ""
    return urlunsplit((parts.scheme, f"{host}{port}", parts.path, "", "")) + query


def check_url(url: str) -> str:
    """Return ``url`` stripped, if it is an absolute http(s) URL with a host.

    Raises:
        DownloadError: Any other scheme, no host, or not a URL at all.
    """
    url = url.strip()
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise DownloadError(f"{shown_url(url)} is not a valid URL") from None
    if parts.scheme.lower() not in _SCHEMES:
        raise DownloadError(f"only http and https URLs can be imported, not {parts.scheme!r}"
                            if parts.scheme else f"{shown_url(url)} is not an absolute URL")
    if not parts.hostname:
        raise DownloadError(f"{shown_url(url)} names no host")
    return url


def staging_folder(staging: Path, url: str) -> Path:
    """The folder a download of ``url`` lives in: one per URL, so a later call resumes it."""
    return Path(staging) / hashlib.sha256(url.encode("utf-8")).hexdigest()[:24]


def download(url: str, staging: Path, *, limits: DownloadLimits,
             head_check: Callable[[bytes], str | None] | None = None,
             session: requests.Session | None = None) -> Downloaded:
    """Fetch ``url`` into its staging folder below ``staging``, resuming a partial download.

    Args:
        url: An http(s) URL.
        staging: The folder holding every URL's staging folder.
        limits: Size cap, silence timeout and redirect limit.
        head_check: Called once with the body's first bytes (up to :data:`HEAD_BYTES`); a
            returned message refuses the download.
        session: The HTTP session to use (a new one by default).

    Returns:
        The finished file.

    Raises:
        DownloadNotFoundError: 404/410.
        DownloadTooLargeError: The body exceeds ``limits.max_bytes``.
        DownloadRedirectError: A redirect loop, too many redirects, or a non-http(s) target.
        DownloadRefusedError: ``head_check`` refused the first bytes.
        DownloadError: Any other refusal or failure (HTTP status, the connection dropped
            :data:`RETRIES` times in a row without progress, no space).
    """
    url = check_url(url)
    folder = staging_folder(staging, url)
    folder.mkdir(parents=True, exist_ok=True)
    with _only_download_of(folder, url):
        job = _Job(url, folder, limits, head_check, session or requests.Session())
        try:
            return job.run()
        finally:
            if session is None:
                job.session.close()


@contextlib.contextmanager
def _only_download_of(folder: Path, url: str) -> Iterator[None]:
    """Hold the staging folder's lock: two downloads of one URL never share a partial file.

    Raises:
        DownloadError: Another download of the same URL holds it.
    """
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DownloadError(f"{shown_url(url)} is being downloaded by another import right "
                                "now") from None
        yield
    finally:
        os.close(fd)


@dataclass
class _State:
    """What ``.download.json`` records about the partial file."""

    validator: str | None = None
    total: int | None = None
    filename: str | None = None


class _Job:
    """One download: the request loop, the partial file and its record."""

    def __init__(self, url: str, folder: Path, limits: DownloadLimits,
                 head_check: Callable[[bytes], str | None] | None,
                 session: requests.Session) -> None:
        self.url, self.folder, self.limits = url, folder, limits
        self.head_check, self.session = head_check, session
        self.session.max_redirects = limits.max_redirects
        self.part, self.meta = folder / PARTIAL, folder / META
        self.shown = shown_url(url)
        self.state = self._load_state()
        self.head_checked = False

    def run(self) -> Downloaded:
        resumed_from = _transfer.file_size(self.part)
        failures = 0
        while True:
            done = _transfer.file_size(self.part)
            try:
                if self._fetch(done):
                    break
                failures = 0  # the server sent the whole body again: not a drop
            except _STREAM_ERRORS as exc:
                failures = _transfer.failures_in_a_row(self.part, done, failures)
                if failures > RETRIES:
                    raise DownloadError(
                        f"download of {self.shown} failed: the connection failed or dropped "
                        f"{failures} times in a row ({_reason(exc)}); run the import again to "
                        f"resume from byte {_transfer.file_size(self.part)}") from None
                time.sleep(_transfer.backoff(failures))
        return self._finish(resumed_from)

    # -- one request --------------------------------------------------------------------------

    def _fetch(self, offset: int) -> bool:
        """Request the bytes after ``offset`` and append them; True once the body is complete."""
        headers = {"Accept-Encoding": "identity"}  # the bytes of the file, never re-encoded
        if offset:
            headers["Range"] = f"bytes={offset}-"
            if self.state.validator:
                headers["If-Range"] = self.state.validator
        response = self._get(headers)
        with contextlib.closing(response):
            if response.status_code == 416 and offset:
                if self.state.total is not None and offset == self.state.total:
                    return True  # the partial file already holds every byte
                self._discard()
                return False
            self._check_status(response)
            if response.status_code == 206 and offset:
                start, total = _content_range(response.headers.get("Content-Range"))
                if start != offset or (self.state.total is not None and total is not None
                                       and total != self.state.total):
                    self._discard()  # not the range asked for: start again
                    return False
            else:  # 200: the whole body (a new version, or a server without ranges)
                if offset:
                    self._discard()
                offset = 0
                total = _int(response.headers.get("Content-Length"))
                self.state = _State(_validator(response), total, _filename(response, self.url))
                self._save_state()
                self.part.touch()
            if total is not None:
                self._check_size(total)
                _check_space(self.folder, total - offset)
            self._append(response)
        got = _transfer.file_size(self.part)
        if self.state.total is not None and got < self.state.total:
            raise urllib3.exceptions.ProtocolError(
                f"the body ended after {got} of {self.state.total} bytes")
        return True

    def _get(self, headers: dict[str, str]) -> requests.Response:
        try:
            response = self.session.get(self.url, headers=headers, stream=True,
                                        timeout=self.limits.timeout_seconds)
        except requests.exceptions.TooManyRedirects:
            raise DownloadRedirectError(
                f"download of {self.shown} failed: more than {self.limits.max_redirects} "
                "redirects (a redirect loop?)") from None
        except requests.exceptions.InvalidSchema as exc:
            raise DownloadRedirectError(
                f"download of {self.shown} failed: redirected to a URL that is not http(s) "
                f"({exc.__class__.__name__})") from None
        except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema):
            raise DownloadError(f"{self.shown} is not a valid URL") from None
        if urlsplit(response.url).scheme.lower() not in _SCHEMES:  # pragma: no cover
            response.close()
            raise DownloadRedirectError(f"download of {self.shown} left http(s)")
        return response

    def _check_status(self, response: requests.Response) -> None:
        status = response.status_code
        if status in (200, 206):
            return
        if status in (404, 410):
            raise DownloadNotFoundError(
                f"download of {self.shown} failed: {status} {response.reason or 'Not Found'} "
                "(nothing at that URL)")
        if 300 <= status < 400:
            raise DownloadRedirectError(
                f"download of {self.shown} failed: {status} redirect without a usable Location")
        raise DownloadError(f"download of {self.shown} failed: the server answered {status} "
                            f"{response.reason or ''}".rstrip())

    def _check_size(self, total: int) -> None:
        if total > self.limits.max_bytes:
            self._discard()
            raise DownloadTooLargeError(
                f"{self.shown} is too large: {total} bytes, the limit is "
                f"{self.limits.max_bytes} (setting import.url_max_bytes); nothing was kept")

    def _append(self, response: requests.Response) -> None:
        """Stream the body onto the partial file, checking the cap and the first bytes."""
        with open(self.part, "ab") as out:
            for chunk in _chunks(response):
                size = out.tell() + len(chunk)
                if size > self.limits.max_bytes:
                    out.close()
                    self._discard()
                    raise DownloadTooLargeError(
                        f"{self.shown} is too large: more than {self.limits.max_bytes} bytes "
                        "arrived (setting import.url_max_bytes); nothing was kept")
                try:
                    out.write(chunk)
                except OSError as exc:
                    raise DownloadError(f"cannot write {self.part}: {exc.strerror or exc}"
                                        ) from None
                if not self.head_checked and size >= HEAD_BYTES:
                    out.flush()
                    self._check_head()
        if not self.head_checked:
            self._check_head()

    def _check_head(self) -> None:
        self.head_checked = True
        if self.head_check is None:
            return
        with open(self.part, "rb") as fh:
            head = fh.read(HEAD_BYTES)
        problem = self.head_check(head) if head else None
        if problem is not None:
            self._discard()
            raise DownloadRefusedError(f"{self.shown} is not importable: {problem}; nothing "
                                       "was kept")

    # -- the partial file ---------------------------------------------------------------------

    def _finish(self, resumed_from: int) -> Downloaded:
        size = _transfer.file_size(self.part)
        if size == 0:
            self._discard()
            raise DownloadRefusedError(f"{self.shown} sent an empty body; nothing was kept")
        if not self.head_checked:
            self._check_head()  # complete before this call: its head was never looked at
        name = self.state.filename or _name_from_url(self.url)
        dest = self.folder / name
        os.replace(self.part, dest)
        _transfer.remove(self.meta)
        return Downloaded(dest, size, name, resumed_from)

    def _discard(self) -> None:
        _transfer.remove(self.part, self.meta)
        self.state = _State()

    def _load_state(self) -> _State:
        try:
            data = json.loads(self.meta.read_text(encoding="utf-8"))
            state = _State(data.get("validator"), data.get("total"), data.get("filename"))
        except (FileNotFoundError, ValueError, AttributeError):
            _transfer.remove(self.part)  # bytes of unknown origin cannot be resumed
            return _State()
        if not state.validator:
            _transfer.remove(self.part, self.meta)  # nothing proves it is the same file
            return _State()
        return state

    def _save_state(self) -> None:
        self.meta.write_text(json.dumps({"validator": self.state.validator,
                                         "total": self.state.total,
                                         "filename": self.state.filename}), encoding="utf-8")


def _chunks(response: requests.Response) -> Iterator[bytes]:
    """The body as it arrives, at most :data:`CHUNK` bytes at a time.

    ``read1`` hands over what arrived even when the connection drops next, so a resumed request
    starts after the last byte received (``iter_content`` would lose a partly filled chunk).
    """
    raw = response.raw
    while chunk := raw.read1(CHUNK, decode_content=True):
        yield chunk


def _check_space(folder: Path, need: int) -> None:
    try:
        _transfer.check_free_space(folder, need)
    except SourceError as exc:
        raise DownloadError(str(exc)) from None


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    # urllib3 repeats the URL (with its query) in some messages; keep only the first clause.
    text = re.sub(r"https?://\S+", "<url>", text)
    return text[:200]


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """``(first byte, total)`` of ``bytes a-b/total``; ``None`` for what is not there."""
    match = re.fullmatch(r"\s*bytes\s+(\d+)-\d+/(\d+|\*)\s*", value or "")
    if match is None:
        return None, None
    total = None if match[2] == "*" else int(match[2])
    return int(match[1]), total


def _validator(response: requests.Response) -> str | None:
    """A validator ``If-Range`` accepts: a strong ETag, else ``Last-Modified``."""
    etag = response.headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return etag
    return response.headers.get("Last-Modified")


def _filename(response: requests.Response, url: str) -> str:
    """The file's name: ``Content-Disposition``, else the final URL's, else the asked URL's."""
    disposition = response.headers.get("Content-Disposition")
    if disposition:
        message = Message()
        message["content-disposition"] = disposition
        name = message.get_filename()
        if name:
            safe = _safe_name(name)
            if safe:
                return safe
    return _name_from_url(response.url or url)


def _name_from_url(url: str) -> str:
    return _safe_name(unquote(PurePosixPath(urlsplit(url).path).name)) or "download"


def _safe_name(name: str) -> str:
    """A file name without folders, control characters or a leading dot; at most 200 chars."""
    name = re.split(r"[/\\]", name)[-1]
    name = "".join(c for c in name if c.isprintable()).strip().lstrip(".")
    if len(name.encode("utf-8")) > 200:
        stem, dot, ext = name.rpartition(".")
        ext = dot + ext if dot and len(ext) <= 10 else ""
        name = (stem if ext else name).encode("utf-8")[:200 - len(ext)].decode(
            "utf-8", "ignore") + ext
    return "" if name in ("", PARTIAL, META, LOCK) else name
