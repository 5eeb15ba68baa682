"""Source validation at the service layer (the CLI is only one caller)."""

from __future__ import annotations

import pytest

from watch_pipeline.catalog.crud import NotFoundError
from watch_pipeline.catalog.settings import WatchSettings, get_setting, set_setting
from watch_pipeline.catalog.sources import (
    create_source,
    find_source,
    source_to_dict,
    update_source,
)
from watch_pipeline.catalog.validation import ValidationError

LOCAL = {"name": "cam", "source_type": "local", "local_path": "cams/a"}


def _create(catalog, box=None, secret=None, **fields):
    with catalog.session() as s:
        return source_to_dict(create_source(s, box, fields={**LOCAL, **fields}, secret=secret))


@pytest.mark.parametrize(("fields", "field", "rule"), [
    ({"name": ""}, "name", "1-200"),
    ({"name": "x" * 201}, "name", "1-200"),
    ({"polling_interval_minutes": 0}, "polling_interval_minutes", "between 1 and 1440"),
    ({"polling_interval_minutes": 1441}, "polling_interval_minutes", "between 1 and 1440"),
    ({"min_speakers": 0}, "min_speakers", "between 1 and 20"),
    ({"max_speakers": 21}, "max_speakers", "between 1 and 20"),
    ({"min_speakers": 4, "max_speakers": 3}, "min_speakers", "must not exceed"),
    ({"local_path": "../up"}, "local_path", "'..'"),
    ({"local_path": "a/../../b"}, "local_path", "'..'"),
    ({"local_path": "/abs"}, "local_path", "relative"),
    ({"local_path": ""}, "local_path", "required"),
    ({"multipart_regex": "(a"}, "multipart_regex", "does not compile"),
    ({"multipart_regex": r"^(.+)_P(\d+)$"}, "multipart_regex", "exactly 3 groups"),
    ({"file_extensions": ["mp4", "bad ext"]}, "file_extensions", "not a file extension"),
    ({"skip_files_older_than_days": 0}, "skip_files_older_than_days", "between"),
    ({"source_type": "ftp"}, "source_type", "one of"),
    ({"s3_bucket_name": "b"}, "s3_bucket_name", "only applies to s3"),
    ({"smb_domain": "CORP"}, "smb_domain", "only applies to smb"),
    ({"multipart_regex": r"^(a+)+(\d)(x)$"}, "multipart_regex", "nested quantifier"),
    ({"multipart_regex": r"^(a|ab)*(\d)(x)$"}, "multipart_regex", "alternation"),
    ({"name": "cam\x1b[31m"}, "name", "control characters"),
    ({"local_path": "cams/\x07"}, "local_path", "control characters"),
    ({"local_path": "d" * 1025}, "local_path", "at most 1024 characters"),
    ({"tags": ["ok", "b\rad"]}, "tags", "control characters"),
])
def test_rules(sqlite_catalog, fields, field, rule):
    with pytest.raises(ValidationError) as info:
        _create(sqlite_catalog, **fields)
    assert info.value.field == field
    assert rule in info.value.rule


def test_normalisation(sqlite_catalog):
    data = _create(sqlite_catalog, name="  cam  ", file_extensions="MP4, .Wav,mp4",
                   tags=" a ,b,a", local_path="cams//a/")
    assert data["name"] == "cam"
    assert data["file_extensions"] == [".mp4", ".wav"]
    assert data["tags"] == ["a", "b"]
    assert data["local_path"] == "cams/a"


def test_name_unique_with_clear_rule(sqlite_catalog):
    _create(sqlite_catalog)
    with pytest.raises(ValidationError, match="must be unique"):
        _create(sqlite_catalog)


def test_type_is_immutable_and_updates_are_validated(any_catalog):
    _create(any_catalog)
    with any_catalog.session() as s:
        src = find_source(s, "cam")
        with pytest.raises(ValidationError, match="cannot be changed"):
            update_source(s, None, src, fields={"source_type": "s3"})
    with any_catalog.session() as s:
        src = find_source(s, "cam")
        update_source(s, None, src, fields={"polling_interval_minutes": 5})
    with any_catalog.session() as s:
        assert find_source(s, "1").polling_interval_minutes == 5


def test_find_by_id_or_name(sqlite_catalog):
    data = _create(sqlite_catalog)
    with sqlite_catalog.session() as s:
        assert find_source(s, str(data["id"])).name == "cam"
        with pytest.raises(NotFoundError):
            find_source(s, "nope")


