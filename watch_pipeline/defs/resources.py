"""The one place where environment variables become resource instances.

Every field left empty falls back to the documented environment variable when the resource is
first used (at launch, never at import): ``WATCH_CATALOG_URL``/``DAGSTER_HOME`` for the catalog,
``WATCH_FOLDER_PATH``/``WATCH_TEMP_DIR`` for sources, ``$DAGSTER_HOME/object_store`` for the local
object store. The object store backend is chosen here:

- ``WATCH_OBJECT_STORE``: ``local`` (default; ``WATCH_OBJECT_STORE_ROOT`` or
  ``$DAGSTER_HOME/object_store``) or ``s3`` (MinIO, AWS or any S3 API): ``WATCH_S3_BUCKET``,
  ``WATCH_S3_ENDPOINT_URL`` (empty for AWS), ``WATCH_S3_REGION``, ``WATCH_S3_PREFIX``,
  ``WATCH_S3_USE_SSL``, ``WATCH_S3_ACCESS_KEY_ID`` and the secret ``WATCH_S3_SECRET_ACCESS_KEY``
  (an ``EnvVar``, never a value in run config).

The transcription backend is chosen here too (read when the code location loads,
because the model is the ``transcript`` asset's code version):

- ``WATCH_TRANSCRIBER_BACKEND``: ``whisper`` (default) or ``riva``;
- whisper: ``WATCH_WHISPER_MODEL`` (a CTranslate2 model directory; default the bundled tiny.en),
  ``WATCH_WHISPER_DEVICE`` (``cpu``/``cuda``/``auto``), ``WATCH_WHISPER_COMPUTE_TYPE``;
- riva: ``RIVA_URI`` (host:port), ``RIVA_USE_SSL``, ``RIVA_SSL_CERT``, ``RIVA_LANGUAGE_CODE``,
  ``RIVA_MODEL``, and the secret ``RIVA_API_KEY`` (passed as an ``EnvVar``, never as a value).
"""

from __future__ import annotations

import os
from typing import Any

import dagster as dg

from watch_pipeline.catalog.resource import CatalogResource
from watch_pipeline.mail.resource import MailerResource
from watch_pipeline.sources.resource import SourcesResource
from watch_pipeline.store.base import ObjectStore
from watch_pipeline.store.resource import ObjectStoreResource
from watch_pipeline.transcribe.resource import TranscriberResource


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def build_transcriber() -> TranscriberResource:
    """The transcription resource configured from the environment (see the module docstring)."""
    backend = os.environ.get("WATCH_TRANSCRIBER_BACKEND", "whisper").strip() or "whisper"
    if backend == "riva":
        return TranscriberResource(
            backend="riva",
            riva_uri=os.environ.get("RIVA_URI", "localhost:50051"),
            riva_use_ssl=_flag("RIVA_USE_SSL"),
            riva_ssl_cert=os.environ.get("RIVA_SSL_CERT") or None,
            riva_api_key=dg.EnvVar("RIVA_API_KEY") if os.environ.get("RIVA_API_KEY") else None,
            riva_language_code=os.environ.get("RIVA_LANGUAGE_CODE", "en-US"),
            riva_model=os.environ.get("RIVA_MODEL") or None,
        )
    return TranscriberResource(
        backend="whisper",
        whisper_model=os.environ.get("WATCH_WHISPER_MODEL") or None,
        whisper_device=os.environ.get("WATCH_WHISPER_DEVICE", "cpu"),  # type: ignore[arg-type]
        whisper_compute_type=os.environ.get("WATCH_WHISPER_COMPUTE_TYPE", "int8"),
    )


def build_object_store() -> ObjectStoreResource:
    """The object store resource configured from the environment (see the module docstring).

    Raises:
        ValueError: ``WATCH_OBJECT_STORE`` names an unknown backend.
    """
    backend = os.environ.get("WATCH_OBJECT_STORE", "local").strip().lower() or "local"
    if backend == "s3":
        use_ssl = os.environ.get("WATCH_S3_USE_SSL", "true")
        return ObjectStoreResource(
            backend="s3",
            s3_bucket=os.environ.get("WATCH_S3_BUCKET") or None,
            s3_endpoint_url=os.environ.get("WATCH_S3_ENDPOINT_URL") or None,
            s3_region=os.environ.get("WATCH_S3_REGION") or None,
            s3_prefix=os.environ.get("WATCH_S3_PREFIX", ""),
            s3_use_ssl=use_ssl.strip().lower() not in ("0", "false", "no", "off"),
            s3_access_key_id=os.environ.get("WATCH_S3_ACCESS_KEY_ID") or None,
            s3_secret_access_key=(dg.EnvVar("WATCH_S3_SECRET_ACCESS_KEY")
                                  if os.environ.get("WATCH_S3_SECRET_ACCESS_KEY") else None),
        )
    if backend != "local":
        raise ValueError(f"WATCH_OBJECT_STORE={backend!r}: expected 'local' or 's3'")
    return ObjectStoreResource(backend="local",
                               local_root=os.environ.get("WATCH_OBJECT_STORE_ROOT") or None)


def object_store_from_env() -> ObjectStore:
    """The object store the assets use, for code outside a run (the CLI).

    EnvVar fields (the S3 secret) are resolved here as a run would resolve them.
    """
    return build_object_store().process_config_and_initialize().get_store()


def sensor_interval_seconds() -> int:
    """How often the watch and alert sensors tick (``WATCH_SENSOR_INTERVAL_SECONDS``, 30)."""
    return int(os.environ.get("WATCH_SENSOR_INTERVAL_SECONDS", "30"))


def build_resources() -> dict[str, Any]:
    """The resources every asset, sensor and job may ask for, keyed by parameter name."""
    return {
        "catalog": CatalogResource(),
        "sources": SourcesResource(),
        "object_store": build_object_store(),
        "transcriber": build_transcriber(),
        "mailer": MailerResource(),
    }
