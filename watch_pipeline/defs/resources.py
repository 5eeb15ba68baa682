"""The one place where environment variables become resource instances.

Every field left empty falls back to the documented environment variable when the resource is
first used (at launch, never at import): ``WATCH_CATALOG_URL``/``DAGSTER_HOME`` for the catalog,
``WATCH_FOLDER_PATH``/``WATCH_TEMP_DIR`` for sources, ``$DAGSTER_HOME/object_store`` for the local
object store, and the bundled faster-whisper tiny.en model for transcription.
"""

from __future__ import annotations

from typing import Any

from watch_pipeline.catalog.resource import CatalogResource
from watch_pipeline.mail.resource import MailerResource
from watch_pipeline.sources.resource import SourcesResource
from watch_pipeline.store.resource import ObjectStoreResource
from watch_pipeline.transcribe.resource import TranscriberResource


def build_resources() -> dict[str, Any]:
    """The resources every asset, sensor and job may ask for, keyed by parameter name."""
    return {
        "catalog": CatalogResource(),
        "sources": SourcesResource(),
        "object_store": ObjectStoreResource(backend="local"),
        "transcriber": TranscriberResource(backend="whisper"),
        "mailer": MailerResource(),
    }
