"""The one place where the environment becomes typed resource fields, at launch.

:func:`launch` reads the process environment once, when the code location loads (never at
import), and returns a frozen :class:`Launch`: the five resources with every field set, and the
sensors' intervals. Secrets become ``dg.EnvVar`` references, so Dagster resolves them in the
process that uses them and shows the variable's name, never its value, in run config:
``WATCH_CATALOG_URL`` (it may hold the database password), ``WATCH_S3_SECRET_ACCESS_KEY``,
``RIVA_API_KEY`` and ``WATCH_SECRET_KEY``.

- catalog: ``WATCH_CATALOG_URL``, else the SQLite file under ``DAGSTER_HOME``;
- sources: ``WATCH_FOLDER_PATH`` (the root of local sources), ``WATCH_TEMP_DIR`` (else
  ``$DAGSTER_HOME/tmp``);
- the key of stored secrets (sources and mailer): ``WATCH_SECRET_KEY``, else the key file
  ``WATCH_SECRET_KEY_FILE`` (else ``$DAGSTER_HOME/watch_pipeline.key``);
- object_store: ``WATCH_OBJECT_STORE`` = ``local`` (default; ``WATCH_OBJECT_STORE_ROOT``, else
  ``$DAGSTER_HOME/object_store``) or ``s3`` (MinIO, AWS or any S3 API): ``WATCH_S3_BUCKET``,
  ``WATCH_S3_ENDPOINT_URL`` (empty for AWS), ``WATCH_S3_REGION``, ``WATCH_S3_PREFIX``,
  ``WATCH_S3_USE_SSL`` (default true), ``WATCH_S3_ACCESS_KEY_ID``,
  ``WATCH_S3_SECRET_ACCESS_KEY``;
- transcriber (the model is the ``transcript`` asset's code version):
  ``WATCH_TRANSCRIBER_BACKEND`` = ``whisper`` (default: ``WATCH_WHISPER_MODEL``, a CTranslate2
  model directory, default the bundled tiny.en; ``WATCH_WHISPER_DEVICE`` ``cpu``/``cuda``/
  ``auto``; ``WATCH_WHISPER_COMPUTE_TYPE``; ``WATCH_WHISPER_PRESET`` ``accurate`` (default,
  faster-whisper's own decoding, beam 5) or ``fast`` (greedy, beam 1: quicker, less accurate))
  or ``riva`` (``RIVA_URI`` host:port, ``RIVA_USE_SSL``,
  ``RIVA_SSL_CERT``, ``RIVA_LANGUAGE_CODE``, ``RIVA_MODEL``, ``RIVA_API_KEY``,
  ``RIVA_ALLOW_INSECURE_API_KEY``);
- mailer: ``WATCH_SMTP_CA_FILE``, ``WATCH_GRAPH_BASE_URL``, ``WATCH_M365_AUTHORITY_BASE_URL``;
- manual_import: ``WATCH_IMPORT_ROOT``, the folder below which ``manual_import_job`` may import
  files (unset: the job imports URLs only);
- sensors: ``WATCH_SENSOR_INTERVAL_SECONDS`` (watch sensors, 30),
  ``WATCH_LOCAL_SENSOR_INTERVAL_SECONDS`` (the local watch sensor: else
  ``WATCH_SENSOR_INTERVAL_SECONDS`` when that is set, else 3; a tick with nothing due costs
  milliseconds, and a source with file-system events is scanned on the next one),
  ``WATCH_NOTIFY_INTERVAL_SECONDS`` (notification and health sensors, 60), ``WATCH_DAGSTER_URL``
  (links in mails).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, cast

import dagster as dg

from watch_pipeline.catalog.db import default_catalog_url
from watch_pipeline.catalog.resource import CatalogResource
from watch_pipeline.catalog.secrets import KeyConfig
from watch_pipeline.defs.manual import ManualImportResource
from watch_pipeline.mail.graph import DEFAULT_AUTHORITY_BASE, DEFAULT_GRAPH_BASE
from watch_pipeline.mail.resource import MailerResource
from watch_pipeline.sources.resource import SourcesResource
from watch_pipeline.store.base import ObjectStore
from watch_pipeline.store.resource import ObjectStoreResource
from watch_pipeline.transcribe.resource import TranscriberResource

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
WhisperDevice = Literal["auto", "cpu", "cuda"]
WhisperPreset = Literal["accurate", "fast"]


@dataclass(frozen=True)
class _Environ:
    """Typed reads of the launch environment (the CLI reads its own at its entry, cli/main.py)."""

    values: Mapping[str, str]

    def text(self, name: str, default: str | None = None) -> str | None:
        value = self.values.get(name, "").strip()
        return value or default

    def flag(self, name: str, default: bool = False) -> bool:
        value = self.values.get(name, "").strip().lower()
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        return default

    def seconds(self, name: str, default: int) -> int:
        value = self.text(name)
        if value is None:
            return default
        try:
            seconds = int(value)
        except ValueError:
            raise ValueError(f"{name}={value!r}: expected a whole number of seconds") from None
        if seconds < 1:
            raise ValueError(f"{name}={value!r}: expected at least 1 second")
        return seconds

    def secret(self, name: str) -> str | None:
        """A reference to the secret ``name`` when it is set, resolved where it is used."""
        return dg.EnvVar(name) if self.text(name) else None

    def under_home(self, name: str) -> str | None:
        home = self.text("DAGSTER_HOME")
        return str(Path(home).expanduser() / name) if home else None


@dataclass(frozen=True)
class Launch:
    """What the code location is built with, read once from the environment at launch.

    Attributes:
        catalog: The catalog database.
        sources: Clients for watch sources (local root, scratch folder, key location).
        object_store: Where media and transcripts are stored.
        transcriber: The transcription backend.
        mailer: Mail delivery (CA file, Microsoft 365 endpoints, key location).
        manual_import: Where ``manual_import_job`` may read files (the import root).
        sensor_interval_seconds: How often the watch sensors tick (the local one aside).
        local_sensor_interval_seconds: How often the local watch sensor ticks.
        notify_interval_seconds: How often the notification and health sensors tick.
        dagster_url: The UI's address for links in mails; ``None`` leaves links out.
    """

    catalog: CatalogResource
    sources: SourcesResource
    object_store: ObjectStoreResource
    transcriber: TranscriberResource
    mailer: MailerResource
    manual_import: ManualImportResource = field(default_factory=ManualImportResource)
    sensor_interval_seconds: int = 30
    notify_interval_seconds: int = 60
    local_sensor_interval_seconds: int = 3
    dagster_url: str | None = None

    def resources(self) -> dict[str, dg.ConfigurableResource]:
        """The Definitions' resources, keyed by the parameter names assets and sensors use."""
        return {"catalog": self.catalog, "sources": self.sources,
                "object_store": self.object_store, "transcriber": self.transcriber,
                "mailer": self.mailer, "manual_import": self.manual_import}


