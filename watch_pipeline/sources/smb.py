r"""A watch source that is a folder on an SMB share, read through smbprotocol's ``smbclient``.

``remote_path`` is ``/``-separated and relative to the configured folder on the share. Listing
walks the tree one directory handle at a time (``smbclient.scandir``); names starting with ``.``
are skipped, as on local sources (hidden files and the temporary names of :meth:`upload` and
copy tools). Reparse points (Windows symlinks and junctions) are never followed: they are yielded
as :class:`RejectedEntry`. Samba resolves its own symlinks on the server and, with its default
``wide links = no``, hides those that leave the share.

Reads are unbuffered, so a fingerprint costs exactly the bytes imohash asks for (three 16 KiB
windows of a large file). Downloads keep ``reads_in_flight`` SMB READ requests of ``chunk_size``
bytes (capped by the server's negotiated maximum and by the credits it granted) outstanding on
the one connection, and write each response with ``os.pwrite`` at its offset in
``<dest>.part``. Responses are taken oldest first, so the partial file is always a contiguous
prefix of the remote file, and memory holds one more response than ``reads_in_flight``. The file is
renamed to ``dest`` once the size is verified and the server, asked for the file's attributes as
the handle closes, reports the size and last-write time it had when the download began (a file
truncated meanwhile fails at the first short read, one rewritten meanwhile at that close, both
with :class:`SourceChangedError`). Downloads resume from the bytes already in ``<dest>.part``:
after a dropped connection within one call (reconnecting, up to ``max_attempts`` failures in a
row, the count restarting after progress, with exponential backoff), and across calls. The
partial file is stamped with the remote file's last-write time: bytes of another version are
never resumed (a partial file with another stamp, or longer than the remote file, is
discarded), and a size other than the listed one is refused before anything is transferred.

smbclient quirks, all handled here and nowhere else:

* **Sessions.** ``smbclient`` pools connections in a module-global cache keyed by
  ``server:port``. Each client has its own cache (``connection_cache``), passed to every call,
  so two sources on one server never share, reuse or close each other's session, and
  :meth:`SMBSourceClient.close` closes exactly this client's connections.
* **The port.** Every ``smbclient`` call takes ``port=`` and falls back to 445 without it;
  ``SMBDirEntry.stat()`` does not forward it. Sizes and times therefore come from
  ``entry.smb_info``, which the directory query already returned (no extra round trip).
* **The domain.** NTLM takes it as part of the user name, ``DOMAIN\user``; there is no
  separate parameter, and a domain kept aside is silently dropped (the original product's bug).
* **Read timeout.** smbprotocol waits for a response indefinitely; only its receive loop's idle
  timeout (600 s, then an unanswered echo closes the connection) ends a wait on a frozen
  server. That idle timeout is set to ``read_timeout`` on each connection, so a read from a
  server that stopped answering fails after about twice ``read_timeout``.
* **Pipelined reads.** ``smbclient``'s file objects send one request and wait for its answer.
  Downloads use the handle's own ``Open`` underneath instead: ``Open.read(send=False)`` builds a
  READ request, ``Connection.send`` sends it (asking for enough credits to keep the window
  full), ``Connection.receive`` waits for its response; the payload is sliced out of the
  response (MS-SMB2 2.2.20) without the copy ``SMB2ReadResponse`` would make. Requests still
  outstanding when a download fails are received and dropped, so the connection forgets them.
* **Errors.** smbprotocol raises ``SMBOSError`` (an ``OSError`` carrying an NTSTATUS) for file
  operations, ``SMBResponseException`` subclasses for session and tree failures, ``ValueError``
  when the TCP connection fails and ``SMBException`` for timeouts and closed connections. They
  become :class:`SourceError` subclasses naming the account, server and path, never the password.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import os
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import smbclient
from smbprotocol.exceptions import (
    AccessDenied,
    BadNetworkName,
    EndOfFile,
    FileClosed,
    InsuffServerResources,
    IOTimeout,
    LogonFailure,
    NetworkNameDelegated,
    PasswordExpired,
    ServerUnavailable,
    SMBAuthenticationError,
    SMBConnectionClosed,
    SMBException,
    SMBOSError,
    SMBResponseException,
    UserSessionDeleted,
    WrongPassword,
)
from smbprotocol.file_info import FileAttributes
from smbprotocol.header import NtStatus
from smbprotocol.open import CloseFlags

from watch_pipeline.catalog.secrets import public_repr
from watch_pipeline.sources import _transfer, base

log = logging.getLogger(__name__)

MIB = _transfer.MIB

DEFAULT_CHUNK_SIZE = 1 * MIB
"""Bytes per SMB READ during :meth:`SMBSourceClient.download`.

