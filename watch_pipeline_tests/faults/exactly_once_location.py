"""The code location of the two-process test in test_exactly_once.py.

The real ``raw_file``/``stitched_media``/``media_object`` assets, on a local source whose files
are fetched as if remote: the download announces itself (a ``holding-<pid>`` file in the gate
folder) and then waits until the test opens the gate (a ``go`` file). Whichever run takes the
partition first is therefore still importing while the other one starts, whatever the order and
speed in which the two processes come up; no timing is involved.
"""

import os
import time
from pathlib import Path

import dagster as dg
from pydantic import Field

from watch_pipeline.catalog.models import WatchSource
from watch_pipeline.catalog.resource import CatalogResource
from watch_pipeline.defs.assets import media_object, raw_file, stitched_media
from watch_pipeline.sources.base import RejectedEntry, SourceClient, SourceEntry
from watch_pipeline.sources.resource import SourcesResource
from watch_pipeline.store.resource import ObjectStoreResource

GATE_TIMEOUT_SECONDS = 600.0  # only a safety net: the test opens the gate long before


class GatedDownloads(SourceClient):
    """A local client made remote-like, whose downloads wait for the test's gate."""

    def __init__(self, inner: SourceClient, gate: Path) -> None:
        self.inner = inner
        self.gate = gate

    def test_connection(self) -> None:
        self.inner.test_connection()

    def list_files(self, *, recursive: bool = True, extensions: tuple[str, ...] = ()
                   ) -> "list[SourceEntry | RejectedEntry]":
        return list(self.inner.list_files(recursive=recursive, extensions=extensions))

    def open(self, remote_path: str):  # type: ignore[no-untyped-def]
        return self.inner.open(remote_path)

    def local_path(self, remote_path: str) -> Path | None:
        return None

    def download(self, remote_path: str, dest: Path, *, expected_size: int | None = None) -> Path:
        (self.gate / f"holding-{os.getpid()}").write_text(remote_path)
        deadline = time.monotonic() + GATE_TIMEOUT_SECONDS
        while not (self.gate / "go").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with self.inner.open(remote_path) as src, open(dest, "wb") as out:
            out.write(src.read())
        return dest

    def upload(self, src: Path, remote_path: str) -> None:
        self.inner.upload(src, remote_path)

    def delete(self, remote_path: str) -> None:
        self.inner.delete(remote_path)

    def close(self) -> None:
        self.inner.close()


class GatedSourcesResource(SourcesResource):
    """The ``sources`` resource, handing out :class:`GatedDownloads` clients."""

    gate_dir: str = Field(description="Folder of the holding-<pid> and go files.")

    def client_for(self, source: WatchSource) -> SourceClient:
        return GatedDownloads(super().client_for(source), Path(self.gate_dir))


defs = dg.Definitions(
    assets=[raw_file, stitched_media, media_object],
    resources={
        "catalog": CatalogResource(url=dg.EnvVar("WATCH_CATALOG_URL")),
        "sources": GatedSourcesResource(watch_folder=dg.EnvVar("WATCH_FOLDER_PATH"),
                                        temp_dir=dg.EnvVar("WATCH_TEMP_DIR"),
                                        gate_dir=dg.EnvVar("EXACTLY_ONCE_GATE")),
        "object_store": ObjectStoreResource(backend="local",
                                            local_root=dg.EnvVar("EXACTLY_ONCE_OBJECTS")),
    },
)
