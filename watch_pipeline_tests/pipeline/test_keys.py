"""Readable media partition keys: what a person types in the UI's filter finds the file."""

from __future__ import annotations

import dagster as dg
import pytest

from watch_pipeline.pipeline.keys import (
    MAX_KEY_LENGTH,
    MAX_SLUG_LENGTH,
    fingerprint_of,
    media_partition_key,
    slug,
)

FP = "a4b6094a52720c0123456789abcdef01"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Board Meeting 2026.wav", "board-meeting-2026"),
        ("reading.wav", "reading"),
        ("meeting_P001.MP4", "meeting-p001"),
        ("Ünïcødé Straße \u2013 Café.mp3", "unicode-strasse-cafe"),
        ("inbox/2026/Zoom Call (final).m4a", "zoom-call-final"),
        ("C:\\Users\\x\\Foo_Bar.WAV", "foo-bar"),
        ("archive.tar.gz", "archive-tar"),
        ("notes", "notes"),
        (".hidden", "hidden"),
        ("日本語.wav", ""),
        ("___.wav", ""),
    ],
)
def test_slug_reads_as_the_file_name(name: str, expected: str) -> None:
    assert slug(name) == expected


def test_key_is_slug_then_fingerprint() -> None:
    assert media_partition_key("Board Meeting 2026.wav", FP) == f"board-meeting-2026-{FP}"
    assert media_partition_key("reading.wav", FP) == f"reading-{FP}"


def test_unreadable_name_keeps_the_bare_fingerprint() -> None:
    assert media_partition_key("日本語.wav", FP) == FP
    assert media_partition_key("---.mp3", FP) == FP


def test_long_names_are_cut_at_a_word_and_fit_the_catalog_column() -> None:
    name = "The quick brown fox jumps over the lazy dog, again and again.mp4"
    key = media_partition_key(name, FP)
    assert key == f"the-quick-brown-fox-jumps-over-{FP}"
    assert len(key) <= MAX_KEY_LENGTH
    one_word = media_partition_key("x" * 500 + ".wav", FP)
    assert one_word == "x" * MAX_SLUG_LENGTH + "-" + FP
    assert len(one_word) == MAX_KEY_LENGTH


@pytest.mark.parametrize(
    "name",
    ["a...b.wav", "tab\there.wav", "new\nline.wav", "nul\0.wav", "a, b [1].wav", "é" * 80],
)
def test_keys_hold_only_characters_dagster_and_the_ui_accept(name: str) -> None:
    key = media_partition_key(name, FP)
    # A static partition set runs Dagster's own check of partition-key substrings.
    assert dg.StaticPartitionsDefinition([key]).get_partition_keys() == [key]
    assert set(key) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")
    assert not key.startswith("-")
    assert "--" not in key


@pytest.mark.parametrize(
    "key", [FP, f"reading-{FP}", f"board-meeting-2026-{FP}", f"{'0' * 32}-{FP}"]
)
def test_fingerprint_of_reads_new_and_old_keys(key: str) -> None:
    assert fingerprint_of(key) == FP


@pytest.mark.parametrize("key", ["", "reading", f"Reading-{FP}", f"-{FP}", FP[:-1], FP.upper()])
def test_fingerprint_of_refuses_other_strings(key: str) -> None:
    with pytest.raises(ValueError, match="not a media partition key"):
        fingerprint_of(key)


def test_a_non_fingerprint_is_refused() -> None:
    with pytest.raises(ValueError, match="not a fingerprint"):
        media_partition_key("reading.wav", "not-hex")
