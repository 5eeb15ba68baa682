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
    SkipReason,
    UTCDateTime,
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


def test_migrations_match_the_models(any_catalog):
    """Alembic's autogenerate finds nothing to add: the migrations build exactly the models."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from watch_pipeline.catalog.models import Base

    with any_catalog.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


@pytest.mark.parametrize("reason", [r.value for r in SkipReason])
def test_every_skip_reason_is_admitted(any_catalog, reason):
    with any_catalog.session() as s:
        src = _source()
        s.add(src)
        s.flush()
        s.add(WatchSourceFile(watch_source_id=src.id, remote_path="x", filename="x",
                              status=FileStatus.SKIPPED_INVALID, skip_reason=reason))
    with any_catalog.session() as s:
        assert s.scalar(sa.select(WatchSourceFile.skip_reason)) == reason


def test_one_media_row_per_partition(any_catalog):
    with any_catalog.session() as s:
        s.add(MediaFile(title="a", filename="a.mp4", partition_key="p" * 32))
        s.add(MediaFile(title="n", filename="n.mp4"))  # no partition: not limited
        s.add(MediaFile(title="m", filename="m.mp4"))
    with pytest.raises(sa.exc.IntegrityError), any_catalog.session() as s:
        s.add(MediaFile(title="b", filename="b.mp4", partition_key="p" * 32))


def test_insecure_smtp_auth_is_off_unless_set(any_catalog):
    with any_catalog.engine.begin() as conn:  # a row written without the column (old code)
        conn.execute(sa.text("INSERT INTO email_notification_config (name, provider, "
                             "is_enabled, from_address, default_recipients, smtp_use_tls, "
                             "created_at) VALUES ('old', 'smtp', true, 'a@b.example', '[]', "
                             "true, CURRENT_TIMESTAMP)"))
    with any_catalog.session() as s:
        assert s.scalar(sa.select(EmailNotificationConfig)).smtp_allow_insecure_auth is False


@pytest.fixture(params=["sqlite", "postgres"])
def empty_engine(request, tmp_path):
    """An engine on an empty database, once SQLite and once PostgreSQL (no migration run)."""
    from watch_pipeline.catalog.db import create_catalog_engine

    url = (f"sqlite:///{tmp_path / 'old.sqlite'}" if request.param == "sqlite"
           else request.getfixturevalue("postgres_url"))
    engine = create_catalog_engine(url)
    yield engine
    engine.dispose()


def test_upgrade_to_0007_keeps_one_media_row_per_partition(empty_engine):
    """Duplicates made before 0007: the newest stored, non-error row keeps the partition; the
    others keep their rows and file links but no longer claim it."""
    from watch_pipeline.catalog.db import upgrade

    upgrade(empty_engine, "0006")
    media = sa.table("media_file", sa.column("id"), sa.column("title"), sa.column("filename"),
                     sa.column("partition_key"), sa.column("status"), sa.column("object_key"),
                     sa.column("origin"), sa.column("owner_id"),
                     sa.column("collections", sa.JSON), sa.column("tags", sa.JSON),
                     sa.column("created_at", UTCDateTime), sa.column("updated_at", UTCDateTime))
    now = datetime(2026, 12, 1, tzinfo=UTC)
    rows = [  # id: (status, object_key)
        (1, "completed", "user_1/file_1/a.wav"),  # stored, older
        (2, "completed", "user_1/file_2/a.wav"),  # stored, newest non-error: kept
        (3, "error", None),                       # newest, but a failed attempt
        (4, "processing", None),                  # another partition, alone
    ]
    with empty_engine.begin() as conn:
        conn.execute(media.insert(), [
            {"id": i, "title": "a", "filename": "a.wav", "status": status, "object_key": key,
             "partition_key": "q" * 32 if i == 4 else "p" * 32, "origin": "watch",
             "owner_id": 1, "collections": [], "tags": [], "created_at": now,
             "updated_at": now} for i, status, key in rows])
        conn.execute(sa.text("INSERT INTO watch_source (id, name, source_type, is_enabled, "
                             "owner_id, delete_after_import, s3_use_ssl, smb_port, "
                             "polling_interval_minutes, use_fs_events, file_extensions, "
                             "recursive, auto_transcribe, min_speakers, max_speakers, "
                             "collections, tags, multipart_enabled, multipart_regex, "
                             "multipart_time_window_hours, multipart_wait_scans, "
                             "upload_stitched_to_source, total_files_imported, created_at, "
                             "updated_at) VALUES (1, 's', 'local', true, 1, false, true, 445, "
                             "15, false, '[]', true, true, 1, 20, '[]', '[]', false, 'x', 24, "
                             "3, false, 0, :now, :now)"), {"now": now})
        for media_id in (1, 2, 3):
            conn.execute(sa.text(
                "INSERT INTO watch_source_file (watch_source_id, remote_path, filename, status, "
                "media_file_id, retry_count, wait_scans, created_at) VALUES (1, :p, :p, "
                "'imported', :m, 0, 0, :now)"), {"p": f"f{media_id}.wav", "m": media_id,
                                                 "now": now})
    upgrade(empty_engine)
    with empty_engine.connect() as conn:
        keys = dict(conn.execute(sa.text("SELECT id, partition_key FROM media_file")).all())
        links = dict(conn.execute(sa.text(
            "SELECT remote_path, media_file_id FROM watch_source_file")).all())
    assert keys == {1: None, 2: "p" * 32, 3: None, 4: "q" * 32}
    assert links == {"f1.wav": 1, "f2.wav": 2, "f3.wav": 3}
