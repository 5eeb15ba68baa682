"""Choosing what to import: one request per fingerprint, held-back slots, lost requests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from watch_pipeline.catalog import queries
from watch_pipeline.catalog.models import WatchSourceFile
from watch_pipeline.catalog.sources import create_source
from watch_pipeline.pipeline import claims

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def _rows(catalog, *specs):
    with catalog.session() as s:
        src = create_source(s, None, fields={"name": "w", "source_type": "local",
                                             "local_path": "."})
        for path, fp, status in specs:
            s.add(WatchSourceFile(watch_source_id=src.id, remote_path=path, filename=path,
                                  imohash=fp, status=status, created_at=NOW))
        return src.id


def test_one_request_per_fingerprint_within_the_slots(any_catalog):
    sid = _rows(any_catalog, ("a", "f1", "pending"), ("b", "f1", "pending"),
                ("c", "f2", "pending"), ("d", "f3", "pending"))
    got = claims.claim_imports(any_catalog, [sid], slots=2, now=NOW)
    assert [r.fingerprint for r in got] == ["f1", "f2"]
    assert [r.run_key for r in got] == ["f1", "f2"]
    # claimed rows are not requested again; the held-back one goes out next
    assert [r.fingerprint for r in claims.claim_imports(any_catalog, [sid], slots=5,
                                                         now=NOW)] == ["f3"]
    assert claims.claim_imports(any_catalog, [sid], slots=0, now=NOW) == []


def test_a_request_lost_with_the_daemon_is_sent_again(sqlite_catalog):
    sid = _rows(sqlite_catalog, ("a", "f1", "pending"))
    (first,) = claims.claim_imports(sqlite_catalog, [sid], slots=5, now=NOW)
    later = NOW + timedelta(seconds=120)
    # a run exists for the key: nothing to do
    assert claims.claim_imports(sqlite_catalog, [sid], slots=5, now=later,
                                 run_exists=lambda key: True) == []
    # no run was ever created (the daemon stopped after the tick): same key again
    (again,) = claims.claim_imports(sqlite_catalog, [sid], slots=5, now=later,
                                     run_exists=lambda key: False)
    assert again.run_key == first.run_key


def test_failed_fingerprint_gets_a_new_key(sqlite_catalog):
    sid = _rows(sqlite_catalog, ("a", "f1", "pending"))
    (first,) = claims.claim_imports(sqlite_catalog, [sid], slots=5, now=NOW)
    queries.begin_import(sqlite_catalog, "f1")
    assert claims.fail(sqlite_catalog, "f1", "boom", now=NOW) == 1
    assert claims.claim_imports(sqlite_catalog, [sid], slots=5, now=NOW) == []  # backoff
    (retry,) = claims.claim_imports(sqlite_catalog, [sid], slots=5,
                                     now=NOW + timedelta(minutes=2))
    assert retry.fingerprint == "f1" and retry.run_key != first.run_key
