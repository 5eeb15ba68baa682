"""The catalog as a Dagster resource."""

from __future__ import annotations

import threading

import dagster as dg
from pydantic import Field

from watch_pipeline.catalog.db import Catalog, resolve_catalog_url

_catalogs: dict[str, Catalog] = {}
_lock = threading.Lock()


class CatalogResource(dg.ConfigurableResource):
    """The watch_pipeline catalog database (sources, files, media, settings)."""

    url: str | None = Field(
        default=None,
        description="Database URL; empty = WATCH_CATALOG_URL, else SQLite under DAGSTER_HOME.",
    )

    def get(self) -> Catalog:
        """The open catalog, shared by everything in this process that uses the same URL."""
        url = self.url or resolve_catalog_url()
        with _lock:
            catalog = _catalogs.get(url)
            if catalog is None:
                catalog = _catalogs[url] = Catalog(url)
            return catalog
