"""Watch source clients as a Dagster resource."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
from pydantic import Field

from watch_pipeline.catalog.keys import active_box
from watch_pipeline.catalog.models import WatchSource
from watch_pipeline.sources.base import SourceClient, SourceError
from watch_pipeline.sources.connect import client_for_source


class SourcesResource(dg.ConfigurableResource):
    """Builds a client for a catalog ``watch_source`` row (local folder, S3 bucket, SMB share)."""

    watch_folder: str | None = Field(
        default=None, description="Root of local sources; empty = WATCH_FOLDER_PATH.")
    temp_dir: str | None = Field(
        default=None, description="Scratch space for downloads; empty = WATCH_TEMP_DIR, "
        "else $DAGSTER_HOME/tmp.")

    def watch_root(self) -> Path:
        """The folder local sources are relative to."""
        value = self.watch_folder or os.environ.get("WATCH_FOLDER_PATH", "")
        if not value:
            raise SourceError("WATCH_FOLDER_PATH is not set: local sources have no root")
        return Path(value).expanduser()

    def scratch(self) -> Path:
        """The temp dir for downloads and stitching (created if missing)."""
        value = self.temp_dir or os.environ.get("WATCH_TEMP_DIR", "")
        if not value:
            value = str(Path(os.environ.get("DAGSTER_HOME", ".")) / "tmp")
        path = Path(value).expanduser()
        path.mkdir(parents=True, exist_ok=True)
        return path

    def client_for(self, source: WatchSource) -> SourceClient:
        """An unconnected client for ``source``; its secret is decrypted only here."""
        return client_for_source(source, box=lambda: active_box()[0], watch_folder=self.watch_root)