def _catalog(env: _Environ) -> CatalogResource:
    if env.text("WATCH_CATALOG_URL"):
        return CatalogResource(url=env.secret("WATCH_CATALOG_URL"))
    home = env.text("DAGSTER_HOME")
    return CatalogResource(url=default_catalog_url(home) if home else None)


def _key_fields(env: _Environ) -> dict[str, str | None]:
    """The secret key's location for the resources that decrypt stored secrets."""
    key_file = KeyConfig.from_environ(env.values).key_file
    return {"secret_key": env.secret("WATCH_SECRET_KEY"),
            "secret_key_file": str(key_file) if key_file else None}


def _sources(env: _Environ) -> SourcesResource:
    return SourcesResource(
        watch_folder=env.text("WATCH_FOLDER_PATH"),
        temp_dir=env.text("WATCH_TEMP_DIR") or env.under_home("tmp"),
        **_key_fields(env))


def _object_store(env: _Environ) -> ObjectStoreResource:
    backend = (env.text("WATCH_OBJECT_STORE") or "local").lower()
    if backend == "s3":
        return ObjectStoreResource(
            backend="s3",
            s3_bucket=env.text("WATCH_S3_BUCKET"),
            s3_endpoint_url=env.text("WATCH_S3_ENDPOINT_URL"),
            s3_region=env.text("WATCH_S3_REGION"),
            s3_prefix=env.text("WATCH_S3_PREFIX") or "",
            s3_use_ssl=env.flag("WATCH_S3_USE_SSL", default=True),
            s3_access_key_id=env.text("WATCH_S3_ACCESS_KEY_ID"),
            s3_secret_access_key=env.secret("WATCH_S3_SECRET_ACCESS_KEY"))
    if backend != "local":
        raise ValueError(f"WATCH_OBJECT_STORE={backend!r}: expected 'local' or 's3'")
    return ObjectStoreResource(
        backend="local",
        local_root=env.text("WATCH_OBJECT_STORE_ROOT") or env.under_home("object_store"))