Measured with ``bench/smb_download.py``: smbprotocol copies each response about six times and
allocates it afresh each time; 2 to 8 MiB reads cost more CPU (cache misses, page faults when
glibc hands the freed buffers back to the kernel) than 1 MiB ones, which are few enough that the
per-request Python overhead stays small.
"""
MAX_CHUNK_SIZE = 8 * MIB
"""The largest read Samba and current Windows grant by default; more would be split anyway."""
DEFAULT_READS_IN_FLIGHT = 2
"""READ requests a download keeps outstanding: the server reads and sends the next while this
process writes the last. More did not help on loopback (``bench/smb_download.py``)."""
MAX_READS_IN_FLIGHT = 16
UPLOAD_CHUNK_SIZE = 4 * MIB
"""Bytes per SMB write during :meth:`SMBSourceClient.upload`."""
DOWNLOAD_ATTEMPTS = 5
"""Connection failures in a row (the count restarts after progress) before a download gives up."""

SYMLINK_NOT_FOLLOWED = "symlink/reparse point not followed"
PERMISSION_DENIED = "permission denied"

_AUTH_ERRORS = (LogonFailure, WrongPassword, PasswordExpired, SMBAuthenticationError)
_NOT_FOUND_STATUSES = frozenset(
    {
        NtStatus.STATUS_OBJECT_NAME_NOT_FOUND,
        NtStatus.STATUS_OBJECT_PATH_NOT_FOUND,
        NtStatus.STATUS_NOT_FOUND,
        NtStatus.STATUS_NO_SUCH_FILE,
        NtStatus.STATUS_BAD_NETWORK_NAME,
        NtStatus.STATUS_DELETE_PENDING,
    }
)
_DENIED_STATUSES = frozenset(
    {NtStatus.STATUS_ACCESS_DENIED, NtStatus.STATUS_PRIVILEGE_NOT_HELD}
)
# Statuses that mean "this connection or session is gone", not "this file is wrong".
_TRANSIENT_STATUSES = frozenset(
    {
        NtStatus.STATUS_NETWORK_NAME_DELETED,
        NtStatus.STATUS_USER_SESSION_DELETED,
        NtStatus.STATUS_FILE_CLOSED,
        NtStatus.STATUS_INSUFF_SERVER_RESOURCES,
        NtStatus.STATUS_INSUFFICIENT_RESOURCES,
        NtStatus.STATUS_IO_TIMEOUT,
        NtStatus.STATUS_SERVER_UNAVAILABLE,
    }
)
_TRANSIENT_RESPONSES = (
    NetworkNameDelegated,
    UserSessionDeleted,
    FileClosed,
    InsuffServerResources,
    IOTimeout,
    ServerUnavailable,
)


class SMBSourceClient(base.SourceClient):
    r"""A :class:`SourceClient` over one folder of one SMB share.

    Nothing is sent until a method is called; the session opened then is reused by every later
    call and closed by :meth:`close` (a later call opens a new one).

    Args:
        server: Host name or IP address of the SMB server.
        share: The share name (``media``, not ``\\server\media``).
        path: The watched folder on the share; ``/``, ``""`` and ``\`` mean the share root.
        username: The account name, either bare (``alice``) or already qualified
            (``CORP\alice``, ``alice@corp.example``).
        password: The account's password; never logged, shown in ``repr`` or put in a message.
        domain: The account's domain (NTLM), sent as ``DOMAIN\username``.
        port: The server's TCP port.
        connect_timeout: Seconds to wait for the TCP connection and the protocol negotiation.
        read_timeout: Seconds a server may stay silent while a response is awaited (a frozen
            server is detected after about twice this). Must exceed the time one
            ``chunk_size`` read takes to arrive on the slowest link.
        chunk_size: Bytes per READ when downloading (capped by the server's negotiated
            maximum and by the credits it granted).
        reads_in_flight: READ requests a download keeps outstanding on the connection; memory
            holds one ``chunk_size`` response more than this.
        max_attempts: Failures in a row (restarting after progress) before a download gives up.
        retry_backoff: Seconds before the first reconnection; doubled per failure.

    Raises:
        SourceError: The server or share name is missing or malformed, ``chunk_size`` or
            ``reads_in_flight`` is out of range, or ``username`` names another domain than
            ``domain``.
        UnsafePathError: ``path`` contains a ``..`` segment, NUL or ``:``.
    """

    def __init__(
        self,
        *,
        server: str,
        share: str,
        path: str = "/",
        username: str | None = None,
        password: str | None = None,
        domain: str | None = None,
        port: int = 445,
        connect_timeout: float = 10,
        read_timeout: float = 60,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        reads_in_flight: int = DEFAULT_READS_IN_FLIGHT,
        max_attempts: int = DOWNLOAD_ATTEMPTS,
        retry_backoff: float = _transfer.RETRY_BACKOFF_SECONDS,
    ) -> None:
        server = (server or "").strip().strip("\\/")
        share = (share or "").strip().strip("\\/")
        if not server or any(c in server for c in "\\/\x00"):
            raise base.SourceError(f"an SMB source needs a server name, got {server!r}")
        if not share or any(c in share for c in "\\/\x00"):
            raise base.SourceError(
                f"an SMB source needs a share name without slashes, got {share!r}"
            )
        if not 0 < chunk_size <= MAX_CHUNK_SIZE:
            raise base.SourceError(
                f"chunk_size must be 1..{MAX_CHUNK_SIZE} bytes, got {chunk_size}"
            )
        if not 0 < reads_in_flight <= MAX_READS_IN_FLIGHT:
            raise base.SourceError(
                f"reads_in_flight must be 1..{MAX_READS_IN_FLIGHT}, got {reads_in_flight}"
            )
        self._server = server
        self._share = share
        self._root_parts = _folder_parts(path or "")
        self._login = _login_name(username or None, domain or None)
        self._password = password or None
        self._port = int(port)
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._chunk_size = chunk_size
        self._reads_in_flight = reads_in_flight
        self._max_attempts = max(1, max_attempts)
        self._retry_backoff = retry_backoff
        # This client's own connection pool (see the module docstring, "Sessions").
        self._cache: dict[str, Any] = {}

    def __repr__(self) -> str:
        return public_repr(self, server=self._server, port=self._port, share=self._share,
                           path=self.path, account=self.account)

    @property
    def path(self) -> str:
        """The watched folder on the share, ``/``-separated, ``""`` for the share root."""
        return "/".join(self._root_parts)

    @property
    def account(self) -> str:
        r"""The user name sent to the server, including the domain (``DOMAIN\user``)."""
        return self._login or "(no user name)"

    # -- connection -------------------------------------------------------------------------

    def test_connection(self) -> None:
        """Log in, connect to the share and list the watched folder.

        Raises:
            SourceUnreachableError: The server cannot be reached or does not answer.
            SourceAuthError: The login was refused.
            SourceNotFoundError: The share or the folder does not exist.
            SourcePermissionError: The folder may not be listed.
        """
        root = self._checked_root()
        with self._errors(self._describe_folder("")):
            with smbclient.scandir(root, **self._kwargs()) as it:
                next(it, None)

    def close(self) -> None:
        """Log off and disconnect this client's sessions; never raises."""
        with contextlib.suppress(Exception):
            smbclient.delete_session(
                self._server,
                port=self._port,
                connection_cache=self._cache,
                timeout=self._read_timeout,
            )
        # Anything else in the pool (a DFS referral target) goes too.
        smbclient.reset_connection_cache(fail_on_error=False, connection_cache=self._cache)

    # -- listing ----------------------------------------------------------------------------

    def list_files(
        self, *, recursive: bool = True, extensions: tuple[str, ...] = ()
    ) -> Iterator[base.SourceEntry | base.RejectedEntry]:
        """Yield every regular file below the watched folder, one directory open at a time.

        The login, share and folder are checked before the iterator is returned, so those
        failures raise at call time. An unreadable sub-folder is yielded as
        ``RejectedEntry(folder, "permission denied")`` and skipped; a reparse point as
        ``RejectedEntry(path, "symlink/reparse point not followed")``.

        Args:
            recursive: Descend into sub-folders.
            extensions: Dot-prefixed extensions to keep, matched case-insensitively; empty keeps
                every file.

        Returns:
            A generator of :class:`SourceEntry` (``etag`` is ``None``) and
            :class:`RejectedEntry`.

        Raises:
            SourceError: A subclass naming why the folder cannot be listed (also raised during
                iteration if the connection fails).
        """
        root = self._checked_root()
        suffixes = base.extension_suffixes(extensions)
        return self._walk(root, recursive=recursive, suffixes=suffixes)

    def _walk(
        self, root: str, *, recursive: bool, suffixes: tuple[str, ...]
    ) -> Iterator[base.SourceEntry | base.RejectedEntry]:
        # Depth-first with an explicit stack; each directory is read to its end before the next
        # is opened, so one directory handle is open however deep the tree is.
        stack: list[tuple[str, str]] = [(root, "")]
        while stack:
            unc, prefix = stack.pop()
            subdirs: list[tuple[str, str]] = []
            try:
                with smbclient.scandir(unc, **self._kwargs()) as it:
                    for entry in it:
                        if entry.name.startswith("."):
                            continue
                        item = _classify(entry, prefix + entry.name, recursive, suffixes, subdirs)
                        if item is not None:
                            yield item
            except SMBOSError as exc:
                if not prefix:
                    raise self._translate(exc, self._describe_folder("")) from exc
                if exc.ntstatus in _DENIED_STATUSES:
                    yield base.RejectedEntry(prefix.rstrip("/"), PERMISSION_DENIED)
                elif exc.ntstatus not in _NOT_FOUND_STATUSES:  # not found: removed meanwhile
                    raise self._translate(exc, self._describe_folder(prefix)) from exc
            except base.SourceError:
                raise
            except Exception as exc:
                raise self._translate(exc, self._describe_folder(prefix)) from exc
            # Reversed so sub-folders are visited in the order the directory listed them.
            stack.extend(reversed(subdirs))

    def stat(self, remote_path: str) -> base.SourceEntry | None:
        """The file's entry from a listing of its folder; ``None`` when it is gone.

        A listing gives the same attributes, to the same precision, as :meth:`list_files`
        recorded at the scan.

        Raises:
            UnsafePathError: The path is unsafe.
            SourceError: A subclass naming why the server refused.
        """
        parts = _file_parts(remote_path)
        self._connect()
        folder = self._unc(parts[:-1])
        with self._errors(self._describe_file(remote_path)):
            try:
                with smbclient.scandir(folder, **self._kwargs()) as it:
                    for entry in it:
                        if entry.name == parts[-1]:
                            item = _classify(entry, remote_path, False, (), [])
                            return item if isinstance(item, base.SourceEntry) else None
            except SMBOSError as exc:
                if exc.ntstatus not in _NOT_FOUND_STATUSES:
                    raise
        return None

    def browse(self, path: str = "") -> list[base.BrowseEntry]:
        """The folders and files directly inside ``path`` (relative to the watched folder).

        Hidden names and reparse points are left out. Folders come first, then files, each
        group sorted by name (case-insensitively).

        Raises:
            UnsafePathError: ``path`` contains ``..``, NUL or ``:``.
            SourceError: A subclass naming why the folder cannot be listed.
        """
        parts = _folder_parts(path)
        self._checked_root()
        rel = "/".join(parts)
        items: list[base.BrowseEntry] = []
        with self._errors(self._describe_folder(rel)):
            with smbclient.scandir(self._unc(parts), **self._kwargs()) as it:
                for entry in it:
                    info = entry.smb_info
                    if entry.name.startswith(".") or info.file_attributes & _REPARSE:
                        continue
                    if info.file_attributes & _DIRECTORY:
                        items.append(base.BrowseEntry("folder", entry.name))
                    elif not info.file_attributes & _DEVICE:
                        items.append(base.BrowseEntry("file", entry.name, info.end_of_file))
        return sorted(items, key=lambda e: (e.kind != "folder", e.name.lower()))

    # -- file access ------------------------------------------------------------------------

    def open(self, remote_path: str) -> io.RawIOBase:
        r"""Open ``remote_path`` as an unbuffered, seekable, read-only file.

        Each ``read(n)`` is one SMB read of ``n`` bytes (capped by the server's maximum), so
        fingerprinting reads only imohash's windows. Other clients may keep reading, writing or
        deleting the file meanwhile (the handle shares all access).

        Raises:
            UnsafePathError: The path is absolute, contains ``..``, ``\``, ``:`` or NUL.
            SourceError: A subclass naming why the file cannot be opened; reads raise
                subclasses too (:class:`SourceUnreachableError` when the connection drops).
        """
        unc = self._unc(_file_parts(remote_path))
        self._connect()
        what = self._describe_file(remote_path)
        with self._errors(what):
            raw = smbclient.open_file(
                unc, mode="rb", buffering=0, share_access="rwd", **self._kwargs()
            )
        return _SMBReader(raw, unc, functools.partial(self._errors, what))

    def local_path(self, remote_path: str) -> None:
        """Return ``None``: files on a share are never read in place."""
        return None

    def download(self, remote_path: str, dest: Path, *, expected_size: int | None = None) -> Path:
        """Copy ``remote_path`` to ``dest``, resuming from ``<dest>.part`` when it exists.

        Bytes are written to ``<dest>.part`` from its current size on, ``reads_in_flight`` reads
        of ``chunk_size`` bytes outstanding at a time, in order; ``dest`` appears only once
        complete. A dropped connection is retried (reconnect,
        seek, continue) up to ``max_attempts`` failures in a row, the count restarting after
        progress; then the partial file is kept, stamped with the remote file's last-write
        time, so a later call continues from it unless the remote file changed meanwhile.

        Args:
            remote_path: The file, relative to the watched folder.
            dest: The final file; its folder is created.
            expected_size: The listed size; the server's size and the copy must both match it.

        Returns:
            ``dest``.

        Raises:
            UnsafePathError: The path is unsafe, or ``dest`` names a folder.
            SourceUnreachableError: The connection kept failing; the partial file is kept.
            SourceNotFoundError: The file is gone; the partial file is removed.
            SourceChangedError: The file's size is not the listed one, or the file was
                truncated or rewritten during the download; the partial file is removed.
            SourceError: Not enough free space near ``dest`` or ``dest`` cannot be written; the
                copy ended short ("truncated download"), in which case the partial file is
                removed; or another subclass naming why the server refused.
        """
        unc = self._unc(_file_parts(remote_path))
        dest = _transfer.destination(dest)
        part = _transfer.partial_file(dest)
        what = self._describe_file(remote_path)
        failures = 0
        while True:
            done = _transfer.file_size(part)
            try:
                total = self._fetch_into(unc, what, part, expected_size)
                break
            except base.SourceError:
                raise
            except Exception as exc:
                failures = self._retry_or_raise(exc, what, part, done, failures)
        return _transfer.finish(part, dest, total, what)

    def _retry_or_raise(
        self, exc: Exception, what: str, part: Path, done: int, failures: int
    ) -> int:
        """After a failed attempt: raise if a retry cannot help, else wait and reconnect.

        Returns:
            The failures in a row so far (restarting at 1 after progress).
        """
        if isinstance(exc, SMBOSError) and exc.ntstatus in _NOT_FOUND_STATUSES:
            part.unlink(missing_ok=True)
        if not _is_transient(exc):
            raise self._translate(exc, what) from exc
        failures = _transfer.failures_in_a_row(part, done, failures)
        if failures >= self._max_attempts:
            error = self._translate(exc, what)
            raise type(error)(
                f"{error}; gave up after {failures} failed attempts in a row, "
                f"{_transfer.file_size(part)} bytes kept in {part.name} for the next attempt"
            ) from exc
        wait = _transfer.backoff(failures, self._retry_backoff)
        log.warning(
            "SMB download of %s interrupted at %d bytes (%s); reconnecting in %.1fs",
            what, _transfer.file_size(part), type(exc).__name__, wait,
        )
        self._drop_connection()
        time.sleep(wait)
        return failures

    def _fetch_into(self, unc: str, what: str, part: Path, expected_size: int | None) -> int:
        """Write the file's bytes after those already in ``part``; return the size to reach."""
        self._register()  # untranslated: the caller retries connection failures
        src = smbclient.open_file(
            unc, mode="rb", buffering=0, share_access="rwd", **self._kwargs()
        )
        try:
            handle = src.fd  # smbprotocol's Open: its reads can be pipelined
            size = handle.end_of_file
            if expected_size is not None and size != expected_size:
                part.unlink(missing_ok=True)
                raise base.SourceChangedError(
                    f"{what} changed on the server since it was listed "
                    f"({size} bytes, listed {expected_size})"
                )
            written = handle.last_write_time
            stamp = _stamp_ns(written)
            done = _resume_point(part, size, stamp)
            _transfer.check_free_space(part.parent, size - done)
            try:
                out = _open_partial(part)
                try:
                    _read_range(
                        handle, out, done, size, read_size=self._chunk_size,
                        window=self._reads_in_flight, what=what, part=part,
                    )
                finally:
                    os.close(out)
                # The attributes as the handle closes tell whether the file changed meanwhile.
                closed = _close_with_attributes(handle)
                if closed is not None and closed != (size, written):
                    raise base.SourceChangedError(
                        f"{what} changed on the server during the download "
                        f"({closed[0]} bytes, {size} when it began)"
                    )
            except base.SourceChangedError:
                part.unlink(missing_ok=True)
                raise
            finally:
                # Whatever was written belongs to this version; the next attempt checks it.
                with contextlib.suppress(OSError):
                    os.utime(part, ns=(stamp, stamp))
        finally:
            _close_handle(src)
        return size

    def upload(self, src: Path, remote_path: str) -> None:
        """Write ``src`` to ``remote_path``: parents created, hidden temp name, then rename.

        Raises:
            UnsafePathError: The path is unsafe.
            SourceError: A subclass naming why the server refused or the connection failed.
        """
        parts = _file_parts(remote_path)
        final = self._unc(parts)
        folder_parts = (*self._root_parts, *parts[:-1])
        hidden = f".{parts[-1]}.{uuid.uuid4().hex[:12]}{_transfer.PART_SUFFIX}"
        tmp = self._unc((*parts[:-1], hidden))
        self._connect()
        what = self._describe_file(remote_path)
        with self._errors(what):
            if folder_parts:
                smbclient.makedirs(self._unc(parts[:-1]), exist_ok=True, **self._kwargs())
            try:
                with open(src, "rb") as fh:
                    out = smbclient.open_file(tmp, mode="wb", buffering=0, **self._kwargs())
                    try:
                        while chunk := fh.read(UPLOAD_CHUNK_SIZE):
                            view = memoryview(chunk)
                            while view:
                                view = view[out.write(view) :]
                    finally:
                        _close_handle(out)
                smbclient.replace(tmp, final, **self._kwargs())
            except BaseException:
                with contextlib.suppress(Exception):
                    smbclient.remove(tmp, **self._kwargs())
                raise

    def delete(self, remote_path: str) -> None:
        """Remove ``remote_path``; a file that is already gone is not an error.

        Raises:
            UnsafePathError: The path is unsafe.
            SourceError: A subclass naming why the server refused.
        """
        unc = self._unc(_file_parts(remote_path))
        self._connect()
        with self._errors(self._describe_file(remote_path)):
            try:
                smbclient.remove(unc, **self._kwargs())
            except SMBOSError as exc:
                if exc.ntstatus not in _NOT_FOUND_STATUSES:
                    raise

    # -- session ----------------------------------------------------------------------------

    def _kwargs(self) -> dict[str, Any]:
        """Arguments every ``smbclient`` call gets: port, credentials, timeout, own pool."""
        return {
            "port": self._port,
            "username": self._login,
            "password": self._password,
            "connection_timeout": self._connect_timeout,
            "connection_cache": self._cache,
        }

    def _connect(self) -> None:
        """Open (or reuse) this client's session; failures as :class:`SourceError`."""
        with self._errors(""):
            self._register()

    def _register(self) -> None:
        """Open (or reuse) this client's session and bound its read wait; raw failures."""
        session = smbclient.register_session(self._server, **self._kwargs())
        _bound_receive_wait(session.connection, self._read_timeout)

    def _drop_connection(self) -> None:
        """Forget this client's connections without logging off (they are presumed dead)."""
        for key in list(self._cache):
            connection = self._cache.pop(key)
            with contextlib.suppress(Exception):
                connection.disconnect(close=False)

    def _checked_root(self) -> str:
        """Log in, check the share and the watched folder exist; return the folder's UNC."""
        self._connect()
        share_unc = f"\\\\{self._server}\\{self._share}"
        missing_share = f"SMB share {self._share!r} not found on {self._where}"
        with self._errors(f"share {self._share!r}", not_found=missing_share):
            smbclient.stat(share_unc, **self._kwargs())
        root = self._unc(())
        if self._root_parts:
            with self._errors(self._describe_folder("")):
                st = smbclient.stat(root, **self._kwargs())
            if not st.st_file_attributes & _DIRECTORY:
                raise base.SourceNotFoundError(f"{self._describe_folder('')} is not a folder")
        return root

    # -- paths and messages -----------------------------------------------------------------

    @property
    def _where(self) -> str:
        return f"{self._server}:{self._port}"

    def _unc(self, parts: tuple[str, ...]) -> str:
        r"""``\\server\share\<watched folder>\<parts>``."""
        return "\\".join(("", "", self._server, self._share, *self._root_parts, *parts))

    def _describe_file(self, remote_path: str) -> str:
        return f"file {self._url(remote_path)}"

    def _describe_folder(self, rel: str) -> str:
        return f"folder {self._url(rel.strip('/'))}"

    def _url(self, rel: str) -> str:
        path = "/".join(p for p in (*self._root_parts, rel) if p)
        return f"//{self._server}/{self._share}/{path}"

    @contextlib.contextmanager
    def _errors(self, what: str, *, not_found: str | None = None) -> Iterator[None]:
        """Translate any smbprotocol failure inside the block into a :class:`SourceError`."""
        try:
            yield
        except base.SourceError:
            raise
        except Exception as exc:
            raise self._translate(exc, what, not_found=not_found) from exc

    def _translate(
        self, exc: BaseException, what: str, *, not_found: str | None = None
    ) -> base.SourceError:
        """Map an smbprotocol / socket failure to the matching :class:`SourceError` subclass."""
        error: base.SourceError
        if isinstance(exc, base.SourceError):
            error = exc
        elif isinstance(exc, _AUTH_ERRORS):
            reason = "password expired" if isinstance(exc, PasswordExpired) else "logon failure"
            if isinstance(exc, SMBAuthenticationError):
                reason = "no usable credentials" if self._login is None else "authentication failed"
            error = base.SourceAuthError(
                f"SMB login refused for {self.account} on {self._where} ({reason})"
            )
        elif isinstance(exc, BadNetworkName):
            error = base.SourceNotFoundError(
                f"SMB share {self._share!r} not found on {self._where}"
            )
        elif isinstance(exc, AccessDenied):
            error = base.SourcePermissionError(
                f"{what or 'login'}: access denied for {self.account}"
            )
        elif isinstance(exc, SMBOSError) and exc.ntstatus not in _TRANSIENT_STATUSES:
            error = self._translate_status(exc, what, not_found)
        elif _is_transient(exc):
            context = f" ({what})" if what else ""
            error = base.SourceUnreachableError(
                f"SMB server {self._where} unreachable{context}: {_reason(exc)}"
            )
        else:
            error = base.SourceError(f"SMB error on {what or self._where}: {_reason(exc)}")
        return self._scrubbed(error)

    def _translate_status(
        self, exc: SMBOSError, what: str, not_found: str | None
    ) -> base.SourceError:
        status = exc.ntstatus
        if status in _NOT_FOUND_STATUSES:
            return base.SourceNotFoundError(not_found or f"{what} not found")
        if status in _DENIED_STATUSES:
            return base.SourcePermissionError(f"{what}: access denied for {self.account}")
        if status == NtStatus.STATUS_NOT_A_DIRECTORY:
            return base.SourceNotFoundError(f"{what}: a path segment is not a folder")
        if status == NtStatus.STATUS_FILE_IS_A_DIRECTORY:
            return base.SourceError(f"{what} is a folder, not a file")
        if status == NtStatus.STATUS_SHARING_VIOLATION:
            return base.SourceError(f"{what} is locked by another client")
        return base.SourceError(f"SMB error on {what}: {exc.strerror} (NTSTATUS 0x{status:08x})")

    def _scrubbed(self, error: base.SourceError) -> base.SourceError:
        # No smbprotocol message is built from the password; this is the belt to those braces.
        if self._password and self._password in str(error):
            return type(error)(str(error).replace(self._password, "***"))
        return error


