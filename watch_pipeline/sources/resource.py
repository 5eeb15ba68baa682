"""Watch source clients as a Dagster resource."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from pydantic import Field

from watch_pipeline.catalog.keys import open_box
from watch_pipeline.catalog.models import WatchSource
from watch_pipeline.catalog.secrets import KeyConfig, SecretBox, stored_key_id
from watch_pipeline.catalog.sources import SECRET_COLUMN
from watch_pipeline.sources.base import SourceClient, SourceError
from watch_pipeline.sources.connect import client_for_source


class SourcesResource(dg.ConfigurableResource):
    """Builds a client for a catalog ``watch_source`` row (local folder, S3 bucket, SMB share).

    Every field is set at launch by ``defs/resources.py``; nothing here reads the environment.
    """

    watch_folder: str | None = Field(
        default=None, description="Root of local sources (WATCH_FOLDER_PATH at launch).")
    temp_dir: str | None = Field(
        default=None, description="Scratch space for downloads (WATCH_TEMP_DIR at launch, else "
        "$DAGSTER_HOME/tmp); empty = ./tmp.")
    secret_key: str | None = Field(
        default=None, description="The key of the catalog's stored secrets; set it with "
        "dg.EnvVar('WATCH_SECRET_KEY'), never as a literal.")
    secret_key_file: str | None = Field(
        default=None, description="The key file when no key is set (WATCH_SECRET_KEY_FILE, else "
        "$DAGSTER_HOME/watch_pipeline.key).")

    def watch_root(self) -> Path:
        """The folder local sources are relative to.

        Raises:
            SourceError: No root was configured.
        """
        if not self.watch_folder:
            raise SourceError("WATCH_FOLDER_PATH is not set: local sources have no root")
        return Path(self.watch_folder).expanduser()

    def scratch(self) -> Path:
        """The temp dir for downloads and stitching (created if missing)."""
        path = Path(self.temp_dir or "tmp").expanduser()
        path.mkdir(parents=True, exist_ok=True)
        return path

    def key_config(self) -> KeyConfig:
        """Where the secret key is, as configured at launch."""
        return KeyConfig(secret_key=self.secret_key or None,
                         key_file=Path(self.secret_key_file) if self.secret_key_file else None)

    def client_for(self, source: WatchSource) -> SourceClient:
        """An unconnected client for ``source``; its secret is decrypted only here.

        The key is opened only when the row holds a secret, and must be the key that secret
        was encrypted with (a missing key file is never created for it).

        Raises:
            SourceError: The row cannot be used (e.g. a local source without a root).
            SecretKeyError: No key, or not the key the stored secret needs.
        """

        def row_box() -> SecretBox:
            kid = stored_key_id(getattr(source, SECRET_COLUMN.get(source.source_type, ""), None))
            return open_box(self.key_config(),
                            needed_key_ids=(lambda: {kid}) if kid else None)[0]

        return client_for_source(source, box=row_box, watch_folder=self.watch_root)
