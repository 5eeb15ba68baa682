from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from watch_pipeline.sources.base import SourceError, UnsafePathError
from watch_pipeline.sources.factory import create_client
from watch_pipeline.sources.local import LocalSourceClient


def test_local_source_is_rooted_below_the_watch_folder(tmp_path: Path) -> None:
    source = SimpleNamespace(source_type="local", local_path="team/inbox")

    client = create_client(source, watch_folder=tmp_path)

    assert isinstance(client, LocalSourceClient)
    assert client.root == tmp_path / "team" / "inbox"


def test_local_source_without_path_watches_the_whole_folder(tmp_path: Path) -> None:
    client = create_client(
        SimpleNamespace(source_type="local", local_path=None), watch_folder=tmp_path
    )

    assert client.root == tmp_path


@pytest.mark.parametrize("local_path", ["/etc", "../other", "a/../../b"])
def test_local_path_escaping_the_watch_folder_is_refused(tmp_path: Path, local_path: str) -> None:
    with pytest.raises(UnsafePathError):
        create_client(
            SimpleNamespace(source_type="local", local_path=local_path), watch_folder=tmp_path
        )


def test_unknown_source_type_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="unsupported source type 'ftp'"):
        create_client(SimpleNamespace(source_type="ftp", local_path=None), watch_folder=tmp_path)