class _SMBReader(io.RawIOBase):
    """The file object :meth:`SMBSourceClient.open` returns.

    smbclient's raw handle, with every failure translated into a :class:`SourceError` subclass.
    """

    def __init__(self, raw: Any, unc: str,
                 errors: Callable[[], contextlib.AbstractContextManager[None]]) -> None:
        super().__init__()
        self._raw = raw
        self._unc = unc
        self._errors = errors  # translates a failure inside it into a SourceError

    @property
    def name(self) -> str:
        """The file's UNC path."""
        return self._unc

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        with self._errors():
            return self._raw.readinto(buffer)

    def readall(self) -> bytes:
        # RawIOBase.readall would issue 8 KiB reads; one SMB round trip per MiB is far faster.
        parts = []
        while chunk := self.read(MIB):
            parts.append(chunk)
        return b"".join(parts)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        before = self._raw.tell()
        position = self._raw.seek(offset, whence)  # local: SMB reads carry their offset
        if position < 0:
            self._raw.seek(before)
            raise ValueError(f"negative seek position {position}")
        return position

    def tell(self) -> int:
        return self._raw.tell()

    def close(self) -> None:
        if not self.closed:
            try:
                _close_handle(self._raw)
            finally:
                super().close()


# -- pipelined reads ----------------------------------------------------------------------------

