"""Watch source clients as a Dagster resource."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from watch_pipeline.catalog.models import WatchSource
from watch_pipeline.catalog.resource import SecretKeyResource
from watch_pipeline.catalog.secrets import SecretBox
from watch_pipeline.catalog.sources import SECRET_COLUMN
from watch_pipeline.sources.base import SourceClient, SourceError
from watch_pipeline.sources.connect import client_for_source


class SourcesResource(SecretKeyResource):
    """Builds a client for a catalog ``watch_source`` row (local folder, S3 bucket, SMB share).

    Every field is set at launch by ``defs/resources.py``; nothing here reads the environment.
    """

    watch_folder: str | None = Field(
        default=None, description="Root of local sources (WATCH_FOLDER_PATH at launch).")
    temp_dir: str | None = Field(
        default=None, description="Scratch space for downloads (WATCH_TEMP_DIR at launch, else "
        "$DAGSTER_HOME/tmp); empty = ./tmp.")

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

    def client_for(self, source: WatchSource) -> SourceClient:
        """An unconnected client for ``source``; its secret is decrypted only here.

        The key is opened only when the row holds a secret, and must be the key that secret
        was encrypted with (a missing key file is never created for it).

        Raises:
            SourceError: The row cannot be used (e.g. a local source without a root).
            SecretKeyError: No key, or not the key the stored secret needs.
        """

        def row_box() -> SecretBox:
            return self.box_for(getattr(source, SECRET_COLUMN.get(source.source_type, ""), None))

        return client_for_source(source, box=row_box, watch_folder=self.watch_root)