def _transcriber(env: _Environ) -> TranscriberResource:
    backend = (env.text("WATCH_TRANSCRIBER_BACKEND") or "whisper").lower()
    if backend == "riva":
        return TranscriberResource(
            backend="riva",
            riva_uri=env.text("RIVA_URI") or "localhost:50051",
            riva_use_ssl=env.flag("RIVA_USE_SSL"),
            riva_ssl_cert=env.text("RIVA_SSL_CERT"),
            riva_api_key=env.secret("RIVA_API_KEY"),
            riva_allow_insecure_api_key=env.flag("RIVA_ALLOW_INSECURE_API_KEY"),
            riva_language_code=env.text("RIVA_LANGUAGE_CODE") or "en-US",
            riva_model=env.text("RIVA_MODEL"))
    if backend != "whisper":
        raise ValueError(f"WATCH_TRANSCRIBER_BACKEND={backend!r}: expected 'whisper' or 'riva'")
    return TranscriberResource(
        backend="whisper",
        whisper_model=env.text("WATCH_WHISPER_MODEL"),
        whisper_device=cast(WhisperDevice, env.text("WATCH_WHISPER_DEVICE") or "cpu"),
        whisper_compute_type=env.text("WATCH_WHISPER_COMPUTE_TYPE") or "int8",
        whisper_preset=_whisper_preset(env))


def _whisper_preset(env: _Environ) -> WhisperPreset:
    preset = (env.text("WATCH_WHISPER_PRESET") or "accurate").lower()
    if preset not in ("accurate", "fast"):
        raise ValueError(f"WATCH_WHISPER_PRESET={preset!r}: expected 'accurate' or 'fast'")
    return cast(WhisperPreset, preset)


def _mailer(env: _Environ) -> MailerResource:
    return MailerResource(
        graph_base=env.text("WATCH_GRAPH_BASE_URL") or DEFAULT_GRAPH_BASE,
        authority_base=env.text("WATCH_M365_AUTHORITY_BASE_URL") or DEFAULT_AUTHORITY_BASE,
        smtp_ca_file=env.text("WATCH_SMTP_CA_FILE"),
        **_key_fields(env))


def launch(environ: Mapping[str, str] | None = None) -> Launch:
    """Read the environment once and build everything the code location is configured with.

    Args:
        environ: The environment to read; ``None`` is this process's (``os.environ``).

    Raises:
        ValueError: A variable holds a value no resource accepts (an unknown backend, an
            interval that is not a number); the message names the variable.
    """
    env = _Environ(os.environ if environ is None else environ)
    dagster_url = env.text("WATCH_DAGSTER_URL")
    return Launch(
        catalog=_catalog(env),
        sources=_sources(env),
        object_store=_object_store(env),
        transcriber=_transcriber(env),
        mailer=_mailer(env),
        manual_import=ManualImportResource(import_root=env.text("WATCH_IMPORT_ROOT")),
        sensor_interval_seconds=env.seconds("WATCH_SENSOR_INTERVAL_SECONDS", 30),
        notify_interval_seconds=env.seconds("WATCH_NOTIFY_INTERVAL_SECONDS", 60),
        local_sensor_interval_seconds=env.seconds(
            "WATCH_LOCAL_SENSOR_INTERVAL_SECONDS",
            env.seconds("WATCH_SENSOR_INTERVAL_SECONDS", 3)),
        dagster_url=dagster_url.rstrip("/") if dagster_url else None,
    )


def build_resources(environ: Mapping[str, str] | None = None) -> dict[str, dg.ConfigurableResource]:
    """The resources every asset, sensor and job may ask for, keyed by parameter name."""
    return launch(environ).resources()


def build_sources(environ: Mapping[str, str] | None = None) -> SourcesResource:
    """The sources resource configured from the environment (the CLI's scratch folder)."""
    return _sources(_Environ(os.environ if environ is None else environ))


def build_object_store(environ: Mapping[str, str] | None = None) -> ObjectStoreResource:
    """The object store resource configured from the environment (see the module docstring).

    Raises:
        ValueError: ``WATCH_OBJECT_STORE`` names an unknown backend.
    """
    return _object_store(_Environ(os.environ if environ is None else environ))


def build_transcriber(environ: Mapping[str, str] | None = None) -> TranscriberResource:
    """The transcription resource configured from the environment (see the module docstring)."""
    return _transcriber(_Environ(os.environ if environ is None else environ))


def object_store_from_env(environ: Mapping[str, str] | None = None) -> ObjectStore:
    """The object store the assets use, for code outside a run (the CLI).

    EnvVar fields (the S3 secret) are resolved here as a run would resolve them.
    """
    return build_object_store(environ).process_config_and_initialize().get_store()