@pytest.mark.parametrize(("fields", "field"), [
    ({"s3_bucket_name": "UPPER"}, "s3_bucket_name"),
    ({"s3_bucket_name": "ok-bucket", "s3_endpoint_url": "ftp://x"}, "s3_endpoint_url"),
    ({"s3_bucket_name": "ok-bucket", "s3_prefix": "/abs"}, "s3_prefix"),
    ({"s3_bucket_name": "ok-bucket", "s3_prefix": "a/../b"}, "s3_prefix"),
])
def test_s3_rules(sqlite_catalog, fields, field):
    with pytest.raises(ValidationError) as info, sqlite_catalog.session() as s:
        create_source(s, None, fields={"name": "b", "source_type": "s3", **fields})
    assert info.value.field == field


@pytest.mark.parametrize(("fields", "field"), [
    ({"smb_share": "m"}, "smb_server"),
    ({"smb_server": "h"}, "smb_share"),
    ({"smb_server": "h", "smb_share": "a/b"}, "smb_share"),
    ({"smb_server": "h", "smb_share": "m", "smb_path": "/a/../b"}, "smb_path"),
    ({"smb_server": "h", "smb_share": "m", "smb_port": 70000}, "smb_port"),
])
def test_smb_rules(sqlite_catalog, fields, field):
    with pytest.raises(ValidationError) as info, sqlite_catalog.session() as s:
        create_source(s, None, fields={"name": "sh", "source_type": "smb", **fields})
    assert info.value.field == field


def test_secret_is_stored_encrypted_and_reported_as_has_secret(any_catalog, box):
    with any_catalog.session() as s:
        src = create_source(s, box, fields={"name": "sh", "source_type": "smb",
                                            "smb_server": "h", "smb_share": "m"}, secret="pw!")
        assert src.encrypted_smb_password.startswith("v1:")
        data = source_to_dict(src)
    assert data["has_secret"] is True
    assert not any(k.startswith("encrypted_") for k in data)


def test_settings_defaults_and_validation(any_catalog):
    with any_catalog.session() as s:
        assert get_setting(s, "watch.file_stability_seconds") == 30
        assert set_setting(s, "watch.enabled", "false") is False
        assert set_setting(s, "watch.max_concurrent_imports", "7") == 7
        with pytest.raises(ValidationError, match="at least 1"):
            set_setting(s, "watch.max_concurrent_imports", 0)
        with pytest.raises(ValidationError, match="integer"):
            set_setting(s, "watch.file_stability_seconds", "soon")
        with pytest.raises(ValidationError, match="true or false"):
            set_setting(s, "watch.enabled", "maybe")
        with pytest.raises(ValidationError, match="unknown setting"):
            set_setting(s, "watch.colour", 1)
    with any_catalog.session() as s:
        snapshot = WatchSettings.load(s)
    assert snapshot.enabled is False and snapshot.max_concurrent_imports == 7
    assert snapshot.file_stability_seconds == 30 and snapshot.fs_events_enabled is True


@pytest.mark.parametrize(("fields", "field", "rule"), [
    ({"s3_region": "r" * 65}, "s3_region", "at most 64 characters"),
    ({"s3_prefix": "in\ncoming/"}, "s3_prefix", "control characters"),
    ({"s3_endpoint_url": "https://minio.example/" + "x" * 1010}, "s3_endpoint_url",
     "at most 1024"),
])
def test_s3_columns_hold_what_they_are_given(sqlite_catalog, fields, field, rule):
    s3 = {"name": "b", "source_type": "s3", "s3_bucket_name": "media-in"}
    with pytest.raises(ValidationError) as info, sqlite_catalog.session() as s:
        create_source(s, None, fields={**s3, **fields})
    assert (info.value.field, rule in info.value.rule) == (field, True)


@pytest.mark.parametrize("smb_path", ["/a:b", "/x*", "/q?", '/"q"', "/<a>", "/a|b"])
def test_smb_path_refuses_what_smb_refuses(sqlite_catalog, smb_path):
    smb = {"name": "s", "source_type": "smb", "smb_server": "files.example", "smb_share": "rec"}
    with pytest.raises(ValidationError, match="SMB refuses") as info, \
            sqlite_catalog.session() as s:
        create_source(s, None, fields={**smb, "smb_path": smb_path})
    assert info.value.field == "smb_path"


@pytest.mark.parametrize("fields", [
    {"source_type": "local", "local_path": "cams"},
    {"source_type": "s3", "s3_bucket_name": "rec-bucket"},
    {"source_type": "smb", "smb_server": "files.example", "smb_share": "rec"},
])
def test_every_source_type_takes_delete_after_import(sqlite_catalog, fields):
    with sqlite_catalog.session() as s:
        source = create_source(s, None, fields={"name": "del", **fields})
        assert source_to_dict(source)["delete_after_import"] is False
        update_source(s, None, source, fields={"delete_after_import": True})
        assert source_to_dict(find_source(s, "del"))["delete_after_import"] is True
        kept = create_source(s, None, fields={"name": "del2", **fields,
                                              "delete_after_import": True})
        assert source_to_dict(kept)["delete_after_import"] is True
