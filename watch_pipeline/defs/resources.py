"""The one place where environment variables become resource instances.

Every field left empty falls back to the documented environment variable when the resource is
first used (at launch, never at import): ``WATCH_CATALOG_URL``/``DAGSTER_HOME`` for the catalog,
``WATCH_FOLDER_PATH``/``WATCH_TEMP_DIR`` for sources, ``$DAGSTER_HOME/object_store`` for the local
object store. The transcription backend is chosen here too (read when the code location loads,
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


def build_resources() -> dict[str, Any]:
    """The resources every asset, sensor and job may ask for, keyed by parameter name."""
    return {
        "catalog": CatalogResource(),
        "sources": SourcesResource(),
        "object_store": ObjectStoreResource(backend="local"),
        "transcriber": build_transcriber(),
        "mailer": MailerResource(),
    }
