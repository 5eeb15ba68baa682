"""Registering files brought by hand: checks, the import root, dedup, and what the import reads."""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime

import pytest

from watch_pipeline.catalog import queries
from watch_pipeline.catalog.models import FileStatus, WatchSource
from watch_pipeline.catalog.settings import WatchSettings
from watch_pipeline.catalog.validation import ValidationError
from watch_pipeline.pipeline import claims, manual
from watch_pipeline.pipeline.fingerprint import imohash_path
from watch_pipeline.pipeline.keys import media_partition_key
from watch_pipeline.pipeline.scan import scan_due_sources
from watch_pipeline.sources.base import SourceError
from watch_pipeline.sources.connect import client_for_source
from watch_pipeline_tests.fakes import tone_wav

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
OPTIONS = manual.ManualOptions(owner_id=7, collections=("board", "board", " 2026 "),
                               tags=("minutes",), auto_transcribe=False)


def _wav(path, frequency=440):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tone_wav(frequency, seconds=0.5))
    return path


def test_a_file_is_queued_with_its_own_settings_and_origin(any_catalog, tmp_path):
    path = _wav(tmp_path / "hand" / "Board Meeting.wav")
    arrival = manual.register_path(any_catalog, path, options=OPTIONS)

    fingerprint = imohash_path(path)
    assert arrival.outcome == "queued" and arrival.status == "pending"
    assert arrival.path == str(path.resolve()) and arrival.origin == "upload"
    assert arrival.partition_key == media_partition_key("Board Meeting.wav", fingerprint)
    # The import rebuilds the arrival's settings from the catalog, not the source's defaults.
    item = queries.find_item(any_catalog, arrival.partition_key)
    assert (item.owner_id, item.collections, item.tags) == (7, ("board", "2026"), ("minutes",))
    assert item.auto_transcribe is False and item.delete_after_import is False
    assert item.origin == "upload" and item.remote_path == str(path.resolve()).lstrip("/")


def test_the_hidden_source_is_claimed_but_never_scanned(any_catalog, tmp_path):
    arrival = manual.register_path(any_catalog, _wav(tmp_path / "a.wav"), options=OPTIONS)
    with any_catalog.session() as s:
        sources = queries.enabled_sources(s, "local")
        row = s.get(WatchSource, sources[0].id)
        assert [x.manual for x in sources] == [True] and row.is_manual
    # a tick scans nothing (a scan of "/" would take forever) and the claim still takes it
    tick = scan_due_sources(any_catalog, sources, settings=WatchSettings(True, 0, 5, False),
                            client_for=lambda _s: pytest.fail("the manual source was scanned"),
                            budget_seconds=10, log=logging.getLogger("test"))
    assert tick.scanned == 0
    requests = claims.claim_imports(any_catalog, [s.id for s in sources], slots=5, now=NOW)
    assert [r.partition_key for r in requests] == [arrival.partition_key]
    # and its client refuses any listing
    with any_catalog.session() as s:
        client = client_for_source(s.get(WatchSource, sources[0].id), box=None,
                                   watch_folder=lambda: pytest.fail("no watch folder needed"))
    with pytest.raises(SourceError, match="never scanned"):
        client.list_files()
    remote = str(tmp_path.resolve() / "a.wav").lstrip("/")
    assert client.local_path(remote) == tmp_path.resolve() / "a.wav"


def test_the_same_file_again_is_already_queued_then_already_imported(sqlite_catalog, tmp_path):
    path = _wav(tmp_path / "a.wav")
    first = manual.register_path(sqlite_catalog, path, options=OPTIONS)
    again = manual.register_path(sqlite_catalog, path, options=OPTIONS)
    assert (again.outcome, again.file_id) == ("already_queued", first.file_id)
    with sqlite_catalog.session() as s:
        s.get(queries.WatchSourceFile, first.file_id).status = FileStatus.IMPORTED
    assert manual.register_path(sqlite_catalog, path, options=OPTIONS).outcome == \
        "already_imported"
    # new content at the same path is a new arrival of that path
    path.write_bytes(tone_wav(880, seconds=0.5))
    changed = manual.register_path(sqlite_catalog, path, options=OPTIONS)
    assert (changed.outcome, changed.file_id) == ("queued", first.file_id)
    assert changed.fingerprint == imohash_path(path)


