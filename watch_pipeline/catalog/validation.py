"""Validation of operator input, shared by the CLI and every other writer of the catalog.

Each rule raises :class:`ValidationError` naming the field and the rule, so the CLI can print
``invalid polling_interval_minutes: must be between 1 and 1440`` and exit 2.
"""

from __future__ import annotations

import posixpath
import re
import unicodedata
from collections.abc import Iterable
from re import _parser as sre  # the parse tree of a pattern: the one way to see its structure
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
# Bidirectional overrides and isolates reorder what a terminal shows (a name can look like
# another); they are refused with the C0/C1 controls.
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# What Windows and Samba refuse in a path segment, and what an SMB share name may not contain.
_SMB_PATH_FORBIDDEN = frozenset(':*?"<>|')
_SMB_SHARE_FORBIDDEN = frozenset('"/\\[]:|<>+=;,*?')
_SEPARATORS = re.compile(r"[,;\s]+")


def is_control(char: str) -> bool:
    """Whether ``char`` would act on a terminal rather than show (ESC, BEL, CR, LF, NUL, ...)."""
    return unicodedata.category(char) in ("Cc", "Zl", "Zp") or char in _BIDI


def printable_text(field: str, value: str) -> str:
    r"""``value`` unchanged when it holds no control character.

    Raises:
        ValidationError: Naming the first control character as an escape (``\x1b``).
    """
    bad = next((c for c in value if is_control(c)), None)
    if bad is not None:
        raise ValidationError(field, f"must not contain control characters ({bad!r} found)")
    return value


def optional_text(field: str, value: str | None) -> str | None:
    """Trimmed one-line text, ``None`` when empty."""
    text = (value or "").strip()
    return printable_text(field, text) if text else None


def name(value: str | None, *, field: str = "name") -> str:
    """A display name: 1-200 characters after trimming, no control characters."""
    text = printable_text(field, (value or "").strip())
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


def comma_list(values: Iterable[str] | str | None) -> list[str]:
    """``"a,b"`` or ``["a", "b"]`` or ``None`` as a list of the raw items."""
    if values is None:
        return []
    return values.split(",") if isinstance(values, str) else list(values)


def extensions(values: Iterable[str] | str | None) -> list[str]:
    """Normalise extensions to lower-case, dot-prefixed, de-duplicated (``MP4`` → ``.mp4``)."""
    result: list[str] = []
    for raw in comma_list(values):
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
    result: list[str] = []
    for raw in comma_list(values):
        text = printable_text(field, raw.strip())
        if not text:
            continue
        if len(text) > 100:
            raise ValidationError(field, f"{text[:20]!r}... is longer than 100 characters")
        if text not in result:
            result.append(text)
    return result


def relative_path(field: str, value: str | None, *, allow_root: bool = True) -> str:
    """A path inside a root: relative, no ``..`` segment, no NUL; ``.`` means the root itself."""
    text = printable_text(field, (value or "").strip())
    if not text:
        raise ValidationError(field, "is required")
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
    """A folder inside an SMB share, normalised to start with ``/`` (``/`` = the share root).

    Characters SMB servers refuse in a path (``: * ? " < > |``) are refused here, not at the
    first scan.
    """
    text = printable_text(field, (value or "/").strip().replace("\\", "/") or "/")
    bad = sorted(set(text) & _SMB_PATH_FORBIDDEN)
    if bad:
        raise ValidationError(field, f"must not contain {' '.join(bad)} (SMB refuses them)")
    if ".." in text.split("/"):
        raise ValidationError(field, "must not contain '..'")
    return posixpath.normpath("/" + text.lstrip("/"))


def s3_prefix(value: str | None) -> str:
    """A key prefix: no leading ``/``, no ``..`` segment; empty means the whole bucket."""
    text = printable_text("s3_prefix", (value or "").strip())
    if not text:
        return ""
    if text.startswith("/"):
        raise ValidationError("s3_prefix", "must not start with /")
    if ".." in text.split("/"):
        raise ValidationError("s3_prefix", "must not contain '..'")
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
    text = printable_text(field, (value or "").strip())
    if not text:
        raise ValidationError(field, "is required")
    if any(c in text for c in "/\\ @") or len(text) > 255:
        raise ValidationError(field, "must be a host name or IP address (no scheme or path)")
    return text


def share_name(value: str | None) -> str:
    r"""An SMB share name: one name of at most 80 characters, none of ``"/\[]:|<>+=;,*?``."""
    text = printable_text("smb_share", (value or "").strip().strip("/\\"))
    if not text:
        raise ValidationError("smb_share", "is required for smb sources")
    if set(text) & _SMB_SHARE_FORBIDDEN or len(text) > 80:
        raise ValidationError("smb_share", "must be a single share name of at most 80 characters "
                              "without any of \" / \\ [ ] : | < > + = ; , * ?")
    return text


