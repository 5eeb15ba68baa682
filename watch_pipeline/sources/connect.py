"""Build a client for a catalog ``watch_source`` row: decrypt its secret, find its root.

The watch sensors (through ``SourcesResource``) and the CLI build clients the same way here;
both hand in the local sources' root they were launched with (``WATCH_FOLDER_PATH``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from watch_pipeline.catalog.models import SourceType, WatchSource
from watch_pipeline.catalog.secrets import SecretBox
from watch_pipeline.catalog.sources import SECRET_COLUMN, source_secret
from watch_pipeline.sources.base import SourceClient
from watch_pipeline.sources.factory import create_client
from watch_pipeline.sources.manual import ManualImportsClient


def client_for_source(source: WatchSource, *, box: Callable[[], SecretBox],
                      watch_folder: Callable[[], Path]) -> SourceClient:
    """An unconnected client for ``source``.

    Args:
        source: The catalog row.
        box: Returns the secret box; called only when the row holds a secret (a first use of
            the embedded default would otherwise create a key file for nothing).
        watch_folder: Returns the local sources' root; called only for local sources (it
            raises :class:`SourceError` when the caller was launched without one).
    """
    if getattr(source, "is_manual", False):  # files brought by hand: by path, never listed
        return ManualImportsClient()
    secrets: dict[str, str] = {}
    column = SECRET_COLUMN.get(source.source_type)
    if column and getattr(source, column):
        secret = source_secret(box(), source)
        if secret is not None:
            secrets["secret"] = secret
    root = watch_folder() if source.source_type == SourceType.LOCAL else Path(".")
    return create_client(source, watch_folder=root, secrets=secrets)