_CREDIT_BYTES = 65536
"""Bytes one SMB2 credit pays for (MS-SMB2 3.1.5.2)."""
_HEADER_SIZE = 64
"""The SMB2 header; a READ response's DataOffset counts from its start."""


def _read_range(
    handle: Any,
    out: int,
    start: int,
    end: int,
    *,
    read_size: int,
    window: int,
    what: str,
    part: Path,
) -> None:
    """Write bytes ``start..end`` of the open file ``handle`` at the same offsets of ``out``.

    Up to ``window`` READ requests are outstanding; responses are written oldest first, so
    ``out`` grows as a contiguous prefix whenever this stops. The requests that replace a
    response go out before it is written, so the server never idles while the disk writes.

    Raises:
        SourceChangedError: The file ended before ``end`` (truncated meanwhile).
        SourceError: ``out`` cannot be written.
        SMBResponseException, SMBException, OSError: As smbprotocol raises them (the caller
            decides what is worth a retry).
    """
    reads = _PipelinedReads(handle, start, end, read_size=read_size, window=window)
    try:
        reads.fill()
        while reads.pending:
            at, length, payload = reads.take()
            if len(payload) != length:
                raise base.SourceChangedError(
                    f"{what} ended at {at + len(payload)} bytes during the download "
                    f"(truncated on the server, {end} bytes when it began)"
                )
            try:
                reads.fill()  # the server reads on while this response is written
            finally:
                _write_at(out, payload, at, part)  # received bytes are kept even if fill failed
            del payload  # freed now, not while the next response is awaited
    finally:
        reads.abandon()


