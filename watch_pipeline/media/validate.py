"""Magic-byte validation: does a file start like a media container we can import.

Only the first ``HEAD_SIZE`` bytes are read, so validation costs one small read even when the
file sits on S3 or SMB. This is a cheap gate before any download; ffprobe (``media.probe``)
gives the authoritative answer later.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import BinaryIO

from watch_pipeline.catalog.models import SkipReason

HEAD_SIZE = 64 * 1024
"""The most bytes ``validate_media`` reads from a file."""

_FTYP_BRANDS: dict[bytes, str] = {
    b"qt  ": "video/quicktime",
    b"M4A ": "audio/mp4",
    b"M4B ": "audio/mp4",
    b"M4P ": "audio/mp4",
    b"F4A ": "audio/mp4",
    b"F4B ": "audio/mp4",
    b"M4V ": "video/x-m4v",
    b"M4VH": "video/x-m4v",
    b"M4VP": "video/x-m4v",
}
# Top-level QuickTime atoms that may open a .mov written before the ftyp atom existed.
_QUICKTIME_ATOMS = (b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot")
_ASF_HEADER = bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c")
_ASF_VIDEO_MEDIA = bytes.fromhex("c0ef19bc4d5bcf11a8fd00805f5c442b")
_ASF_AUDIO_MEDIA = bytes.fromhex("409e69f84d5bcf11a8fd00805f5c442b")
_EBML_MAGIC = b"\x1a\x45\xdf\xa3"
_TS_PACKET = 188
_M2TS_PACKET = 192


@dataclass(frozen=True)
class ValidationResult:
    """The outcome of checking a file's first bytes.

    Attributes:
        ok: True when the bytes open a known media container.
        content_type: The sniffed MIME type, or None when ``ok`` is False.
        skip_reason: None when ``ok``; ``"validation_failed"`` for an empty or unreadable file;
            ``"invalid_type"`` for readable bytes that are not media.
        message: One line for a person: what was found, or why the file is refused.

    """

    ok: bool
    content_type: str | None
    skip_reason: SkipReason | None
    message: str


def sniff(head: bytes) -> str | None:
    """Name the media container that ``head`` starts.

    Args:
        head: The first bytes of a file; 64 KiB is plenty, a few hundred bytes usually suffice.

    Returns:
        A MIME type such as ``"video/mp4"``, ``"audio/mpeg"`` or ``"video/x-matroska"``, or None
        when the bytes match no media container known here.

    """
    if len(head) < 4:
        return None
    if head[4:8] == b"ftyp":
        return _sniff_ftyp(head)
    if head[4:8] in _QUICKTIME_ATOMS and _plausible_atom_size(head):
        return "video/quicktime"
    if head[:4] in (b"RIFF", b"RF64") and len(head) >= 12:
        return {b"WAVE": "audio/wav", b"AVI ": "video/x-msvideo"}.get(head[8:12])
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "audio/aiff"
    if head[:4] == b"fLaC":
        return "audio/flac"
    if head[:4] == b"OggS":
        return "video/ogg" if b"\x80theora" in head else "audio/ogg"
    if head[:4] == _EBML_MAGIC:
        return "video/webm" if b"webm" in head[:64] else "video/x-matroska"
    if head[:16] == _ASF_HEADER:
        return _sniff_asf(head)
    if head[:4] == b"FLV\x01":
        return "video/x-flv"
    if head.startswith(b"#!AMR-WB\n"):
        return "audio/amr-wb"
    if head.startswith(b"#!AMR\n"):
        return "audio/amr"
    if head[:4] == b"\x00\x00\x01\xba":
        return "video/mpeg"
    if _is_transport_stream(head):
        return "video/mp2t"
    if head[:3] == b"ID3":
        return _sniff_after_id3(head)
    return _sniff_audio_frame(head)


def validate_media(fh: BinaryIO, size: int) -> ValidationResult:
    """Check that a file is non-empty, readable, and starts like a media container.

    Reads at most ``HEAD_SIZE`` bytes from the start of ``fh``.

    Args:
        fh: An open binary file object, positioned at the start or seekable.
        size: The file's size in bytes as listed by its source.

    Returns:
        A ``ValidationResult``; never raises for unreadable or foreign content.

    """
    if size <= 0:
        return _failed(SkipReason.VALIDATION_FAILED, "file is empty (0 bytes)")
    want = min(size, HEAD_SIZE)
    try:
        if fh.seekable():
            fh.seek(0, os.SEEK_SET)
        head = _read_up_to(fh, want)
    except (OSError, ValueError) as exc:
        return _failed(SkipReason.VALIDATION_FAILED, f"file could not be read: {exc}")
    if len(head) < want:
        return _failed(
            SkipReason.VALIDATION_FAILED,
            f"file could not be read: got {len(head)} of the first {want} bytes",
        )
    content_type = sniff(head)
    if content_type is None:
        return _failed(
            SkipReason.INVALID_TYPE,
            f"not a known media container (first bytes: {head[:16]!r})",
        )
    if head[4:8] == b"ftyp" or head[4:8] in _QUICKTIME_ATOMS:
        problem = _box_overrun(fh, size)
        if problem:
            return _failed(SkipReason.VALIDATION_FAILED, problem)
    return ValidationResult(
        ok=True, content_type=content_type, skip_reason=None, message=f"looks like {content_type}"
    )


_MAX_TOP_LEVEL_BOXES = 64


def _box_overrun(fh: BinaryIO, size: int) -> str | None:
    """A truncated MP4/QuickTime file: a top-level box claims bytes beyond the end of the file.

    Walks the top-level boxes by their headers (one 16-byte read each, a handful per file), so
    a recording cut short by a half-finished copy is refused before it is imported, even when
    its index (``moov``) sits at the front and ffprobe would accept it.
    """
    if not fh.seekable():
        return None
    offset = 0
    try:
        for _ in range(_MAX_TOP_LEVEL_BOXES):
            if offset + 8 > size:
                return None
            fh.seek(offset)
            header = _read_up_to(fh, 16)
            if len(header) < 8:
                return None
            box_size, box_type = struct.unpack(">I", header[:4])[0], header[4:8]
            if box_size == 1 and len(header) == 16:
                box_size = struct.unpack(">Q", header[8:16])[0]
            if box_size == 0:  # the last box runs to the end of the file
                return None
            if box_size < 8:
                return f"corrupt container: box {box_type!r} at byte {offset} has size {box_size}"
            if offset + box_size > size:
                name = box_type.decode("latin-1", "replace")
                return (f"truncated recording: the {name!r} box at byte {offset} needs "
                        f"{offset + box_size} bytes, the file has {size}")
            offset += box_size
    except (OSError, ValueError):
        return None
    return None


def _failed(reason: SkipReason, message: str) -> ValidationResult:
    return ValidationResult(ok=False, content_type=None, skip_reason=reason, message=message)


def _read_up_to(fh: BinaryIO, want: int) -> bytes:
    parts: list[bytes] = []
    remaining = want
    while remaining > 0:
        chunk = fh.read(remaining)
        if not chunk:
            break
        parts.append(chunk)
        remaining -= len(chunk)
    return b"".join(parts)


def _sniff_ftyp(head: bytes) -> str:
    brand = head[8:12]
    if brand in _FTYP_BRANDS:
        return _FTYP_BRANDS[brand]
    if brand.startswith(b"3g2"):
        return "video/3gpp2"
    if brand.startswith(b"3g"):
        return "video/3gpp"
    return "video/mp4"


def _plausible_atom_size(head: bytes) -> bool:
    # 0 means "to end of file", 1 means a 64-bit size follows; real atoms are at least 8 bytes.
    atom_size = struct.unpack(">I", head[:4])[0]
    return atom_size in (0, 1) or atom_size >= 8


def _sniff_asf(head: bytes) -> str:
    if _ASF_VIDEO_MEDIA in head:
        return "video/x-ms-wmv"
    if _ASF_AUDIO_MEDIA in head:
        return "audio/x-ms-wma"
    return "video/x-ms-asf"


def _is_transport_stream(head: bytes) -> bool:
    # One sync byte is too weak a signal; require it at the start of three consecutive packets.
    for offset, packet in ((0, _TS_PACKET), (4, _M2TS_PACKET)):
        positions = [offset + i * packet for i in range(3)]
        if positions[-1] < len(head) and all(head[p] == 0x47 for p in positions):
            return True
    return False


def _sniff_after_id3(head: bytes) -> str:
    # ID3v2: 10-byte header, flags at 5 (bit 4 = footer), size as four 7-bit bytes at 6..9.
    if len(head) < 10:
        return "audio/mpeg"
    tag_size = 0
    for byte in head[6:10]:
        tag_size = (tag_size << 7) | (byte & 0x7F)
    end = 10 + tag_size + (10 if head[5] & 0x10 else 0)
    after = head[end:]
    # Past our window: an ID3 tag is overwhelmingly an MP3's.
    return _sniff_audio_frame(after) or "audio/mpeg"


def _sniff_audio_frame(head: bytes) -> str | None:
    if len(head) < 4 or head[0] != 0xFF:
        return None
    b1, b2 = head[1], head[2]
    if b1 & 0xF6 == 0xF0:  # ADTS: 12-bit sync, layer 00.
        return "audio/aac" if (b2 >> 2) & 0x0F < 13 else None
    version = (b1 >> 3) & 0x03
    layer = (b1 >> 1) & 0x03
    bitrate_index = b2 >> 4
    samplerate_index = (b2 >> 2) & 0x03
    if (
        b1 & 0xE0 == 0xE0
        and version != 0b01
        and layer != 0b00
        and bitrate_index not in (0x0, 0xF)
        and samplerate_index != 0b11
    ):
        return "audio/mpeg"
    return None
