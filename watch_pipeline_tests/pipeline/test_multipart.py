"""Pure multi-part detection: grouping, completeness, time window, keys and the wait counter."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from watch_pipeline.catalog.models import DEFAULT_MULTIPART_REGEX
from watch_pipeline.pipeline.fingerprint import imohash_path
from watch_pipeline.pipeline.multipart import (
    MAX_PART_NAME_LENGTH,
    GroupingResult,
    MultipartRegexError,
    PartFile,
    PartName,
    StandaloneReason,
    compile_part_regex,
    group_fingerprint,
    group_key,
    group_parts,
    group_ready,
    group_wait_scans,
    output_name,
    parse_part,
)

REGEX = re.compile(DEFAULT_MULTIPART_REGEX)
T0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)


def _file(remote_path: str, minutes: float = 0, fingerprint: str | None = None) -> PartFile:
    return PartFile(
        remote_path=remote_path,
        size=1000,
        mtime=T0 + timedelta(minutes=minutes),
        fingerprint=fingerprint,
    )


def _group(*paths: str, window: float = 24, regex: re.Pattern[str] = REGEX) -> GroupingResult:
    return group_parts(
        [_file(p, minutes=i) for i, p in enumerate(paths)], regex=regex, time_window_hours=window
    )


def _reasons(result: GroupingResult) -> dict[str, StandaloneReason]:
    return {s.file.remote_path: s.reason for s in result.standalone}


# --- parse_part ----------------------------------------------------------------------------------


def test_parse_part_reads_base_number_and_lowercase_extension():
    assert parse_part(REGEX, "meeting_P002.MP4") == PartName("meeting", 2, ".mp4")
    assert parse_part(REGEX, "a_b_P010.wav") == PartName("a_b", 10, ".wav")


def test_parse_part_ignores_the_folder():
    assert parse_part(REGEX, "rec_P001/talk_P003.mp4") == PartName("talk", 3, ".mp4")
    assert parse_part(REGEX, "talk_P001/notes.txt") is None


@pytest.mark.parametrize(
    "name",
    [
        "meeting.mp4",
        "meeting_P01.mp4",
        "meeting_P0001.mp4",
        "meeting_p001.mp4",
        "_P001",
        "meeting_P001.mp4.part",
    ],
)
def test_parse_part_rejects_non_parts(name):
    assert parse_part(REGEX, name) is None


def test_compile_part_regex_needs_three_groups():
    assert compile_part_regex(DEFAULT_MULTIPART_REGEX).groups == 3
    with pytest.raises(MultipartRegexError, match="exactly 3"):
        compile_part_regex(r"^(.+)_P\d{3}(\..+)$")
    with pytest.raises(MultipartRegexError, match="invalid regex"):
        compile_part_regex(r"^(.+_P(\d{3}")


# --- group_parts ---------------------------------------------------------------------------------


def test_complete_group_sorted_by_part_number():
    result = _group("rec/talk_P003.mp4", "rec/talk_P001.mp4", "rec/talk_P002.mp4")

    [group] = result.groups
    assert result.standalone == ()
    assert group.key == ("rec", "talk", ".mp4")
    assert group.part_numbers == (1, 2, 3)
    assert [p.file.filename for p in group.parts] == [
        "talk_P001.mp4",
        "talk_P002.mp4",
        "talk_P003.mp4",
    ]
    assert group.complete and group.missing == ()
    assert group.output_name == "talk.mp4"
    assert group.group_id == group_key("rec", "talk", ".mp4")


def test_gap_is_incomplete_with_missing_numbers():
    [group] = _group("talk_P001.mp4", "talk_P003.mp4").groups
    assert not group.complete
    assert group.missing == (2,)


def test_not_starting_at_one_is_incomplete():
    [group] = _group("talk_P002.mp4", "talk_P003.mp4").groups
    assert not group.complete
    assert group.missing == (1,)


def test_lone_part_is_standalone():
    result = _group("talk_P001.mp4", "other_P002.mp4", "plain.mp4")

    assert result.groups == ()
    assert _reasons(result) == {
        "talk_P001.mp4": StandaloneReason.LONE_PART,
        "other_P002.mp4": StandaloneReason.LONE_PART,
        "plain.mp4": StandaloneReason.NOT_A_PART,
    }
    lone = next(s for s in result.standalone if s.file.filename == "other_P002.mp4")
    assert lone.part == PartName("other", 2, ".mp4")


def test_group_spanning_more_than_the_window_falls_back_to_standalone():
    files = [
        _file("talk_P001.mp4", minutes=0),
        _file("talk_P002.mp4", minutes=30),
        _file("talk_P003.mp4", minutes=25 * 60),  # the next day: not the same session
    ]

    result = group_parts(files, regex=REGEX, time_window_hours=24)

    assert result.groups == ()
    assert set(_reasons(result).values()) == {StandaloneReason.OUTSIDE_TIME_WINDOW}
    assert "25.0 h apart" in result.standalone[0].message


def test_span_equal_to_the_window_is_one_session():
    files = [_file("talk_P001.mp4", minutes=0), _file("talk_P002.mp4", minutes=120)]
    [group] = group_parts(files, regex=REGEX, time_window_hours=2).groups
    assert group.complete


def test_unicode_names_group():
    result = _group("Réunion/Séance été 会议_P002.m4a", "Réunion/Séance été 会议_P001.m4a")

    [group] = result.groups
    assert group.key == ("Réunion", "Séance été 会议", ".m4a")
    assert group.complete
    assert group.output_name == "Séance été 会议.m4a"


def test_extension_case_does_not_split_a_group():
    [group] = _group("talk_P001.MP4", "talk_P002.mp4").groups

    assert group.key == ("", "talk", ".mp4")
    assert group.part_numbers == (1, 2)


def test_different_extensions_are_different_groups():
    result = _group("talk_P001.mp4", "talk_P002.mp4", "talk_P001.wav", "talk_P002.wav")
    assert [g.key[2] for g in result.groups] == [".mp4", ".wav"]


def test_different_folders_never_group():
    result = _group("a/talk_P001.mp4", "b/talk_P002.mp4", "a/talk_P002.mp4", "b/talk_P003.mp4")

    assert [(g.key[0], g.part_numbers) for g in result.groups] == [("a", (1, 2)), ("b", (2, 3))]
    assert group_key("a", "talk", ".mp4") != group_key("b", "talk", ".mp4")


def test_duplicate_part_numbers_make_the_group_ambiguous():
    result = _group("talk_P001.mp4", "talk_P002.mp4", "talk_P002.MP4")

    assert result.groups == ()
    assert set(_reasons(result).values()) == {StandaloneReason.DUPLICATE_PART_NUMBER}
    assert len(result.standalone) == 3
    assert "part number 2" in result.standalone[0].message


def test_part_number_zero_is_not_a_part():
    result = _group("talk_P000.mp4", "talk_P001.mp4", "talk_P002.mp4")

    [group] = result.groups
    assert group.part_numbers == (1, 2)
    assert _reasons(result) == {"talk_P000.mp4": StandaloneReason.INVALID_PART_NUMBER}


def test_custom_regex():
    regex = compile_part_regex(r"^(.+?)-part(\d+)(\.[A-Za-z0-9]+)$")

    result = _group("cam-part1.mov", "cam-part2.mov", "cam-part10.mov", "cam_P001.mov", regex=regex)

    [group] = result.groups
    assert group.part_numbers == (1, 2, 10)
    assert group.missing == tuple(range(3, 10))
    assert _reasons(result) == {"cam_P001.mov": StandaloneReason.NOT_A_PART}


def test_every_file_is_accounted_for_exactly_once():
    paths = ["x/a_P001.mp4", "x/a_P002.mp4", "x/b_P001.mp4", "x/c.mp4", "y/a_P001.mp4"]
    result = _group(*paths)

    grouped = [p.file.remote_path for g in result.groups for p in g.parts]
    alone = [s.file.remote_path for s in result.standalone]
    assert sorted(grouped + alone) == sorted(paths)


# --- keys ---------------------------------------------------------------------------------------


def test_group_key_is_short_stable_and_case_insensitive_on_extension():
    key = group_key("rec", "talk", ".mp4")
    assert re.fullmatch(r"[0-9a-f]{16}", key)
    assert key == group_key("rec", "talk", ".MP4")
    assert key != group_key("rec", "talk", ".wav")
    assert key != group_key("rec", "Talk", ".mp4")
    # No separator trick makes two tuples collide.
    assert group_key("a", "b_c", ".mp4") != group_key("a_b", "c", ".mp4")


def test_output_name():
    assert output_name("talk", ".mp4") == "talk.mp4"


FP1, FP2, FP3 = "1" * 32, "2" * 32, "3" * 32


def test_group_fingerprint_is_deterministic_and_imohash_shaped():
    fp = group_fingerprint([FP1, FP2, FP3])
    assert fp == group_fingerprint((FP1, FP2, FP3))
    assert re.fullmatch(r"[0-9a-f]{32}", fp)


def test_group_fingerprint_depends_on_order_and_membership():
    fp = group_fingerprint([FP1, FP2, FP3])
    assert fp != group_fingerprint([FP2, FP1, FP3])
    assert fp != group_fingerprint([FP1, FP2])
    assert fp != group_fingerprint([FP1, FP2, FP3, FP3])


def test_group_fingerprint_never_equals_a_part_fingerprint(tmp_path):
    part = tmp_path / "talk_P001.wav"
    part.write_bytes(b"RIFF" + bytes(range(256)) * 10)
    fingerprint = imohash_path(part)

    assert group_fingerprint([fingerprint]) != fingerprint


def test_group_fingerprint_rejects_bad_input():
    with pytest.raises(ValueError, match="at least one"):
        group_fingerprint([])
    with pytest.raises(ValueError, match="invalid part fingerprint"):
        group_fingerprint([FP1, ""])


# --- readiness and the wait counter --------------------------------------------------------------


def test_complete_group_is_ready_at_once():
    assert group_ready(True, wait_scans=0, multipart_wait_scans=3)


def test_incomplete_group_waits_exactly_multipart_wait_scans():
    wait_scans, ready_after = 0, None
    for scan in range(1, 10):
        wait_scans += 1  # each scan that sees the group incomplete
        if group_ready(False, wait_scans, multipart_wait_scans=3):
            ready_after = scan
            break
    assert ready_after == 3


def test_zero_wait_scans_stitches_incomplete_groups_at_once():
    assert group_ready(False, wait_scans=0, multipart_wait_scans=0)


def test_failures_do_not_count_as_waiting():
    # The original kept the wait in retry_count: a part that failed three times looked as if its
    # group had waited three scans and was stitched truncated. Readiness takes only the wait
    # counter: after one waiting scan (however often a part failed) the group still waits.
    part_rows = [{"retry_count": 3, "wait_scans": 1}, {"retry_count": 0, "wait_scans": 1}]
    wait_scans = group_wait_scans(row["wait_scans"] for row in part_rows)
    assert not group_ready(False, wait_scans, multipart_wait_scans=3)


def test_group_wait_scans_keeps_the_longest_wait():
    assert group_wait_scans([2, 0, 1]) == 2  # a late part (0) does not reset the group's wait
    assert group_wait_scans([]) == 0


@pytest.mark.parametrize("pattern", [
    r"^(a+)+(\d)(x)$",  # 12.5 s on a 28-character name before it was refused
    r"^(a|a)*(\d)(x)$",
    r"^(\w+\s?)*(\d)(x)$",
    r"^(.*)(.*)(.*).*_P\d+\.mp4$",
])
def test_a_regex_that_could_backtrack_for_long_is_refused(pattern):
    with pytest.raises(MultipartRegexError, match=r"quantifier|alternation"):
        compile_part_regex(pattern)


def test_names_longer_than_the_cap_are_never_parts():
    regex = compile_part_regex(DEFAULT_MULTIPART_REGEX)
    suffix = "_P001.mp4"
    at_cap = "a" * (MAX_PART_NAME_LENGTH - len(suffix)) + suffix
    assert parse_part(regex, "folder/" + at_cap) == PartName("a" * (255 - len(suffix)), 1, ".mp4")
    assert parse_part(regex, "b" + at_cap) is None
    assert parse_part(regex, "x" * 5000 + suffix) is None