class _PipelinedReads:
    """READ requests for bytes ``start..end`` of one open file, up to ``window`` outstanding.

    Requests go out in file order and are taken oldest first. Each asks the server for enough
    credits to keep ``window`` full-size reads outstanding; a read is shortened (or waits for
    a response) when fewer credits are left.
    """

    def __init__(self, handle: Any, start: int, end: int, *, read_size: int, window: int) -> None:
        self._handle = handle
        self._connection = handle.connection
        self._session_id = handle.tree_connect.session.session_id
        self._tree_id = handle.tree_connect.tree_connect_id
        self._read_size = max(1, min(read_size, self._connection.max_read_size))
        self._window = window
        self._credits_wanted = window * _credit_charge(self._read_size)
        self._offset = start
        self._end = end
        self.pending: deque[tuple[int, int, Any]] = deque()

    def fill(self) -> None:
        """Send requests until ``window`` are outstanding, the end is reached or credits lack."""
        connection = self._connection
        while self._offset < self._end and len(self.pending) < self._window:
            available = _credits(connection)
            length = min(self._read_size, self._end - self._offset)
            if connection.supports_multi_credit:
                length = min(length, available * _CREDIT_BYTES)
            if length <= 0 or available <= 0:
                break  # the responses in flight bring credits back
            charge = _credit_charge(length)
            message, _ = self._handle.read(self._offset, length, send=False)
            request = connection.send(
                message,
                sid=self._session_id,
                tid=self._tree_id,
                credit_request=charge + max(0, self._credits_wanted - available),
            )
            self.pending.append((self._offset, length, request))
            self._offset += length
        if not self.pending and self._offset < self._end:
            raise SMBException("the SMB server granted no credits for a read")

    def take(self) -> tuple[int, int, memoryview]:
        """Wait for the oldest response: its offset, the length asked for and the data.

        The data is shorter than asked for (possibly empty) where the file ends.
        """
        at, length, request = self.pending.popleft()
        try:
            return at, length, _read_payload(self._connection.receive(request))
        except EndOfFile:
            return at, length, memoryview(b"")

    def abandon(self) -> None:
        """Receive and drop the responses still awaited, so the connection stops tracking them.

        A request left unreceived would keep its response in the connection's table for as
        long as the connection lives. On a dead connection each receive fails at once.
        """
        while self.pending:
            _, _, request = self.pending.popleft()
            with contextlib.suppress(Exception):
                self._connection.receive(request)


