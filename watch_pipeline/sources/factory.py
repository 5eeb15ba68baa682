"""Build the right :class:`SourceClient` for one catalog ``watch_source`` row.

Adding a source type is one module implementing :class:`SourceClient` plus one line in
``_BUILDERS``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from watch_pipeline.catalog.models import SourceType
from watch_pipeline.sources.base import SourceClient, SourceError
from watch_pipeline.sources.local import LocalSourceClient, resolve_root
from watch_pipeline.sources.s3 import S3SourceClient
from watch_pipeline.sources.smb import SMBSourceClient


class SourceConfig(Protocol):
    """What the factory reads from a source (a ``WatchSource`` row or any look-alike)."""

    source_type: str
    local_path: str | None


_Builder = Callable[[Any, Path, Mapping[str, str] | None], SourceClient]


def _build_local(
    source: SourceConfig, watch_folder: Path, secrets: Mapping[str, str] | None
) -> SourceClient:
    rel = source.local_path or ""
    # The catalog validates the text too; checked again (and resolved, so that a symlink cannot
    # lead out of the watch folder) because the result becomes a trusted root. A folder that
    # does not exist yet is refused only when it is listed.
    resolve_root(watch_folder, rel, must_exist=False)
    return LocalSourceClient(Path(watch_folder) / rel, watch_root=Path(watch_folder))


def _build_s3(
    source: Any, watch_folder: Path, secrets: Mapping[str, str] | None
) -> SourceClient:
    return S3SourceClient(
        bucket=source.s3_bucket_name or "", prefix=source.s3_prefix or "",
        endpoint_url=source.s3_endpoint_url, region=source.s3_region,
        access_key_id=source.s3_access_key_id, secret_access_key=(secrets or {}).get("secret"),
        use_ssl=source.s3_use_ssl is not False)


def _build_smb(
    source: Any, watch_folder: Path, secrets: Mapping[str, str] | None
) -> SourceClient:
    return SMBSourceClient(
        server=source.smb_server or "", share=source.smb_share or "", path=source.smb_path or "/",
        username=source.smb_username, password=(secrets or {}).get("secret"),
        domain=source.smb_domain, port=source.smb_port or 445)


_BUILDERS: dict[str, _Builder] = {
    SourceType.LOCAL: _build_local,
    SourceType.S3: _build_s3,
    SourceType.SMB: _build_smb,
}


def create_client(
    source: SourceConfig,
    *,
    watch_folder: Path,
    secrets: Mapping[str, str] | None = None,
) -> SourceClient:
    """Return an unconnected client for ``source``.

    Args:
        source: Any object with ``source_type`` and the attributes its type needs
            (``local_path`` for ``"local"``).
        watch_folder: ``WATCH_FOLDER_PATH``; local sources live below it.
        secrets: Decrypted credentials for remote sources; unused by ``"local"``.

    Returns:
        A :class:`SourceClient`; nothing is opened until one of its methods is called.

    Raises:
        SourceError: ``source_type`` is not supported.
        UnsafePathError: A local source's ``local_path`` is absolute, contains ``..`` or
            resolves outside ``watch_folder``.

    """
    builder = _BUILDERS.get(source.source_type)
    if builder is None:
        supported = ", ".join(sorted(_BUILDERS))
        raise SourceError(
            f"unsupported source type {source.source_type!r} (supported: {supported})"
        )
    return builder(source, Path(watch_folder), secrets)
