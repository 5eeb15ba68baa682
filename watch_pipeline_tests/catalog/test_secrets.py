"""Secrets: AES-256-GCM round trip, tampering, wrong key, row binding, key files, rotation."""

from __future__ import annotations

import base64
import os
import stat

import pytest
import sqlalchemy as sa

from watch_pipeline.catalog import keys
from watch_pipeline.catalog.models import EmailNotificationConfig, WatchSource
from watch_pipeline.catalog.secrets import (
    KeyConfig,
    SecretBox,
    SecretDecryptError,
    SecretKeyError,
    generate_key,
    load_key,
    parse_key,
)
from watch_pipeline.catalog.sources import create_source, source_secret

WHERE = {"table": "watch_source", "row_id": 7, "column": "encrypted_smb_password"}


def test_round_trip_and_fresh_nonce(box):
    a = box.encrypt("pässword", **WHERE)
    b = box.encrypt("pässword", **WHERE)
    assert a != b  # a new nonce every time
    assert "pässword" not in a
    assert box.decrypt(a, **WHERE) == "pässword"
    assert a.startswith(f"v1:{box.key_id}:")


def test_tampered_value_fails(box):
    stored = box.encrypt("secret", **WHERE)
    version, kid, blob = stored.split(":", 2)
    raw = bytearray(base64.b64decode(blob))
    raw[-1] ^= 1
    tampered = f"{version}:{kid}:{base64.b64encode(bytes(raw)).decode()}"
    with pytest.raises(SecretDecryptError, match="authentication failed"):
        box.decrypt(tampered, **WHERE)


def test_wrong_key_is_named_not_garbage(box):
    stored = box.encrypt("secret", **WHERE)
    other = SecretBox(parse_key(generate_key(), origin="k"))
    with pytest.raises(SecretDecryptError) as info:
        other.decrypt(stored, **WHERE)
    message = str(info.value)
    assert "watch_source row 7 column encrypted_smb_password" in message
    assert box.key_id in message and "secret" not in message.replace("encrypted_", "")


def test_value_copied_to_another_row_or_column_fails(box):
    stored = box.encrypt("secret", **WHERE)
    with pytest.raises(SecretDecryptError, match="another row"):
        box.decrypt(stored, table="watch_source", row_id=8, column="encrypted_smb_password")
    with pytest.raises(SecretDecryptError):
        box.decrypt(stored, table="watch_source", row_id=7, column="encrypted_s3_secret_key")


def test_malformed_keys_are_rejected():
    with pytest.raises(SecretKeyError, match="not valid base64"):
        parse_key("***", origin="WATCH_SECRET_KEY")
    with pytest.raises(SecretKeyError, match="32 bytes"):
        parse_key(base64.b64encode(b"short").decode(), origin="WATCH_SECRET_KEY")


def _env_config() -> KeyConfig:
    return KeyConfig.from_environ(os.environ)


def test_key_file_created_0600_on_first_use(dagster_home):
    key, source = load_key(_env_config())
    assert source.kind == "file"
    assert stat.S_IMODE(os.stat(source.path).st_mode) == 0o600
    again, _ = load_key(_env_config())
    assert again == key


def test_env_key_wins(dagster_home, monkeypatch):
    value = generate_key()
    monkeypatch.setenv("WATCH_SECRET_KEY", value)
    key, source = load_key(_env_config())
    assert source.kind == "env" and key == parse_key(value, origin="x")
    assert value not in repr(_env_config())
    assert not os.path.exists(os.path.join(dagster_home, "watch_pipeline.key"))


def test_named_key_file_is_used_instead_of_dagster_home(dagster_home, monkeypatch, tmp_path):
    path = tmp_path / "keys" / "watch.key"
    monkeypatch.delenv("WATCH_SECRET_KEY", raising=False)
    monkeypatch.setenv("WATCH_SECRET_KEY_FILE", str(path))
    with pytest.raises(SecretKeyError, match=f"key file {path} does not exist"):
        load_key(_env_config(), create=False)
    key, source = load_key(_env_config())
    assert source.kind == "file" and source.path == path
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_key(_env_config())[0] == key
    assert not os.path.exists(os.path.join(dagster_home, "watch_pipeline.key"))
    path.write_text("not a key\n")
    with pytest.raises(SecretKeyError, match=f"key file {path}"):
        load_key(_env_config())


def test_rotation_reencrypts_everything_in_one_transaction(any_catalog, box, tmp_path):
    with any_catalog.session() as s:
        create_source(s, box, fields={"name": "s", "source_type": "smb", "smb_server": "h",
                                      "smb_share": "m", "smb_username": "u"}, secret="pw-1")
        create_source(s, box, fields={"name": "b", "source_type": "s3", "s3_bucket_name": "bkt",
                                      "s3_access_key_id": "AK"}, secret="sk-2")
        cfg = EmailNotificationConfig(name="m", provider="smtp", from_address="a@b.example")
        s.add(cfg)
        s.flush()
        cfg.encrypted_smtp_password = box.encrypt(
            "mail-3", table="email_notification_config", row_id=cfg.id,
            column="encrypted_smtp_password")
    new = SecretBox(keys.prepare_new_key(tmp_path / "new.key"))
    with any_catalog.session() as s:
        assert keys.rotate_values(s, box, new) == 3
    with any_catalog.session() as s:
        smb = s.scalar(sa.select(WatchSource).where(WatchSource.name == "s"))
        s3 = s.scalar(sa.select(WatchSource).where(WatchSource.name == "b"))
        assert source_secret(new, smb) == "pw-1"
        assert source_secret(new, s3) == "sk-2"
        with pytest.raises(SecretDecryptError):
            source_secret(box, smb)


def test_rotation_with_wrong_active_key_changes_nothing(any_catalog, box, tmp_path):
    with any_catalog.session() as s:
        create_source(s, box, fields={"name": "s", "source_type": "smb", "smb_server": "h",
                                      "smb_share": "m"}, secret="pw-1")
    wrong = SecretBox(parse_key(generate_key(), origin="k"))
    new = SecretBox(parse_key(generate_key(), origin="k"))
    with pytest.raises(SecretDecryptError), any_catalog.session() as s:
        keys.rotate_values(s, wrong, new)
    with any_catalog.session() as s:
        assert source_secret(box, s.scalar(sa.select(WatchSource))) == "pw-1"


def test_racing_processes_agree_on_one_key_file(tmp_path):
    import multiprocessing

    path = tmp_path / "keys" / "watch.key"
    env = {"WATCH_SECRET_KEY_FILE": str(path)}
    with multiprocessing.get_context("fork").Pool(6) as pool:
        keys = pool.starmap(_load_in_child, [(env,)] * 12)
    assert len(set(keys)) == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["watch.key"]  # no temp files left


def _load_in_child(env):
    return load_key(KeyConfig.from_environ(env))[0]
