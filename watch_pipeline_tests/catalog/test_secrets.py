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
    public_repr,
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


# -- issue 13, finding 3: no second key, private key files, private rotation -------------------


def _smb_source_with_secret(catalog, box, name="share", secret="pw-1"):
    with catalog.session() as s:
        create_source(s, box, fields={"name": name, "source_type": "smb", "smb_server": "h",
                                      "smb_share": "m", "smb_username": "u"}, secret=secret)


def test_a_fresh_catalog_gets_its_key_file_on_first_use(sqlite_catalog, tmp_path):
    config = KeyConfig(key_file=tmp_path / "keys" / "watch.key")
    box, source = keys.active_box(config, catalog=sqlite_catalog)
    assert source.path == config.key_file
    assert stat.S_IMODE(config.key_file.stat().st_mode) == 0o600
    assert keys.active_box(config, catalog=sqlite_catalog)[0].key_id == box.key_id


def test_missing_key_with_secrets_in_the_catalog_is_refused_naming_the_key(sqlite_catalog,
                                                                         tmp_path):
    config = KeyConfig(key_file=tmp_path / "keys" / "watch.key")
    box, _ = keys.active_box(config, catalog=sqlite_catalog)
    _smb_source_with_secret(sqlite_catalog, box)
    config.key_file.unlink()  # lost, or WATCH_SECRET_KEY_FILE now points elsewhere
    with pytest.raises(SecretKeyError) as info:
        keys.active_box(config, catalog=sqlite_catalog)
    message = str(info.value)
    assert f"encrypted with key {box.key_id}" in message
    assert str(config.key_file) in message and "never created" in message
    assert not config.key_file.exists()  # no second key
    assert sorted(p.name for p in config.key_file.parent.iterdir()) == []


def test_missing_key_for_a_mail_row_names_its_key_and_creates_none(sqlite_catalog, tmp_path):
    from watch_pipeline.catalog.email import create_email_config
    from watch_pipeline.mail.resource import MailerResource

    key_file = tmp_path / "keys" / "watch.key"
    box, _ = keys.active_box(KeyConfig(key_file=key_file), catalog=sqlite_catalog)
    with sqlite_catalog.session() as s:
        row = create_email_config(s, box, secret="mail-pw", fields={
            "name": "relay", "provider": "smtp", "from_address": "w@example.test",
            "smtp_host": "127.0.0.1", "smtp_username": "u"})
    key_file.unlink()
    resource = MailerResource(secret_key_file=str(key_file))
    with pytest.raises(SecretKeyError) as info:
        resource.mailer_for(row)  # what the notification and health sensors call
    assert f"key {box.key_id}" in str(info.value) and "mail-pw" not in str(info.value)
    assert not key_file.exists()


def test_a_different_key_is_refused_before_anything_is_encrypted_with_it(sqlite_catalog,
                                                                        tmp_path):
    config = KeyConfig(key_file=tmp_path / "watch.key")
    box, _ = keys.active_box(config, catalog=sqlite_catalog)
    _smb_source_with_secret(sqlite_catalog, box)
    other = generate_key()
    with pytest.raises(SecretKeyError) as info:
        keys.active_box(KeyConfig(secret_key=other), catalog=sqlite_catalog)
    message = str(info.value)
    assert f"encrypted with key {box.key_id}" in message and "WATCH_SECRET_KEY" in message
    assert other not in message


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_key_file_readable_by_others_is_refused(tmp_path, mode):
    path = tmp_path / "watch.key"
    value = generate_key()
    path.write_text(value + "\n")
    path.chmod(mode)
    with pytest.raises(SecretKeyError) as info:
        load_key(KeyConfig(key_file=path))
    message = str(info.value)
    assert f"mode {mode:04o}" in message and f"chmod 600 {path}" in message
    assert value not in message
    assert stat.S_IMODE(path.stat().st_mode) == mode  # refused, not silently changed
    with pytest.raises(SecretKeyError, match="group or others"):
        keys.prepare_new_key(path)  # a wide new key for rotation is refused too
    path.chmod(0o600)
    assert load_key(KeyConfig(key_file=path))[0] == parse_key(value, origin="x")


class _KeyDirWatch:
    """Audit hook: at every audited operation, note files in ``directory`` wider than 0600.

    Opening, linking, renaming, chmod-ing and utime-ing a file are all audited events, so a
    file that is created with default permissions and tightened afterwards is seen in between.
    """

    installed = False
    active: _KeyDirWatch | None = None

    def __init__(self, directory):
        self.directory = directory
        self.wide: dict[str, int] = {}
        self.seen: set[str] = set()
        self.events = 0
        self._busy = False

    def __enter__(self):
        if not _KeyDirWatch.installed:
            import sys

            sys.addaudithook(_KeyDirWatch._hook)
            _KeyDirWatch.installed = True
        _KeyDirWatch.active = self
        return self

    def __exit__(self, *exc):
        self.look()
        _KeyDirWatch.active = None

    @staticmethod
    def _hook(event, args):
        watch = _KeyDirWatch.active
        if watch is not None and not watch._busy:
            watch.look()

    def look(self):
        self._busy = True
        try:
            self.events += 1
            for entry in os.scandir(self.directory):
                mode = stat.S_IMODE(entry.stat(follow_symlinks=False).st_mode)
                self.seen.add(entry.name)
                if mode & 0o077:
                    self.wide[entry.name] = mode
        except FileNotFoundError:
            pass
        finally:
            self._busy = False


def test_rotation_never_leaves_a_key_wider_than_0600(sqlite_catalog, tmp_path):
    key_dir = tmp_path / "keys"
    config = KeyConfig(key_file=key_dir / "watch.key")
    old, active = keys.active_box(config, catalog=sqlite_catalog)
    _smb_source_with_secret(sqlite_catalog, old)
    previous = os.umask(0o022)  # the usual umask: a plain open() would create 0644
    try:
        with _KeyDirWatch(key_dir) as watch:
            # what `secrets rotate --new-key-file <key dir>/next.key` does
            old, active = keys.active_box(config, catalog=sqlite_catalog)
            new = SecretBox(keys.prepare_new_key(key_dir / "next.key"))
            with sqlite_catalog.session() as s:
                assert keys.rotate_values(s, old, new) == 1
            backup = keys.install_key_file(key_dir / "next.key", active)
    finally:
        os.umask(previous)
    assert watch.events > 5  # the hook really looked during the rotation
    assert {"watch.key", "next.key", backup.name} <= watch.seen
    assert watch.wide == {}, f"key files wider than 0600 during rotation: {watch.wide}"
    assert sorted(p.name for p in key_dir.iterdir()) == sorted(
        ["watch.key", "next.key", f"watch.key.old-{old.key_id}"])  # no temp file left
    assert keys.active_box(config, catalog=sqlite_catalog)[0].key_id == new.key_id
    assert SecretBox(keys.prepare_new_key(backup)).key_id == old.key_id


def test_public_repr_shows_the_named_fields_and_nothing_else():
    class Client:
        def __init__(self) -> None:
            self.server, self._password = "files.example", "hunter2"

        def __repr__(self) -> str:
            return public_repr(self, server=self.server, port=445)

    assert repr(Client()) == "Client(server='files.example', port=445)"