def _credit_charge(length: int) -> int:
    """Credits a READ of ``length`` bytes costs (MS-SMB2 3.1.5.2)."""
    return (max(0, length - 1) // _CREDIT_BYTES) + 1


def _credits(connection: Any) -> int:
    """Credits the server has granted and no request has spent yet."""
    with connection.sequence_lock:
        return connection.sequence_window["high"] - connection.sequence_window["low"]


def _read_payload(response: Any) -> memoryview:
    """The data of a READ response (MS-SMB2 2.2.20), as a view into the received message."""
    body = response["data"].get_value()
    length = int.from_bytes(body[4:8], "little")
    if not length:
        return memoryview(b"")
    begin = body[2] - _HEADER_SIZE
    if begin < 16 or begin + length > len(body):
        raise SMBException(f"malformed SMB2 READ response (data at {body[2]}, {length} bytes)")
    return memoryview(body)[begin : begin + length]


def _write_at(out: int, data: memoryview, offset: int, part: Path) -> None:
    """Write all of ``data`` at ``offset`` of ``out``."""
    try:
        while data:
            written = os.pwrite(out, data, offset)
            data = data[written:]
            offset += written
    except OSError as exc:
        raise base.SourceError(f"cannot write {part}: {exc.strerror or exc}") from exc


def _open_partial(part: Path) -> int:
    """Open ``part`` for positioned writes, creating it (never ``O_APPEND``: pwrite would append).

    Raises:
        SourceError: ``part`` cannot be opened.
    """
    try:
        return os.open(part, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        raise base.SourceError(f"cannot write {part}: {exc.strerror or exc}") from exc


def _close_with_attributes(handle: Any) -> tuple[int, datetime] | None:
    """Close ``handle``; return the file's size and last-write time the server reported then.

    ``None`` when the server did not vouch for them (MS-SMB2 2.2.16: without
    ``SMB2_CLOSE_FLAG_POSTQUERY_ATTRIB`` in the response the values must not be used).
    """
    response = handle.close(get_attributes=True)
    if response is None or not response["flags"].has_flag(
        CloseFlags.SMB2_CLOSE_FLAG_POSTQUERY_ATTRIB
    ):
        return None
    return response["end_of_file"].get_value(), response["last_write_time"].get_value()


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DIRECTORY = FileAttributes.FILE_ATTRIBUTE_DIRECTORY
_REPARSE = FileAttributes.FILE_ATTRIBUTE_REPARSE_POINT
_DEVICE = 0x40  # FILE_ATTRIBUTE_DEVICE, missing from smbprotocol's FileAttributes


def _classify(
    entry: Any,
    rel: str,
    recursive: bool,
    suffixes: tuple[str, ...],
    subdirs: list[tuple[str, str]],
) -> base.SourceEntry | base.RejectedEntry | None:
    # entry.smb_info, never entry.stat(): stat() reconnects without the port (see module doc).
    info = entry.smb_info
    attributes = info.file_attributes
    is_dir = bool(attributes & _DIRECTORY)
    if attributes & _REPARSE:
        if is_dir:
            return base.RejectedEntry(rel, SYMLINK_NOT_FOLLOWED) if recursive else None
        matched = base.matches(entry.name, suffixes)
        return base.RejectedEntry(rel, SYMLINK_NOT_FOLLOWED) if matched else None
    if is_dir:
        if recursive:
            subdirs.append((entry.path, rel + "/"))
        return None
    if attributes & _DEVICE or not base.matches(entry.name, suffixes):
        return None
    return base.SourceEntry(
        remote_path=rel, size=int(info.end_of_file), mtime=_utc(info.last_write_time), etag=None
    )


def _login_name(username: str | None, domain: str | None) -> str | None:
    r"""The NTLM user name: ``DOMAIN\user`` when a domain is given (there is no other way)."""
    if username is None:
        return None
    if domain is None:
        return username
    if "\\" in username:
        named = username.split("\\", 1)[0]
        if named.lower() != domain.lower():
            raise base.SourceError(
                f"SMB user name {username!r} names domain {named!r} but the domain is {domain!r}"
            )
        return username
    if "@" in username:  # a UPN carries its own realm
        return username
    return f"{domain}\\{username}"


def _folder_parts(path: str) -> tuple[str, ...]:
    if "\x00" in path or ":" in path:
        raise base.UnsafePathError(f"SMB path {path!r} contains NUL or ':'")
    parts = tuple(p for p in path.replace("\\", "/").split("/") if p and p != ".")
    if ".." in parts:
        raise base.UnsafePathError(f"SMB path {path!r} contains '..'")
    return parts


def _file_parts(remote_path: str) -> tuple[str, ...]:
    if not remote_path or remote_path.startswith(("/", "\\")):
        raise base.UnsafePathError(f"{remote_path!r} is not a relative path")
    if "\\" in remote_path:
        raise base.UnsafePathError(f"{remote_path!r} contains '\\'")
    # ':' would name an alternate data stream ("file.mp4:hidden") rather than the file.
    parts = _folder_parts(remote_path)
    if not parts:
        raise base.UnsafePathError(f"{remote_path!r} names no file")
    return parts


def _resume_point(part: Path, size: int, stamp: int) -> int:
    """Bytes of ``part`` to keep: all of them if they are a prefix of this version, else none."""
    done = _transfer.file_size(part)
    if done and (done > size or part.stat().st_mtime_ns != stamp):
        part.unlink()  # bytes of another version of the file: start again
        return 0
    return done


def _stamp_ns(value: datetime) -> int:
    """A remote last-write time as integer nanoseconds since the epoch (for ``os.utime``)."""
    return (_utc(value) - _EPOCH) // timedelta(microseconds=1) * 1000


def _utc(value: datetime) -> datetime:
    # smbprotocol returns aware UTC datetimes, except a naive datetime.max for FILETIME overflow.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` means the connection failed (retry may help), not that a request did."""
    if isinstance(exc, SMBOSError):
        return exc.ntstatus in _TRANSIENT_STATUSES
    if isinstance(exc, (*_AUTH_ERRORS, BadNetworkName, AccessDenied)):
        return False
    if isinstance(exc, SMBResponseException):
        return isinstance(exc, _TRANSIENT_RESPONSES)
    if isinstance(exc, SMBConnectionClosed | SMBException):
        return True  # closed connection, response timeout
    if isinstance(exc, ValueError):
        return str(exc).startswith("Failed to connect")  # smbprotocol's TCP connect failure
    return isinstance(exc, OSError | EOFError)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, ValueError) and "': " in text:
        return text.split("': ", 1)[1]  # "Failed to connect to 'host:port': <socket error>"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _bound_receive_wait(connection: Any, seconds: float) -> None:
    # smbprotocol's receive loop idles this long before probing with an echo and closes the
    # connection when the echo goes unanswered for as long again; there is no public setting.
    if hasattr(connection, "_receive_timeout"):
        connection._receive_timeout = max(1, int(seconds))


def _close_handle(raw: Any) -> None:
    """Close an smbclient file; one whose connection died is only marked closed."""
    try:
        raw.close()
    except Exception:
        # The handle died with its connection. Marked closed, so that smbclient's finaliser
        # does not warn about a handle that no longer exists anywhere.
        fd = getattr(raw, "fd", None)
        if fd is not None and hasattr(fd, "_connected"):
            fd._connected = False