def multipart_regex(value: str | None) -> str:
    """A regex that compiles, has exactly three groups (base, part, extension) and is safe.

    Safe means it cannot backtrack for long on a hostile file name: see :func:`regex_hazard`.
    """
    text = value or ""
    try:
        compiled = re.compile(text)
    except re.error as exc:
        raise ValidationError("multipart_regex", f"does not compile (invalid regex): {exc}"
                              ) from None
    if compiled.groups != 3:
        raise ValidationError(
            "multipart_regex",
            f"needs exactly 3 groups (base, part number, extension), has {compiled.groups}",
        )
    hazard = regex_hazard(text)
    if hazard is not None:
        raise ValidationError("multipart_regex", hazard)
    return text


MAX_WIDE_REPEATS = 3
"""At most this many unbounded quantifiers: ``n`` of them can try about ``len(name) ** n``
ways to split a name (3: milliseconds on a 255-character name; 4: over a second)."""

_REPEATS = (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT)


def regex_hazard(pattern: str) -> str | None:
    r"""Why ``pattern`` could take exponential or polynomial time on a file name, if it could.

    A conservative structural check on Python's own parse of the pattern; it refuses:

    * a quantifier inside a repeated group (``(a+)+``, ``(\d{1,3})*``): nested quantifiers;
    * an alternation inside a repeated group (``(a|ab)*``): ambiguous repetition;
    * more than :data:`MAX_WIDE_REPEATS` unbounded quantifiers (``+``, ``*``, ``{n,}``).

    Returns:
        A rule in words for the operator, or ``None`` when the pattern is safe.
    """
    try:
        tree = sre.parse(pattern)
    except re.error:
        return None  # compiling reports it
    wide = 0

    def walk(items: sre.SubPattern | list, repeated: bool) -> str | None:
        nonlocal wide
        for op, av in items:
            if op in _REPEATS:
                _low, high, body = av
                if high == sre.MAXREPEAT:
                    wide += 1
                if repeated and high > 1:
                    return ("has a nested quantifier (a repeated group holding a quantifier, "
                            "e.g. (a+)+), which can take exponential time on a file name")
                found = walk(body, repeated or high > 1)
            elif op is sre.BRANCH:
                if repeated:
                    return ("has an alternation inside a repeated group (e.g. (a|ab)*), which "
                            "can take exponential time on a file name")
                found = next((r for branch in av[1] if (r := walk(branch, repeated))), None)
            elif op is sre.SUBPATTERN:
                found = walk(av[3], repeated)
            elif op in (sre.ASSERT, sre.ASSERT_NOT):
                found = walk(av[1], repeated)
            elif op is sre.ATOMIC_GROUP:
                found = walk(av, repeated)
            elif op is sre.GROUPREF_EXISTS:
                found = walk(av[1], repeated) or (walk(av[2], repeated) if av[2] else None)
            else:
                found = None
            if found:
                return found
        return None

    reason = walk(tree, False)
    if reason is None and wide > MAX_WIDE_REPEATS:
        reason = (f"has {wide} unbounded quantifiers (+, *, {{n,}}); at most "
                  f"{MAX_WIDE_REPEATS} keep matching a file name fast")
    return reason


def email_address(field: str, value: str) -> str:
    """A plausible single email address (one ``@``, a dotted domain, no spaces or brackets)."""
    text = printable_text(field, value.strip())
    if len(text) > 320 or not re.fullmatch(r"[^@\s<>,;\"]+@[^@\s<>,;\"]+\.[^@\s<>,;\"]+", text):
        raise ValidationError(field, f"{text!r} is not an email address")
    return text


def split_addresses(values: Iterable[str] | str | None) -> list[str]:
    """Addresses from a list and/or ``a@x, b@y; c@z`` strings, blanks dropped."""
    return [part for value in ([values] if isinstance(values, str) else values or [])
            for part in _SEPARATORS.split(value or "") if part]


def recipients(config_defaults: Iterable[str] | str | None,
               link_additions: Iterable[str] | str | None = None, *,
               field: str = "recipients") -> tuple[str, ...]:
    """The configuration's default recipients followed by a link's additions.

    Each address is validated; duplicates (compared case-insensitively) are dropped, keeping the
    first spelling and the order.

    Raises:
        ValidationError: An address is not plausible (``field`` names the offending input).
    """
    seen: set[str] = set()
    result: list[str] = []
    for raw in [*split_addresses(config_defaults), *split_addresses(link_additions)]:
        address = email_address(field, raw)
        if address.casefold() not in seen:
            seen.add(address.casefold())
            result.append(address)
    return tuple(result)
