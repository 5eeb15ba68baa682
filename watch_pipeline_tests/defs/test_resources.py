"""defs/resources.py: the environment becomes typed resource fields once, at launch."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import pytest

from watch_pipeline.catalog.db import CatalogConfigError
from watch_pipeline.catalog.email import create_email_config
from watch_pipeline.catalog.models import WatchSource
from watch_pipeline.catalog.resource import CatalogResource
from watch_pipeline.catalog.secrets import SecretBox, SecretKeyError, generate_key, parse_key
from watch_pipeline.catalog.sources import create_source
from watch_pipeline.definitions import defs
from watch_pipeline.defs.resources import launch
from watch_pipeline.mail.base import EmailMessage, MailError
from watch_pipeline.mail.resource import MailerResource
from watch_pipeline.sources.base import SourceError
from watch_pipeline.sources.resource import SourcesResource
from watch_pipeline.store.base import ObjectStoreError
from watch_pipeline.store.resource import ObjectStoreResource
from watch_pipeline.transcribe.resource import TranscriberResource
from watch_pipeline_tests.fixtures.smtp_server import SMTP_PASSWORD, SMTP_USER

DB_PASSWORD = "db-Pa55-not-in-config"
S3_SECRET = "s3-SECRET-not-in-config"
RIVA_KEY = "riva-KEY-not-in-config"


def test_an_empty_environment_launches_and_each_resource_names_what_is_missing():
    config = launch({})

    with pytest.raises(CatalogConfigError, match="DAGSTER_HOME"):
        config.catalog.get()
    with pytest.raises(SourceError, match="WATCH_FOLDER_PATH"):
        config.sources.watch_root()
    with pytest.raises(ObjectStoreError, match="WATCH_OBJECT_STORE_ROOT"):
        config.object_store.get_store()
    assert config.transcriber.backend == "whisper"
    assert (config.sensor_interval_seconds, config.notify_interval_seconds) == (30, 60)
    assert config.dagster_url is None


def test_dagster_home_places_the_embedded_defaults(tmp_path):
    home, watch = tmp_path / "home", tmp_path / "watch"
    config = launch({"DAGSTER_HOME": str(home), "WATCH_FOLDER_PATH": str(watch)})

    catalog = config.catalog.get()
    try:
        with catalog.session():
            pass
    finally:
        catalog.dispose()
    assert (home / "watch_catalog.sqlite").is_file()
    assert config.sources.watch_root() == watch
    assert config.sources.scratch() == home / "tmp"
    assert (home / "tmp").is_dir()
    config.object_store.get_store().put_bytes("a.txt", b"1")
    assert (home / "object_store" / "a.txt").read_bytes() == b"1"


@pytest.mark.parametrize("name, value", [
    ("WATCH_SENSOR_INTERVAL_SECONDS", "soon"),
    ("WATCH_NOTIFY_INTERVAL_SECONDS", "0"),
    ("WATCH_OBJECT_STORE", "ftp"),
    ("WATCH_TRANSCRIBER_BACKEND", "nemo"),
])
def test_a_value_no_resource_accepts_names_its_variable(name, value):
    with pytest.raises(ValueError, match=name):
        launch({name: value})


def test_sensor_intervals_are_read_at_launch(dagster_home, monkeypatch):
    monkeypatch.setenv("WATCH_SENSOR_INTERVAL_SECONDS", "7")
    monkeypatch.setenv("WATCH_NOTIFY_INTERVAL_SECONDS", "11")

    sensors = {s.name: s.minimum_interval_seconds
               for s in defs().get_repository_def().sensor_defs}

    assert {k: sensors[k] for k in ("local_watch_sensor", "s3_watch_sensor", "smb_watch_sensor",
                                    "notification_sensor", "source_health_sensor")} == {
        "local_watch_sensor": 7, "s3_watch_sensor": 7, "smb_watch_sensor": 7,
        "notification_sensor": 11, "source_health_sensor": 11}


def test_secrets_stay_environment_references_and_resolve_in_the_run(monkeypatch, tmp_path):
    key = generate_key()
    env = {"WATCH_CATALOG_URL": f"postgresql://watch:{DB_PASSWORD}@127.0.0.1:1/watch",
           "WATCH_OBJECT_STORE": "s3", "WATCH_S3_BUCKET": "media",
           "WATCH_S3_SECRET_ACCESS_KEY": S3_SECRET,
           "WATCH_TRANSCRIBER_BACKEND": "riva", "RIVA_API_KEY": RIVA_KEY, "RIVA_USE_SSL": "1",
           "WATCH_SECRET_KEY": key, "DAGSTER_HOME": str(tmp_path)}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    config = launch(os.environ)
    seen = {}

    @dg.asset
    def probe(catalog: CatalogResource, sources: SourcesResource,
              object_store: ObjectStoreResource, transcriber: TranscriberResource,
              mailer: MailerResource) -> None:
        seen.update(url=catalog.url, s3=object_store.s3_secret_access_key,
                    riva=transcriber.riva_api_key, keys={sources.secret_key, mailer.secret_key})

    result = dg.materialize([probe], resources=config.resources())

    assert result.success
    assert seen == {"url": env["WATCH_CATALOG_URL"], "s3": S3_SECRET, "riva": RIVA_KEY,
                    "keys": {key}}
    shown = repr(result.dagster_run.run_config) + repr(config)
    for secret in (DB_PASSWORD, S3_SECRET, RIVA_KEY, key):
        assert secret not in shown


def test_the_secret_key_reaches_the_sources(sqlite_catalog, monkeypatch, tmp_path):
    key = generate_key()
    with sqlite_catalog.session() as s:
        source_id = create_source(
            s, SecretBox(parse_key(key, origin="test")),
            fields={"name": "bucket", "source_type": "s3", "s3_bucket_name": "bkt",
                    "s3_access_key_id": "AK"}, secret="sk-1").id

    def client_with(secret_key: str) -> None:
        monkeypatch.setenv("WATCH_SECRET_KEY", secret_key)
        sources = launch(os.environ).sources.process_config_and_initialize()
        with sqlite_catalog.session() as s:
            sources.client_for(s.get(WatchSource, source_id))

    client_with(key)  # decrypts
    other = generate_key()
    with pytest.raises(SecretKeyError, match=SecretBox(parse_key(key, origin="t")).key_id):
        client_with(other)


def test_riva_refuses_a_key_in_clear_unless_the_variable_allows_it(monkeypatch):
    monkeypatch.setenv("RIVA_API_KEY", RIVA_KEY)
    base = {"WATCH_TRANSCRIBER_BACKEND": "riva", "RIVA_API_KEY": RIVA_KEY,
            "RIVA_URI": "127.0.0.1:1"}

    refused = launch(base).transcriber.process_config_and_initialize()
    with pytest.raises(ValueError, match="RIVA_ALLOW_INSECURE_API_KEY") as info:
        refused.get_transcriber()
    assert RIVA_KEY not in str(info.value)
    allowed = launch({**base, "RIVA_ALLOW_INSECURE_API_KEY": "1"})
    assert allowed.transcriber.process_config_and_initialize().get_transcriber()


def test_the_smtp_ca_file_reaches_the_mailer(sqlite_catalog, box, smtp_starttls_server,
                                             tls_files):
    with sqlite_catalog.session() as s:
        row = create_email_config(
            s, box, secret=SMTP_PASSWORD,
            fields={"name": "relay", "provider": "smtp", "from_address": "watch@example.test",
                    "smtp_host": smtp_starttls_server.host,
                    "smtp_port": smtp_starttls_server.port, "smtp_username": SMTP_USER})
    message = EmailMessage(subject="s", text="t", html="<p>t</p>", to=("ops@example.test",),
                           from_address="watch@example.test")

    with pytest.raises(MailError):  # the test server's CA is trusted only through the variable
        launch({}).mailer.mailer_for(row, box).send(message)
    launch({"WATCH_SMTP_CA_FILE": tls_files.ca_file}).mailer.mailer_for(row, box).send(message)

    [mail] = smtp_starttls_server.messages
    assert mail.login == SMTP_USER and mail.tls


def test_the_catalog_url_in_the_environment_wins_over_dagster_home(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'elsewhere.sqlite'}"
    monkeypatch.setenv("WATCH_CATALOG_URL", url)
    config = launch({"WATCH_CATALOG_URL": url, "DAGSTER_HOME": str(tmp_path / "home")})

    catalog = config.catalog.process_config_and_initialize().get()
    catalog.dispose()

    assert Path(tmp_path / "elsewhere.sqlite").is_file()
    assert not (tmp_path / "home").exists()
