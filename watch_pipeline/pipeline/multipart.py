"""Pure multi-part detection: which listed files are parts of one recording session.

Recorders split long sessions into ``name_P001.mp4``, ``name_P002.mp4``, … . A source's
``multipart_regex`` has exactly three groups — base, part number, extension — and must match a
file's whole *name* (the folder is never matched). The rules, applied by :func:`group_parts`:

1. Files group by ``(folder, base, lower-case extension)``: ``a_P001.MP4`` and ``a_P002.mp4`` in
   one folder are one group; the same names in two folders are two groups.
2. A lone part (the only file of its group) is standalone.
3. A group whose mtimes span more than ``multipart_time_window_hours`` is not one session: every
   part of it falls back to standalone. The group is *not* split at the largest gap — that is the
   rule the issue states, and it never guesses where one session ends and the next begins.
4. Two files claiming the same part number make the group ambiguous: all of its parts are
   standalone.
5. A group is complete when its part numbers are exactly ``1..n``; otherwise ``missing`` lists the
   numbers absent from ``1..max``.

A group waits for its missing parts with its own counter, ``wait_scans``, never the failure
counter ``retry_count`` (see :func:`group_ready`). The stitched media's partition key is
:func:`group_fingerprint` of the ordered part fingerprints; the ``part_group`` column holds
:func:`group_key`.

Matching is bounded: the regex is refused when it could backtrack for long
(:func:`watch_pipeline.catalog.validation.regex_hazard`), and a name longer than
:data:`MAX_PART_NAME_LENGTH` is never a part, so a hostile file name costs milliseconds.

Nothing here touches a file, a database or Dagster.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from watch_pipeline.catalog.validation import ValidationError, multipart_regex
from watch_pipeline.sources.base import SourceEntry

GROUP_FINGERPRINT_PREFIX = "mp1:"
"""Versions the group-fingerprint recipe; a new recipe gets a new prefix."""


MAX_PART_NAME_LENGTH = 255
"""The longest file name matched against a multipart regex (a file-system name's usual limit);
a longer name is imported as a single file."""


class MultipartRegexError(ValueError):
    """A multipart regex does not compile, has other than three groups, or could be slow."""


def compile_part_regex(pattern: str) -> re.Pattern[str]:
    """Compile a ``multipart_regex`` and check it is one the rules can use, quickly.

    Args:
        pattern: A regular expression with groups (base, part number, extension).

    Returns:
        The compiled pattern.

    Raises:
        MultipartRegexError: If the pattern does not compile, has other than three groups, or
            has a nested or ambiguous quantifier (the operator's rule,
            :func:`watch_pipeline.catalog.validation.multipart_regex`).

    """
    try:
        return re.compile(multipart_regex(pattern))
    except ValidationError as exc:
        raise MultipartRegexError(f"regex {pattern!r} {exc.rule}") from None


@dataclass(frozen=True)
class PartName:
    """What a multipart regex reads from a file name.

    Attributes:
        base: The session's name, e.g. ``"meeting"`` for ``meeting_P002.mp4``.
        part_number: The part's number, e.g. ``2``.
        extension: The extension as matched, lower-cased, e.g. ``".mp4"``.

    """

    base: str
    part_number: int
    extension: str


def parse_part(regex: re.Pattern[str], filename: str) -> PartName | None:
    """Read base, part number and extension from a file name.

    The whole name must match (``regex.fullmatch``); anything before the last ``/`` is a folder
    and is ignored, so the regex never sees it. A name longer than :data:`MAX_PART_NAME_LENGTH`
    is not a part (the regex never runs on it).

    Args:
        regex: A compiled pattern with three groups (base, part number, extension).
        filename: A file name, or a ``/``-separated path whose last segment is the name.

    Returns:
        The parsed name, or ``None`` when the name is too long or does not match, a group did
        not participate, or the part number group is not a decimal number.

    """
    name = filename.rsplit("/", 1)[-1]
    if len(name) > MAX_PART_NAME_LENGTH:
        return None
    match = regex.fullmatch(name)
    if match is None:
        return None
    base, number, extension = match.group(1, 2, 3)
    if base is None or number is None or extension is None:
        return None
    try:
        part_number = int(number)
    except ValueError:
        return None
    return PartName(base=base, part_number=part_number, extension=extension.lower())


@dataclass(frozen=True)
class PartFile(SourceEntry):
    """One listed file offered to :func:`group_parts`: a :class:`SourceEntry` with its imohash.

    Attributes:
        fingerprint: The file's imohash, or ``None`` when not computed yet.

    """

    fingerprint: str | None = None

    @property
    def folder(self) -> str:
        """The ``/``-separated folder of ``remote_path``; ``""`` at the source root."""
        return self.remote_path.rsplit("/", 1)[0] if "/" in self.remote_path else ""


@dataclass(frozen=True)
class Part:
    """A file and its part number within a group."""

    number: int
    file: PartFile


@dataclass(frozen=True)
class PartGroup:
    """The parts of one session: same folder, base and (lower-case) extension.

    Attributes:
        key: ``(folder, base, extension)``, the extension lower-cased.
        parts: The parts, sorted by part number (numbers are unique).
        missing: Numbers absent from ``1..max(part number)``, ascending.
        complete: True when the part numbers are exactly ``1..n``.

    """

    key: tuple[str, str, str]
    parts: tuple[Part, ...]
    missing: tuple[int, ...]
    complete: bool

    @property
    def group_id(self) -> str:
        """The ``part_group`` column value: :func:`group_key` of ``key``."""
        return group_key(*self.key)

    @property
    def part_numbers(self) -> tuple[int, ...]:
        """The part numbers present, ascending."""
        return tuple(part.number for part in self.parts)

    @property
    def output_name(self) -> str:
        """The stitched media's file name: base + extension."""
        _, base, extension = self.key
        return output_name(base, extension)


class StandaloneReason(enum.StrEnum):
    """Why a file is not (or no longer) part of a group."""

    NOT_A_PART = "not_a_part"  # the name does not match the regex
    INVALID_PART_NUMBER = "invalid_part_number"  # part number 0: numbering starts at 1
    LONE_PART = "lone_part"  # the only file of its group
    OUTSIDE_TIME_WINDOW = "outside_time_window"  # the group's mtimes span more than the window
    DUPLICATE_PART_NUMBER = "duplicate_part_number"  # two files claim one number in a group


@dataclass(frozen=True)
class Standalone:
    """A file to be imported on its own, and why.

    Attributes:
        file: The file.
        reason: The rule that made it standalone.
        message: One sentence for an operator (names the group and the numbers involved).
        part: What the regex read from the name, or ``None`` when it did not match.

    """

    file: PartFile
    reason: StandaloneReason
    message: str
    part: PartName | None = None


@dataclass(frozen=True)
class GroupingResult:
    """Output of :func:`group_parts`.

    Attributes:
        groups: Groups of two or more parts, ordered by key.
        standalone: Every other input file with its reason, ordered by ``remote_path``.

    """

    groups: tuple[PartGroup, ...]
    standalone: tuple[Standalone, ...]


def group_parts(
    files: Iterable[PartFile], *, regex: re.Pattern[str], time_window_hours: float
) -> GroupingResult:
    """Sort listed files into multi-part groups and standalone files (rules in the module doc).

    Every input file appears exactly once in the result: in one group or as standalone.

    Args:
        files: The listed files of one source.
        regex: The compiled ``multipart_regex`` (three groups: base, part number, extension).
        time_window_hours: ``multipart_time_window_hours``; a group whose newest and oldest
            mtimes are further apart than this is not one session.

    Returns:
        The groups and the standalone files.

    """
    window = timedelta(hours=time_window_hours)
    candidates: dict[tuple[str, str, str], list[tuple[PartName, PartFile]]] = defaultdict(list)
    standalone: list[Standalone] = []
    for file in files:
        part = parse_part(regex, file.filename)
        if part is None:
            standalone.append(
                Standalone(
                    file, StandaloneReason.NOT_A_PART, "name does not match the multipart regex"
                )
            )
        elif part.part_number < 1:
            standalone.append(
                Standalone(
                    file,
                    StandaloneReason.INVALID_PART_NUMBER,
                    f"part number {part.part_number} is not a part: numbering starts at 1",
                    part,
                )
            )
        else:
            candidates[(file.folder, part.base, part.extension)].append((part, file))

    groups: list[PartGroup] = []
    for key, members in sorted(candidates.items()):
        label = output_name(key[1], key[2])
        if len(members) == 1:
            part, file = members[0]
            standalone.append(
                Standalone(
                    file,
                    StandaloneReason.LONE_PART,
                    f"only part of {label!r} found (part {part.part_number})",
                    part,
                )
            )
            continue
        mtimes = [file.mtime for _, file in members]
        span = max(mtimes) - min(mtimes)
        if span > window:
            hours = span.total_seconds() / 3600
            for part, file in members:
                standalone.append(
                    Standalone(
                        file,
                        StandaloneReason.OUTSIDE_TIME_WINDOW,
                        f"parts of {label!r} were modified {hours:.1f} h apart, more than the "
                        f"{time_window_hours:g} h window: not one session",
                        part,
                    )
                )
            continue
        numbers = [part.part_number for part, _ in members]
        duplicates = sorted({n for n in numbers if numbers.count(n) > 1})
        if duplicates:
            listed = ", ".join(str(n) for n in duplicates)
            for part, file in members:
                standalone.append(
                    Standalone(
                        file,
                        StandaloneReason.DUPLICATE_PART_NUMBER,
                        f"several files of {label!r} claim part number {listed}: ambiguous",
                        part,
                    )
                )
            continue
        parts = tuple(
            sorted((Part(part.part_number, file) for part, file in members), key=lambda p: p.number)
        )
        present = {p.number for p in parts}
        missing = tuple(n for n in range(1, parts[-1].number + 1) if n not in present)
        groups.append(PartGroup(key=key, parts=parts, missing=missing, complete=not missing))

    standalone.sort(key=lambda s: s.file.remote_path)
    return GroupingResult(groups=tuple(groups), standalone=tuple(standalone))


def group_key(folder: str, base: str, ext: str) -> str:
    """A stable short id of a group for the ``part_group`` column.

    Args:
        folder: The ``/``-separated folder (``""`` at the source root).
        base: The base name the regex read.
        ext: The extension; compared lower-case.

    Returns:
        The first 16 hex characters of the SHA-1 of the JSON array ``[folder, base, ext]``
        (JSON, so no separator can make two different tuples collide).

    """
    payload = json.dumps([folder, base, ext.lower()], ensure_ascii=False)
    return hashlib.sha1(payload.encode("utf-8"), usedforsecurity=False).hexdigest()[:16]


def group_fingerprint(part_fingerprints: Sequence[str]) -> str:
    """The media partition key of a group: a fingerprint of its ordered part fingerprints.

    Computed as BLAKE2b with a 16-byte digest of ``"mp1:" + ",".join(part_fingerprints)``, as 32
    lowercase hex characters — the shape of an imohash, so it fits wherever a file's fingerprint
    does. The same parts in the same order give the same key (a re-scan is idempotent); another
    order or membership gives another key; the prefix and the different hash keep it from ever
    equalling a single part's imohash.

    Args:
        part_fingerprints: The parts' imohashes ordered by part number.

    Returns:
        32 lowercase hex characters.

    Raises:
        ValueError: If there are no fingerprints, or one is empty or contains a comma.

    """
    if not part_fingerprints:
        raise ValueError("a group fingerprint needs at least one part fingerprint")
    for fingerprint in part_fingerprints:
        if not fingerprint or "," in fingerprint:
            raise ValueError(f"invalid part fingerprint {fingerprint!r}")
    payload = GROUP_FINGERPRINT_PREFIX + ",".join(part_fingerprints)
    return hashlib.blake2b(payload.encode("ascii"), digest_size=16).hexdigest()


def group_wait_scans(part_wait_scans: Iterable[int]) -> int:
    """A group's wait counter from its part rows' ``wait_scans``: the largest (0 if none).

    A part that arrives late starts at 0; the group keeps the count of its longest-waiting part,
    so a trickle of new parts cannot postpone the stitch forever.
    """
    return max(part_wait_scans, default=0)


def group_ready(complete: bool, wait_scans: int, multipart_wait_scans: int) -> bool:
    """Whether a group is stitched now.

    A complete group is ready at once. An incomplete one is ready once it has waited
    ``multipart_wait_scans`` scans, i.e. ``wait_scans >= multipart_wait_scans``, where
    ``wait_scans`` is incremented by each scan that sees the group incomplete; it is then stitched
    with the parts that arrived, and ``PartGroup.missing`` says which are absent.

    ``wait_scans`` is its own counter. The original implementation counted waiting scans in
    ``retry_count``, which import failures also increment, so a part that had failed a few times
    made its incomplete group look as if it had waited long enough and stitched it early, truncated.
    Failures never enter this decision.

    Args:
        complete: ``PartGroup.complete``.
        wait_scans: Scans that have seen the group incomplete (see :func:`group_wait_scans`).
        multipart_wait_scans: The source's ``multipart_wait_scans`` setting.

    Returns:
        True when the group should be stitched now.

    """
    return complete or wait_scans >= multipart_wait_scans


def output_name(base: str, ext: str) -> str:
    """The stitched media's file name: ``base + ext`` (``meeting_P001.mp4`` → ``meeting.mp4``)."""
    return base + ext
