"""Files brought by hand go through the watch pipeline in-process: the local watch sensor claims
them, the same assets import them once, and a copy arriving the other way is
``duplicate_existing``. ``manual_import_job`` refuses paths outside ``WATCH_IMPORT_ROOT``."""

from __future__ import annotations

import shutil

import pytest

from watch_pipeline.catalog.models import FileStatus, SkipReason
from watch_pipeline.defs.manual import ManualImportResource, manual_import_job
from watch_pipeline.pipeline import manual
from watch_pipeline.sources import http
from watch_pipeline_tests.defs.harness import (
    add_source,
    age,
    files,
    media_rows,
    rewind_scans,
    run_request,
    tick,
)
from watch_pipeline_tests.fakes import tone_wav

BY_HAND = manual.ManualOptions(owner_id=3, collections=("board",), tags=("minutes",),
                               auto_transcribe=False)
LIMITS = http.DownloadLimits(max_bytes=10 * 1024 * 1024, timeout_seconds=10, max_redirects=3)


def _import_claimed(env):
    """One sensor tick, then every run it asked for; returns the run requests."""
    requests, _skip = tick(env)
    for request in requests:
        assert run_request(env, request).success
    return requests


def _by_path(env, suffix):
    return next(row for path, row in files(env).items() if path.endswith(suffix))


def test_by_hand_first_then_watched_imports_once(env, tmp_path):
    add_source(env, auto_transcribe=False)
    hand = tmp_path / "desk" / "Board Meeting.wav"
    hand.parent.mkdir()
    hand.write_bytes(tone_wav(440, seconds=1))

    arrival = manual.register_path(env["catalog"], hand, options=BY_HAND)
    assert arrival.outcome == "queued"
    (request,) = _import_claimed(env)
    assert request.partition_key == arrival.partition_key
    (media,) = media_rows(env)
    assert (media.origin, media.owner_id, media.collections, media.tags) == (
        "upload", 3, ["board"], ["minutes"])
    assert media.watch_source_id is None and media.status == "completed"
    assert media.object_key.startswith(f"user_3/file_{media.id}/Board Meeting.wav")
    assert _by_path(env, "desk/Board Meeting.wav").status == FileStatus.IMPORTED
    assert hand.exists()  # a file brought by hand is never deleted

    shutil.copyfile(hand, env["watch"] / "copy.wav")
    age(env["watch"] / "copy.wav")
    rewind_scans(env)
    assert _import_claimed(env) == []
    watched = files(env)["copy.wav"]
    assert (watched.status, watched.skip_reason, watched.media_file_id) == (
        FileStatus.SKIPPED_DUPLICATE, SkipReason.DUPLICATE_EXISTING, media.id)
    assert len(media_rows(env)) == 1


def test_watched_first_then_by_hand_imports_once(env, tmp_path):
    add_source(env, auto_transcribe=False)
    (env["watch"] / "talk.wav").write_bytes(tone_wav(660, seconds=1))
    age(env["watch"] / "talk.wav")
    assert len(_import_claimed(env)) == 1
    (media,) = media_rows(env)
    assert media.origin == "watch"

    hand = tmp_path / "talk copy.wav"
    shutil.copyfile(env["watch"] / "talk.wav", hand)
    arrival = manual.register_path(env["catalog"], hand, options=BY_HAND)
    assert (arrival.outcome, arrival.skip_reason, arrival.media_id) == (
        "duplicate", SkipReason.DUPLICATE_EXISTING, media.id)
    row = _by_path(env, "talk copy.wav")
    assert (row.status, row.origin) == (FileStatus.SKIPPED_DUPLICATE, "upload")
    assert _import_claimed(env) == [] and len(media_rows(env)) == 1


