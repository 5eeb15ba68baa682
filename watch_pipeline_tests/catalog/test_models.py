"""Catalog round-trips and constraints, on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from watch_pipeline.catalog.db import current_revision, head_revision
from watch_pipeline.catalog.models import (
    EmailNotificationConfig,
    FileStatus,
    MediaFile,
    Setting,
    WatchSource,
    WatchSourceEmail,
    WatchSourceFile,
)


def _source(**kw) -> WatchSource:
    return WatchSource(**{"name": "src", "source_type": "local", "local_path": ".", **kw})


def test_schema_is_at_head(any_catalog):
    assert current_revision(any_catalog.engine) == head_revision()
    names = set(sa.inspect(any_catalog.engine).get_table_names())
    assert {"watch_source", "watch_source_file", "media_file", "email_notification_config",
            "watch_source_email", "settings"} <= names


def test_defaults_round_trip(any_catalog):
    with any_catalog.session() as s:
        s.add(_source())
    with any_catalog.session() as s:
        src = s.scalar(sa.select(WatchSource))
        assert src.is_enabled is True
        assert src.polling_interval_minutes == 15
        assert src.skip_files_older_than_days == 30
        assert src.min_speakers == 1 and src.max_speakers == 20
        assert src.file_extensions == [] and src.collections == [] and src.tags == []
        assert src.multipart_regex == r"^(.+?)_P(\d{3})(\.[^.]+)$"
        assert src.multipart_wait_scans == 3 and src.multipart_time_window_hours == 24
        assert src.smb_port == 445 and src.smb_path == "/" and src.s3_use_ssl is True
        assert src.created_at.tzinfo is not None


def test_lists_and_timestamps_round_trip(any_catalog):
    stamp = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    with any_catalog.session() as s:
        s.add(_source(file_extensions=[".mp4", ".wav"], tags=["a", "b"], last_scan_at=stamp))
    with any_catalog.session() as s:
        src = s.scalar(sa.select(WatchSource))
        assert src.file_extensions == [".mp4", ".wav"]
        assert src.tags == ["a", "b"]
        assert src.last_scan_at == stamp
        assert src.last_scan_at.tzinfo == UTC


def test_unique_source_name(any_catalog):
    with any_catalog.session() as s:
        s.add(_source())
    with pytest.raises(sa.exc.IntegrityError), any_catalog.session() as s:
        s.add(_source())


def test_unique_file_per_source_and_path(any_catalog):
    with any_catalog.session() as s:
        src = _source()
        s.add(src)
        s.flush()
        s.add(WatchSourceFile(watch_source_id=src.id, remote_path="a/b.mp4", filename="b.mp4"))
        source_id = src.id
    with pytest.raises(sa.exc.IntegrityError), any_catalog.session() as s:
        s.add(WatchSourceFile(watch_source_id=source_id, remote_path="a/b.mp4", filename="b.mp4"))


@pytest.mark.parametrize("bad", [
    {"polling_interval_minutes": 0},
    {"polling_interval_minutes": 1441},
    {"min_speakers": 5, "max_speakers": 2},
    {"max_speakers": 21},
    {"source_type": "ftp"},
    {"name": ""},
])
def test_check_constraints(any_catalog, bad):
    with pytest.raises(sa.exc.IntegrityError), any_catalog.session() as s:
        s.add(_source(**bad))


def test_file_status_constraint(any_catalog):
    with any_catalog.session() as s:
        src = _source()
        s.add(src)
        s.flush()
        source_id = src.id
    with pytest.raises(sa.exc.IntegrityError), any_catalog.session() as s:
        s.add(WatchSourceFile(watch_source_id=source_id, remote_path="x", filename="x",
                              status="lost"))
    with pytest.raises(sa.exc.IntegrityError), any_catalog.session() as s:
        s.add(WatchSourceFile(watch_source_id=source_id, remote_path="x", filename="x",
                              status="skipped_duplicate", skip_reason="bored"))


def test_deleting_a_source_keeps_media_and_drops_history(any_catalog):
    with any_catalog.session() as s:
        src = _source()
        s.add(src)
        s.flush()
        media = MediaFile(title="t", filename="t.mp4", imohash="0" * 32, watch_source_id=src.id)
        s.add(media)
        s.flush()
        s.add(WatchSourceFile(watch_source_id=src.id, remote_path="t.mp4", filename="t.mp4",
                              status=FileStatus.IMPORTED, media_file_id=media.id))
        cfg = EmailNotificationConfig(name="ops", provider="smtp", from_address="a@b.example")
        s.add(cfg)
        s.flush()
        s.add(WatchSourceEmail(watch_source_id=src.id, email_config_id=cfg.id))
    with any_catalog.session() as s:
        s.delete(s.scalar(sa.select(WatchSource)))
    with any_catalog.session() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(WatchSourceFile)) == 0
        assert s.scalar(sa.select(sa.func.count()).select_from(WatchSourceEmail)) == 0
        media = s.scalar(sa.select(MediaFile))
        assert media is not None and media.watch_source_id is None


def test_unique_email_link(any_catalog):
    with any_catalog.session() as s:
        src = _source()
        cfg = EmailNotificationConfig(name="ops", provider="m365", from_address="a@b.example")
        s.add_all([src, cfg])
        s.flush()
        s.add(WatchSourceEmail(watch_source_id=src.id, email_config_id=cfg.id))
        ids = (src.id, cfg.id)
    with pytest.raises(sa.exc.IntegrityError), any_catalog.session() as s:
        s.add(WatchSourceEmail(watch_source_id=ids[0], email_config_id=ids[1]))


def test_settings_json_value(any_catalog):
    with any_catalog.session() as s:
        s.add(Setting(key="watch.enabled", value=False))
    with any_catalog.session() as s:
        assert s.get(Setting, "watch.enabled").value is False


def test_indexes_exist(any_catalog):
    inspector = sa.inspect(any_catalog.engine)
    file_indexes = {tuple(ix["column_names"]) for ix in inspector.get_indexes("watch_source_file")}
    assert ("imohash",) in file_indexes
    assert ("watch_source_id", "imohash") in file_indexes
    assert ("part_group", "watch_source_id") in file_indexes
    assert ("status",) in file_indexes
    media_indexes = {tuple(ix["column_names"]) for ix in inspector.get_indexes("media_file")}
    assert ("imohash",) in media_indexes
