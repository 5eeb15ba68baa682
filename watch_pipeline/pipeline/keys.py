"""Readable ``media`` partition keys: ``<slug of the file name>-<fingerprint>``.

The Dagster UI's partition filter searches keys, so a key that starts with the file name lets a
person find ``Board Meeting 2026.wav`` by typing ``board-meeting``. The fingerprint (an imohash, or
a multi-part group fingerprint) stays the identity: dedup, run keys and every catalog lookup use it
or the stored key, never the slug. A key is opaque once made — code reads a media's key from the
catalog (``watch_source_file.partition_key``, ``media_file.partition_key``) rather than rebuilding
it — and :func:`fingerprint_of` recovers the fingerprint from any key this module made.

The rules of :func:`media_partition_key`:

1. The slug is built from the file's *name* (no folder), without its last extension: Unicode is
   decomposed (NFKD) and accents dropped, a few letters without a decomposition are transliterated
   (``ß`` → ``ss``, ``ø`` → ``o``, …), anything else outside ASCII is dropped; the result is
   lowercased and every run of characters other than ``a-z`` and ``0-9`` becomes one ``-``.
2. The slug is cut to :data:`MAX_SLUG_LENGTH` characters, at a ``-`` when one lies in the last
   third, and never ends with ``-``; so a key is at most :data:`MAX_KEY_LENGTH` characters, the
   catalog's ``partition_key`` column width.
3. An empty slug (a name of only punctuation or of a script that has no ASCII form) gives the bare
   fingerprint, which is also what every media imported before this module keeps as its key.

Keys hold only ``a-z``, ``0-9`` and ``-``, so none contains a substring Dagster refuses in a
partition key (``...`` and control characters, ``INVALID_PARTITION_SUBSTRINGS`` in
``dagster/_core/definitions/partitions/utils/base.py``), nor the ``,`` and ``[`` ``]`` of the UI's
partition-selection syntax.

Nothing here touches a file, a database or Dagster.
"""

from __future__ import annotations

import re
import unicodedata

MAX_KEY_LENGTH = 64
"""Width of the catalog's ``partition_key`` columns (``String(64)``)."""

FINGERPRINT_LENGTH = 32
"""An imohash or group fingerprint: 32 lowercase hex characters."""

MAX_SLUG_LENGTH = MAX_KEY_LENGTH - FINGERPRINT_LENGTH - 1
"""The longest slug that keeps ``<slug>-<fingerprint>`` within :data:`MAX_KEY_LENGTH`."""

_FINGERPRINT = re.compile(r"[0-9a-f]{32}")
_KEY = re.compile(r"(?:(?P<slug>[a-z0-9]+(?:-[a-z0-9]+)*)-)?(?P<fingerprint>[0-9a-f]{32})")
_NOT_ALNUM = re.compile(r"[^a-z0-9]+")

# Latin letters NFKD leaves whole; everything else non-ASCII decomposes or is dropped.
_TRANSLITERATE = str.maketrans(
    {
        "ß": "ss",
        "ẞ": "SS",
        "æ": "ae",
        "Æ": "AE",
        "œ": "oe",
        "Œ": "OE",
        "ø": "o",
        "Ø": "O",
        "đ": "d",
        "Đ": "D",
        "ð": "d",
        "Ð": "D",
        "þ": "th",
        "Þ": "TH",
        "ł": "l",
        "Ł": "L",
        "\u0131": "i",  # dotless i
        "ħ": "h",
        "Ħ": "H",
    }
)


def slug(file_name: str) -> str:
    """The readable part of a partition key: a short ASCII slug of a file's name.

    Args:
        file_name: A file name or path (only the part after the last slash or backslash is used);
            the last extension is dropped (``Board Meeting 2026.wav`` → ``board-meeting-2026``).

    Returns:
        At most :data:`MAX_SLUG_LENGTH` characters of ``a-z``, ``0-9`` and single ``-``, neither
        starting nor ending with ``-``; ``""`` when nothing readable is left.

    """
    name = re.split(r"[/\\]", file_name)[-1]
    stem, dot, _extension = name.rpartition(".")
    if not dot or not stem.strip("."):  # "notes" or ".hidden": no extension to drop
        stem = name
    ascii_text = (
        unicodedata.normalize("NFKD", stem.translate(_TRANSLITERATE))
        .encode("ascii", "ignore")
        .decode("ascii")
    )
    text = _NOT_ALNUM.sub("-", ascii_text.lower()).strip("-")
    if len(text) <= MAX_SLUG_LENGTH:
        return text
    cut = text[: MAX_SLUG_LENGTH + 1]
    boundary = cut.rfind("-")
    if boundary >= MAX_SLUG_LENGTH * 2 // 3:
        return cut[:boundary]
    return cut[:MAX_SLUG_LENGTH].rstrip("-")


def media_partition_key(file_name: str, fingerprint: str) -> str:
    """The ``media`` partition key for new media: ``<slug(file_name)>-<fingerprint>``.

    Args:
        file_name: The first file's name, or a multi-part group's stitched output name.
        fingerprint: The media's identity: an imohash or a group fingerprint (32 lowercase hex).

    Returns:
        ``<slug>-<fingerprint>``, or the bare fingerprint when the slug is empty.

    Raises:
        ValueError: If ``fingerprint`` is not 32 lowercase hex characters.

    """
    if not _FINGERPRINT.fullmatch(fingerprint):
        raise ValueError(f"not a fingerprint: {fingerprint!r}")
    readable = slug(file_name)
    return f"{readable}-{fingerprint}" if readable else fingerprint


def fingerprint_of(partition_key: str) -> str:
    """The fingerprint a ``media`` partition key was made from.

    Works for readable keys and for bare-fingerprint keys (every media imported before readable
    keys existed).

    Args:
        partition_key: A key made by :func:`media_partition_key`, or a bare fingerprint.

    Returns:
        The 32 lowercase hex characters of the fingerprint.

    Raises:
        ValueError: If ``partition_key`` has neither shape.

    """
    match = _KEY.fullmatch(partition_key)
    if match is None:
        raise ValueError(f"not a media partition key: {partition_key!r}")
    return match["fingerprint"]