def test_a_url_is_downloaded_imported_and_its_staged_copy_removed(env, http_server):
    add_source(env, auto_transcribe=False)
    body = tone_wav(550, seconds=1)
    http_server.route("/rec/interview.wav", body, drops=1, drop_after=9_000)
    scratch = env["resources"]["sources"].scratch()
    arrival = manual.register_url(env["catalog"], http_server.url("/rec/interview.wav?t=1"),
                                  scratch=scratch, options=BY_HAND, limits=LIMITS)
    assert (arrival.outcome, arrival.origin, arrival.filename) == ("queued", "url",
                                                                   "interview.wav")
    assert arrival.path == http_server.url("/rec/interview.wav") + "?…"
    staged = list((scratch / manual.STAGING_FOLDER).rglob("interview.wav"))
    assert len(staged) == 1 and staged[0].read_bytes() == body

    _import_claimed(env)
    (media,) = media_rows(env)
    assert media.origin == "url" and media.filename == "interview.wav"
    assert not staged[0].exists()  # removed once stored

    # the same URL again: downloaded, recognised, not kept
    again = manual.register_url(env["catalog"], http_server.url("/rec/interview.wav?t=1"),
                                scratch=scratch, options=BY_HAND, limits=LIMITS)
    assert again.outcome in ("already_imported", "duplicate")
    assert list((scratch / manual.STAGING_FOLDER).rglob("interview.wav")) == []
    assert len(media_rows(env)) == 1


# -- manual_import_job -------------------------------------------------------------------------

def _launch(env, root, **config):
    resources = {**env["resources"], "manual_import": ManualImportResource(
        import_root=str(root))}
    return manual_import_job.execute_in_process(
        run_config={"ops": {"manual_import": {"config": config}}}, resources=resources,
        instance=env["instance"], raise_on_error=False)


def _failure(result):
    (event,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    return event.step_failure_data.error.message


def test_the_job_refuses_a_path_outside_the_import_root(env, tmp_path):
    root = tmp_path / "imports"
    root.mkdir()
    secret = tmp_path / "private.wav"
    secret.write_bytes(tone_wav(770, seconds=1))
    (root / "sneaky.wav").symlink_to(secret)
    for given in (str(secret), "../private.wav", "sneaky.wav"):
        result = _launch(env, root, path=given)
        assert not result.success
        assert "outside the import root" in _failure(result)
    assert files(env) == {}  # nothing was registered


def test_the_job_queues_a_file_below_the_import_root(env, tmp_path):
    add_source(env, auto_transcribe=False)
    root = tmp_path / "imports"
    (root / "team").mkdir(parents=True)
    (root / "team" / "standup.wav").write_bytes(tone_wav(990, seconds=1))
    result = _launch(env, root, path="team/standup.wav", owner=5, tags=["daily"],
                     transcribe=False)
    assert result.success
    (event,) = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    assert event.event_specific_data.metadata["outcome"].value == "queued"
    _import_claimed(env)
    (media,) = media_rows(env)
    assert (media.origin, media.owner_id, media.tags) == ("upload", 5, ["daily"])


@pytest.mark.parametrize(("config", "message"), [
    ({}, "exactly one of path and url"),
    ({"path": "a.wav", "url": "http://example.org/a.wav"}, "exactly one of path and url"),
    ({"url": "http://user:pw@example.org/a.wav"}, "user name or password"),
    ({"url": "ftp://example.org/a.wav"}, "only http and https"),
])
def test_the_job_refuses_bad_config(env, tmp_path, config, message):
    result = _launch(env, tmp_path, **config)
    assert not result.success and message in _failure(result)


def test_without_an_import_root_the_job_takes_no_path(env, tmp_path):
    resources = {**env["resources"], "manual_import": ManualImportResource()}
    result = manual_import_job.execute_in_process(
        run_config={"ops": {"manual_import": {"config": {"path": "a.wav"}}}},
        resources=resources, instance=env["instance"], raise_on_error=False)
    assert not result.success and "WATCH_IMPORT_ROOT is not set" in _failure(result)

