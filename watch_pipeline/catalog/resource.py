"""The catalog as a Dagster resource, and the secret key fields of the resources that decrypt."""

from __future__ import annotations

import threading
from pathlib import Path

import dagster as dg
from pydantic import Field

from watch_pipeline.catalog.db import NO_CATALOG, Catalog, CatalogConfigError
from watch_pipeline.catalog.keys import open_box
from watch_pipeline.catalog.secrets import KeyConfig, SecretBox, stored_key_id

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


class SecretKeyResource(dg.ConfigurableResource):
    """The base of a resource that decrypts the catalog's stored secrets (sources, mailer).

    Both fields are set at launch by ``defs/resources.py``; nothing here reads the environment.
    """

    secret_key: str | None = Field(
        default=None, description="The catalog's secret key, base64 of 32 bytes; set it with "
        "dg.EnvVar('WATCH_SECRET_KEY'), never as a literal.")
    secret_key_file: str | None = Field(
        default=None, description="The key file (mode 0600) used when secret_key is empty "
        "(WATCH_SECRET_KEY_FILE, else $DAGSTER_HOME/watch_pipeline.key).")

    def key_config(self) -> KeyConfig:
        """Where the secret key is, as configured at launch."""
        return KeyConfig(secret_key=self.secret_key or None,
                         key_file=Path(self.secret_key_file) if self.secret_key_file else None)

    def box_for(self, stored: str | None) -> SecretBox:
        """The box that decrypts ``stored`` (a row's encrypted secret, or ``None``).

        It must be the key that secret was encrypted with; a missing key file is never
        created for it.

        Raises:
            SecretKeyError: No key, or not the key the stored secret needs.
        """
        kid = stored_key_id(stored)
        return open_box(self.key_config(), needed_key_ids=(lambda: {kid}) if kid else None)[0]