def test_a_second_copy_brought_by_hand_is_duplicate_existing(sqlite_catalog, tmp_path):
    first = manual.register_path(sqlite_catalog, _wav(tmp_path / "a.wav"), options=OPTIONS)
    with sqlite_catalog.session() as s:  # as the import leaves it
        s.get(queries.WatchSourceFile, first.file_id).status = FileStatus.IMPORTED
        s.get(queries.WatchSourceFile, first.file_id).media_file_id = None
    copy = manual.register_path(sqlite_catalog, _wav(tmp_path / "copy.wav"), options=OPTIONS)
    assert (copy.outcome, copy.status, copy.skip_reason) == (
        "duplicate", "skipped_duplicate", "duplicate_existing")
    assert "already imported by hand" in copy.message


@pytest.mark.parametrize(("make", "message"), [
    (lambda p: p, "no such file"),
    (lambda p: (p.mkdir(), p)[1], "is a folder"),
    (lambda p: (p.write_bytes(b"just some text, not media" * 10), p)[1], "is not a media file"),
    (lambda p: (p.write_bytes(b""), p)[1], r"is not a media file \(file is empty"),
])
def test_what_is_not_a_readable_media_file_is_refused(sqlite_catalog, tmp_path, make, message):
    path = make(tmp_path / "thing.wav")
    with pytest.raises(manual.ManualImportError, match=message):
        manual.register_path(sqlite_catalog, path, options=OPTIONS)


def test_bad_options_are_refused(sqlite_catalog, tmp_path):
    with pytest.raises(ValidationError, match="tags"):
        manual.register_path(sqlite_catalog, _wav(tmp_path / "a.wav"),
                             options=manual.ManualOptions(tags=("x" * 101,)))


# -- the import root of the Dagster job --------------------------------------------------------

def test_paths_inside_the_import_root_resolve(tmp_path):
    root = tmp_path / "imports"
    path = _wav(root / "team" / "a.wav")
    assert manual.resolve_under_root(root, "team/a.wav") == path.resolve()
    assert manual.resolve_under_root(root, str(path)) == path.resolve()
    os.symlink(path, root / "link.wav")  # a link that stays inside is fine
    assert manual.resolve_under_root(root, "link.wav") == path.resolve()


@pytest.mark.parametrize("given", ["../secret.wav", "/etc/passwd", "escape/secret.wav",
                                   "escape.wav", "", "."])
def test_paths_outside_the_import_root_are_refused(tmp_path, given):
    root = tmp_path / "imports"
    root.mkdir()
    secret = _wav(tmp_path / "secret.wav")
    os.symlink(tmp_path, root / "escape")  # a folder link leading out
    os.symlink(secret, root / "escape.wav")  # a file link leading out
    with pytest.raises(manual.ManualImportError, match=r"import root"):
        manual.resolve_under_root(root, given)


def test_the_opened_file_itself_must_lie_below_the_root(sqlite_catalog, tmp_path):
    root = tmp_path / "imports"
    root.mkdir()
    outside = _wav(tmp_path / "outside.wav")
    with pytest.raises(manual.ManualImportError, match="outside the import root"):
        manual.register_path(sqlite_catalog, outside, options=OPTIONS, within=root)
    inside = _wav(root / "inside.wav")
    assert manual.register_path(sqlite_catalog, inside, options=OPTIONS,
                                within=root).outcome == "queued"


def test_no_import_root_means_no_paths(tmp_path):
    with pytest.raises(manual.ManualImportError, match="WATCH_IMPORT_ROOT is not set"):
        manual.resolve_under_root(None, "a.wav")
