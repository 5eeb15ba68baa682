"""Validation of operator input, shared by the CLI and every other writer of the catalog.

Each rule raises :class:`ValidationError` naming the field and the rule, so the CLI can print
``invalid polling_interval_minutes: must be between 1 and 1440`` and exit 2.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable
from urllib.parse import urlparse


class ValidationError(ValueError):
    """Operator input broke a rule.

    Attributes:
        field: The catalog column (or setting key) at fault.
        rule: What the value must satisfy, in words.
    """

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"invalid {field}: {rule}")
        self.field = field
        self.rule = rule


_EXTENSION = re.compile(r"^\.[a-z0-9][a-z0-9_-]{0,15}$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def name(value: str | None, *, field: str = "name") -> str:
    """A display name: 1-200 characters after trimming."""
    text = (value or "").strip()
    if not 1 <= len(text) <= 200:
        raise ValidationError(field, "must be 1-200 characters")
    return text


def int_range(field: str, value: object, low: int, high: int) -> int:
    """An integer within ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(field, "must be an integer")
    if not low <= value <= high:
        raise ValidationError(field, f"must be between {low} and {high}")
    return value


def extensions(values: Iterable[str] | str | None) -> list[str]:
    """Normalise extensions to lower-case, dot-prefixed, de-duplicated (``MP4`` → ``.mp4``)."""
    if values is None:
        return []
    if isinstance(values, str):
        values = values.split(",")
    result: list[str] = []
    for raw in values:
        ext = raw.strip().lower()
        if not ext:
            continue
        if not ext.startswith("."):
            ext = "." + ext
        if not _EXTENSION.match(ext):
            raise ValidationError("file_extensions", f"{raw.strip()!r} is not a file extension")
        if ext not in result:
            result.append(ext)
    return result


def labels(field: str, values: Iterable[str] | str | None) -> list[str]:
    """Collections or tags: trimmed, non-empty, at most 100 characters, de-duplicated in order."""
    if values is None:
        return []
    if isinstance(values, str):
        values = values.split(",")
    result: list[str] = []
    for raw in values:
        text = raw.strip()
        if not text:
            continue
        if len(text) > 100:
            raise ValidationError(field, f"{text[:20]!r}... is longer than 100 characters")
        if text not in result:
            result.append(text)
    return result


def relative_path(field: str, value: str | None, *, allow_root: bool = True) -> str:
    """A path inside a root: relative, no ``..`` segment, no NUL; ``.`` means the root itself."""
    text = (value or "").strip()
    if not text:
        raise ValidationError(field, "is required")
    if "\x00" in text:
        raise ValidationError(field, "must not contain NUL")
    if text.startswith("/") or text.startswith("\\") or re.match(r"^[A-Za-z]:", text):
        raise ValidationError(field, "must be relative (no leading /)")
    segments = re.split(r"[\\/]+", text)
    if ".." in segments:
        raise ValidationError(field, "must not contain '..'")
    normalised = posixpath.normpath("/".join(segments))
    if normalised == "." and not allow_root:
        raise ValidationError(field, "must name a folder below the root")
    return normalised


def share_path(field: str, value: str | None) -> str:
    """A folder inside an SMB share, normalised to start with ``/`` (``/`` = the share root)."""
    text = (value or "/").strip().replace("\\", "/") or "/"
    if "\x00" in text:
        raise ValidationError(field, "must not contain NUL")
    if ".." in text.split("/"):
        raise ValidationError(field, "must not contain '..'")
    return posixpath.normpath("/" + text.lstrip("/"))


def s3_prefix(value: str | None) -> str:
    """A key prefix: no leading ``/``, no ``..`` segment; empty means the whole bucket."""
    text = (value or "").strip()
    if not text:
        return ""
    if text.startswith("/"):
        raise ValidationError("s3_prefix", "must not start with /")
    if ".." in text.split("/") or "\x00" in text:
        raise ValidationError("s3_prefix", "must not contain '..' or NUL")
    return text


def bucket(value: str | None) -> str:
    """An S3 bucket name (3-63 lower-case letters, digits, dots, hyphens)."""
    text = (value or "").strip()
    if not text:
        raise ValidationError("s3_bucket_name", "is required for s3 sources")
    if not _BUCKET.match(text) or ".." in text:
        raise ValidationError(
            "s3_bucket_name", "must be 3-63 lower-case letters, digits, '.' or '-'"
        )
    return text


def endpoint_url(value: str | None) -> str | None:
    """An http(s) URL with a host, or ``None`` for AWS's default endpoint."""
    text = (value or "").strip()
    if not text:
        return None
    parsed = urlparse(text)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValidationError("s3_endpoint_url", "must be an http:// or https:// URL with a host")
    if parsed.username or parsed.password:
        raise ValidationError("s3_endpoint_url", "must not carry credentials")
    return text.rstrip("/")


def hostname(field: str, value: str | None) -> str:
    """A server name or address without scheme, path or spaces."""
    text = (value or "").strip()
    if not text:
        raise ValidationError(field, "is required")
    if any(c in text for c in "/\\ @") or len(text) > 255:
        raise ValidationError(field, "must be a host name or IP address (no scheme or path)")
    return text


def share_name(value: str | None) -> str:
    """An SMB share name (no slashes)."""
    text = (value or "").strip().strip("/\\")
    if not text:
        raise ValidationError("smb_share", "is required for smb sources")
    if any(c in text for c in "/\\") or len(text) > 80:
        raise ValidationError("smb_share", "must be a single share name (no slashes)")
    return text


def multipart_regex(value: str | None) -> str:
    """A regular expression that compiles and has exactly three groups (base, part, extension)."""
    text = value or ""
    try:
        compiled = re.compile(text)
    except re.error as exc:
        raise ValidationError("multipart_regex", f"does not compile: {exc}") from None
    if compiled.groups != 3:
        raise ValidationError(
            "multipart_regex",
            f"must have exactly 3 groups (base, part number, extension), has {compiled.groups}",
        )
    return text


def email_address(field: str, value: str) -> str:
    """A plausible single email address (one ``@``, a dotted domain, no spaces or brackets)."""
    text = value.strip()
    if not re.fullmatch(r"[^@\s<>,;\"]+@[^@\s<>,;\"]+\.[^@\s<>,;\"]+", text):
        raise ValidationError(field, f"{text!r} is not an email address")
    return text
