"""The pure scan planner: due-ness, filters, stability, dedup verdicts, retry backoff."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from watch_pipeline.pipeline import claims, dedup, plan
from watch_pipeline.pipeline.plan import Action, Seen

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
OLD = NOW - timedelta(hours=1)


def seen(**kw) -> Seen:
    base = dict(id=1, file_size=10, file_modified_at=OLD, etag=None, status="imported",
                imohash="f" * 32, stable_since=OLD)
    return Seen(**{**base, **kw})


def classify(s, size=10, mtime=OLD, etag=None, trust=True, stability=30, max_age=30):
    return plan.classify(s, size=size, mtime=mtime, etag=etag, now=NOW,
                             skip_older_than_days=max_age, stability_seconds=stability,
                             trust_mtime=trust)


def test_due():
    assert plan.is_due(None, 15, NOW)
    assert not plan.is_due(NOW - timedelta(minutes=14), 15, NOW)
    assert plan.is_due(NOW - timedelta(minutes=15), 15, NOW)


def test_extensions_and_age():
    assert plan.matches_extensions("A.MP4", [".mp4"])
    assert not plan.matches_extensions("a.mkv", [".mp4"])
    assert plan.matches_extensions("anything", [])
    assert plan.is_too_old(NOW - timedelta(days=31), 30, NOW)
    assert not plan.is_too_old(NOW - timedelta(days=31), None, NOW)


def test_new_files():
    assert classify(None) is Action.FINGERPRINT  # local, untouched for an hour
    assert classify(None, mtime=NOW - timedelta(seconds=5)) is Action.RECORD_NEW
    assert classify(None, trust=False) is Action.RECORD_NEW  # remote: needs a second listing
    assert classify(None, trust=False, stability=0) is Action.FINGERPRINT
    assert classify(None, mtime=NOW - timedelta(days=40)) is Action.TOO_OLD


def test_known_files():
    assert classify(seen()) is Action.NOTHING
    assert classify(seen(status="importing"), size=99) is Action.NOTHING  # a run owns it
    # replaced content at the same path is looked at again
    assert classify(seen(), size=11) is Action.FINGERPRINT
    assert classify(seen(), size=11, mtime=NOW) is Action.CHANGED
    assert classify(seen(), etag="new", trust=False) is Action.CHANGED
    # waiting for stability: remote needs the window since first sight
    waiting = seen(status="pending", imohash=None, stable_since=NOW - timedelta(seconds=10))
    assert classify(waiting, trust=False) is Action.NOTHING
    ripe = seen(status="pending", imohash=None, stable_since=NOW - timedelta(seconds=31))
    assert classify(ripe, trust=False) is Action.FINGERPRINT


def test_dedup_verdicts():
    fp = "a" * 32
    v = dedup.find_duplicate(content=fp, source_id=1, imported=dedup.ImportedCopy(1, 7),
                             existing_media_id=7)
    assert (v.reason, v.media_file_id) == ("duplicate_same_source", 7)
    v = dedup.find_duplicate(content=fp, source_id=1, imported=dedup.ImportedCopy(2, 7),
                             existing_media_id=7)
    assert v.reason == "duplicate_other_source" and "source 2" in v.message
    v = dedup.find_duplicate(content=fp, source_id=1, imported=None, existing_media_id=3)
    assert (v.reason, v.media_file_id) == ("duplicate_existing", 3)
    assert dedup.find_duplicate(content=fp, source_id=1, imported=None,
                                existing_media_id=None) is None


def test_retry_backoff_is_capped_and_then_held():
    assert claims.retry_delay(1) == timedelta(minutes=1)
    assert claims.retry_delay(3) == timedelta(minutes=4)
    assert claims.retry_delay(50) == timedelta(hours=1)
    assert claims.may_retry(1, NOW - timedelta(seconds=1), NOW)
    assert not claims.may_retry(1, NOW + timedelta(seconds=1), NOW)
    assert not claims.may_retry(claims.MAX_AUTOMATIC_RETRIES + 1, None, NOW)
