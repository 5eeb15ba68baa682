"""The catalog as a Dagster resource."""

from __future__ import annotations

import threading

import dagster as dg
from pydantic import Field

from watch_pipeline.catalog.db import NO_CATALOG, Catalog, CatalogConfigError

_catalogs: dict[str, Catalog] = {}
_lock = threading.Lock()


class CatalogResource(dg.ConfigurableResource):
    """The watch_pipeline catalog database (sources, files, media, settings)."""

    url: str | None = Field(
        default=None,
        description="Database URL, set at launch: dg.EnvVar('WATCH_CATALOG_URL') (it may hold a "
        "password), else the SQLite file under DAGSTER_HOME.",
    )

    def get(self) -> Catalog:
        """The open catalog, shared by everything in this process that uses the same URL.

        Raises:
            CatalogConfigError: No URL was configured at launch.
        """
        url = self.url
        if not url:
            raise CatalogConfigError(NO_CATALOG)
        with _lock:
            catalog = _catalogs.get(url)
            if catalog is None:
                catalog = _catalogs[url] = Catalog(url)
            return catalog
