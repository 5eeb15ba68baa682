"""``manual_import_job``: bring one file (below ``WATCH_IMPORT_ROOT``) or one URL in from the UI.

The job only registers the arrival (:mod:`watch_pipeline.pipeline.manual`): the file is checked,
fingerprinted and deduplicated, and recorded for import; ``local_watch_sensor`` starts the
import run of its partition on its next tick, as for a watched file. A path must resolve below
the import root, so the UI cannot read arbitrary files of the code location's machine.
"""

from pathlib import Path

import dagster as dg
from pydantic import Field

from watch_pipeline.catalog.resource import CatalogResource
from watch_pipeline.catalog.validation import ValidationError
from watch_pipeline.pipeline import manual
from watch_pipeline.sources.base import SourceError
from watch_pipeline.sources.resource import SourcesResource


class ManualImportResource(dg.ConfigurableResource):
    """Where ``manual_import_job`` may read files; set at launch by ``defs/resources.py``."""

    import_root: str | None = Field(
        default=None, description="Files the Dagster job may import lie below this folder "
        "(WATCH_IMPORT_ROOT at launch); unset: the job imports URLs only.")

    def root(self) -> Path | None:
        """The import root, or ``None`` when none is configured."""
        return Path(self.import_root).expanduser() if self.import_root else None


class ManualImportConfig(dg.Config):
    """What to import: a ``path`` below the import root, or a ``url`` (exactly one)."""

    path: str = Field(default="", description="A media file below WATCH_IMPORT_ROOT, relative "
                      "to it or absolute.")
    url: str = Field(default="", description="An http(s) URL to download and import instead. "
                     "It is kept with the run's config: give no URL holding a password.")
    owner: int | None = Field(default=None, description="Owner user id (default 1).")
    collections: list[str] = Field(default=[], description="Collections the media joins.")
    tags: list[str] = Field(default=[], description="Tags of the media.")
    transcribe: bool = Field(default=True, description="Transcribe it after the import.")


@dg.op(name="manual_import", out=dg.Out(dg.Nothing),
       description="Checks, fingerprints and deduplicates one file or URL and records it for "
                   "import; local_watch_sensor starts the import run.")
def manual_import_op(context: dg.OpExecutionContext, config: ManualImportConfig,
                     catalog: CatalogResource, sources: SourcesResource,
                     manual_import: ManualImportResource) -> dg.Output:
    """Register the arrival; a refusal (outside the root, not media, 404, ...) fails clearly.

    Re-running is harmless: the same file again is reported as already queued or imported.
    """
    options = manual.ManualOptions(config.owner, tuple(config.collections), tuple(config.tags),
                                   config.transcribe)
    if bool(config.path.strip()) == bool(config.url.strip()):
        raise dg.Failure(description="give exactly one of path and url", allow_retries=False)
    try:
        if config.url.strip():
            if "@" in config.url.split("://", 1)[-1].split("/", 1)[0]:
                raise manual.ManualImportError(
                    "a URL with a user name or password would be kept in the run's config; "
                    "use `watch-pipeline media import --url` for it")
            arrival = manual.register_url(catalog.get(), config.url, scratch=sources.scratch(),
                                          options=options)
        else:
            root = manual_import.root()
            path = manual.resolve_under_root(root, config.path)
            arrival = manual.register_path(catalog.get(), path, options=options, within=root)
    except (manual.ManualImportError, SourceError, ValidationError) as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    context.log.info(f"{arrival.path}: {arrival.message}")
    return dg.Output(None, metadata={
        "outcome": arrival.outcome, "status": arrival.status, "path": arrival.path,
        "filename": arrival.filename, "bytes": arrival.size, "fingerprint": arrival.fingerprint,
        "partition": arrival.partition_key or "", "media_id": arrival.media_id or 0,
        "origin": arrival.origin, "message": arrival.message})


@dg.job(name="manual_import_job", tags={"watch_pipeline/kind": "manual_import"},
        description="Import one media file below WATCH_IMPORT_ROOT, or one URL, through the "
                    "same fingerprint → dedup → partition → import path as watched files.")
def manual_import_job() -> None:
    """One op registering the file; the watch sensor imports it."""
    manual_import_op()
