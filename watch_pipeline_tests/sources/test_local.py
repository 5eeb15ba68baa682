from __future__ import annotations

import os
import time
import types
from datetime import UTC, datetime
from pathlib import Path

import pytest

from watch_pipeline.sources import local as local_module
from watch_pipeline.sources.base import (
    BrowseEntry,
    SourceEntry,
    SourceError,
    SourceNotFoundError,
    SourcePermissionError,
    UnsafePathError,
)
from watch_pipeline.sources.local import LocalSourceClient
from watch_pipeline_tests.sources.local_files import listing, write


def _files(client: LocalSourceClient, **kwargs) -> set[str]:
    return listing(client, **kwargs)[0]


def _rejected(client: LocalSourceClient, **kwargs) -> dict[str, str]:
    return {e.remote_path: e.reason for e in listing(client, **kwargs)[1]}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "watch"
    root.mkdir()
    return root


# -- listing ---


def test_lists_nested_folders_only_when_recursive(root: Path) -> None:
    write(root / "top.mp4")
    write(root / "a" / "mid.mp4")
    write(root / "a" / "b" / "deep.wav")
    client = LocalSourceClient(root)

    assert _files(client) == {"top.mp4", "a/mid.mp4", "a/b/deep.wav"}
    assert _files(client, recursive=False) == {"top.mp4"}


def test_entry_carries_size_and_utc_mtime(root: Path) -> None:
    path = write(root / "clip.mp4", b"12345")
    os.utime(path, (1_700_000_000, 1_700_000_000))

    [entry] = LocalSourceClient(root).list_files()

    assert entry == SourceEntry(
        "clip.mp4", 5, datetime.fromtimestamp(1_700_000_000, tz=UTC), etag=None
    )
    assert entry.mtime.tzinfo is UTC


def test_extension_filter_is_case_insensitive(root: Path) -> None:
    write(root / "upper.MP4")
    write(root / "lower.mp4")
    write(root / "notes.txt")
    write(root / "sub" / "Mixed.Mp4")
    client = LocalSourceClient(root)

    assert _files(client, extensions=(".mp4",)) == {"upper.MP4", "lower.mp4", "sub/Mixed.Mp4"}
    assert _files(client, extensions=(".wav",)) == set()
    assert _files(client) == {"upper.MP4", "lower.mp4", "notes.txt", "sub/Mixed.Mp4"}


def test_hidden_names_and_folders_are_skipped(root: Path) -> None:
    write(root / "meeting.mp4")
    write(root / ".meeting.mp4.Xy12ab")  # rsync's in-progress name
    write(root / ".hidden" / "inside.mp4")

    assert _files(LocalSourceClient(root)) == {"meeting.mp4"}


def test_listing_is_a_stream_not_a_list(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for d in range(100):
        folder = root / f"d{d:03}"
        folder.mkdir()
        for f in range(100):
            (folder / f"f{f:03}.mp4").touch()
    opened: list[str] = []
    real_scandir = os.scandir

    def spy(path):
        opened.append(str(path))
        return real_scandir(path)

    monkeypatch.setattr(local_module.os, "scandir", spy)
    client = LocalSourceClient(root)

    started = time.perf_counter()
    listing = client.list_files()
    assert isinstance(listing, types.GeneratorType)
    first = next(listing)
    # The root and one sub-folder were read; the other 99 were not touched yet.
    assert isinstance(first, SourceEntry)
    assert len(opened) == 2
    count = 1 + sum(1 for _ in listing)
    elapsed = time.perf_counter() - started

    assert count == 10_000
    assert len(opened) == 101
    assert elapsed < 5, f"listing 10 000 files took {elapsed:.1f}s"


def test_missing_root_raises_not_found(tmp_path: Path) -> None:
    client = LocalSourceClient(tmp_path / "nope")

    with pytest.raises(SourceNotFoundError, match="does not exist"):
        client.list_files()
    with pytest.raises(SourceNotFoundError, match="does not exist"):
        client.test_connection()


def test_root_that_is_a_file_raises_not_found(tmp_path: Path) -> None:
    client = LocalSourceClient(write(tmp_path / "file"))

    with pytest.raises(SourceNotFoundError, match="not a directory"):
        client.test_connection()


def test_connection_test_passes_and_shows_the_folder(root: Path, tmp_path: Path) -> None:
    # What `watch-pipeline source test` shows: the connection passes, then the root's listing.
    write(root / "talk.mp4", b"abc")
    (root / "sub").mkdir()
    client = LocalSourceClient(root)

    assert client.test_connection() is None
    assert client.browse() == [BrowseEntry("folder", "sub"), BrowseEntry("file", "talk.mp4", 3)]
    with pytest.raises(SourceNotFoundError, match="does not exist"):
        LocalSourceClient(tmp_path / "gone").test_connection()


# -- permissions ---


def _deny(monkeypatch: pytest.MonkeyPatch, denied: Path) -> None:
    """Make os.scandir refuse one folder: works as root too, who bypasses mode bits."""
    real_scandir = os.scandir

    def scandir(path):
        # The client lists folders it opened itself: find out which one the descriptor is.
        named = os.readlink(f"/proc/self/fd/{path}") if isinstance(path, int) else path
        if Path(named) == denied.resolve():
            raise PermissionError(13, "Permission denied", str(named))
        return real_scandir(path)

    monkeypatch.setattr(local_module.os, "scandir", scandir)


def test_unreadable_subfolder_is_reported_and_the_scan_goes_on(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(root / "ok.mp4")
    write(root / "locked" / "secret.mp4")
    write(root / "open" / "fine.mp4")
    _deny(monkeypatch, root / "locked")
    client = LocalSourceClient(root)

    assert _files(client) == {"ok.mp4", "open/fine.mp4"}
    assert _rejected(client) == {"locked": "permission denied"}


def test_unreadable_root_raises_permission_error(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _deny(monkeypatch, root)
    client = LocalSourceClient(root)

    with pytest.raises(SourcePermissionError):
        client.test_connection()
    with pytest.raises(SourcePermissionError):
        list(client.list_files())


@pytest.mark.skipif(
    os.geteuid() == 0, reason="root bypasses mode 000; covered by the scandir-denial tests above"
)
def test_mode_000_subfolder_is_reported(root: Path) -> None:
    write(root / "ok.mp4")
    locked = root / "locked"
    write(locked / "secret.mp4")
    locked.chmod(0)
    try:
        client = LocalSourceClient(root)
        assert _files(client) == {"ok.mp4"}
        assert _rejected(client) == {"locked": "permission denied"}
    finally:
        locked.chmod(0o755)


# -- symlinks and unsafe paths ---


def test_symlink_to_file_outside_root_is_rejected_and_never_opened(
    root: Path, tmp_path: Path
) -> None:
    outside = write(tmp_path / "outside" / "secret.mp4", b"secret")
    (root / "link.mp4").symlink_to(outside)
    client = LocalSourceClient(root)

    assert _files(client) == set()
    assert _rejected(client) == {"link.mp4": "symlink points outside the watch root"}
    with pytest.raises(UnsafePathError):
        client.open("link.mp4")
    with pytest.raises(UnsafePathError):
        client.local_path("link.mp4")


def test_symlinked_folder_outside_root_is_not_descended(root: Path, tmp_path: Path) -> None:
    write(tmp_path / "outside" / "secret.mp4")
    (root / "elsewhere").symlink_to(tmp_path / "outside", target_is_directory=True)
    client = LocalSourceClient(root)

    assert _files(client) == set()
    assert _rejected(client) == {"elsewhere": "symlink points outside the watch root"}
    assert _rejected(client, recursive=False) == {}
    with pytest.raises(UnsafePathError):
        client.open("elsewhere/secret.mp4")


def test_symlinks_inside_root_files_followed_folders_not(root: Path) -> None:
    write(root / "real" / "clip.mp4", b"abc")
    (root / "alias.mp4").symlink_to(root / "real" / "clip.mp4")
    (root / "loop").symlink_to(root, target_is_directory=True)  # would recurse for ever
    (root / "real-again").symlink_to(root / "real", target_is_directory=True)
    client = LocalSourceClient(root)

    entries = {e.remote_path: e for e in client.list_files()}
    assert set(entries) == {"real/clip.mp4", "alias.mp4"}
    assert entries["alias.mp4"].size == 3
    with client.open("alias.mp4") as fh:
        assert fh.read() == b"abc"


def test_broken_symlink_is_rejected(root: Path) -> None:
    (root / "gone.mp4").symlink_to(root / "missing.mp4")

    assert _rejected(LocalSourceClient(root)) == {"gone.mp4": "broken symlink"}


@pytest.mark.parametrize(
    "path",
    ["../x", "/etc/passwd", "a/../../x", "a/../b", "..", "", "bad\x00name", "sub/../../etc/passwd"],
)
def test_unsafe_paths_are_refused(root: Path, tmp_path: Path, path: str) -> None:
    write(tmp_path / "x")
    write(root / "b")
    client = LocalSourceClient(root)

    with pytest.raises(UnsafePathError):
        client.open(path)
    with pytest.raises(UnsafePathError):
        client.local_path(path)
    with pytest.raises(UnsafePathError):
        client.delete(path)
    with pytest.raises(UnsafePathError):
        client.upload(write(tmp_path / "src"), path)
    assert (tmp_path / "x").exists()


def test_upload_through_a_symlinked_folder_outside_is_refused(root: Path, tmp_path: Path) -> None:
    (tmp_path / "outside").mkdir()
    (root / "elsewhere").symlink_to(tmp_path / "outside", target_is_directory=True)
    client = LocalSourceClient(root)

    with pytest.raises(UnsafePathError):
        client.upload(write(tmp_path / "src"), "elsewhere/planted.mp4")
    assert not (tmp_path / "outside" / "planted.mp4").exists()


def test_open_is_read_only_and_seekable(root: Path) -> None:
    write(root / "clip.mp4", b"0123456789")
    client = LocalSourceClient(root)

    with client.open("clip.mp4") as fh:
        assert fh.seekable()
        fh.seek(4)
        assert fh.read(3) == b"456"
        assert not fh.writable()
    assert client.local_path("clip.mp4") == (root / "clip.mp4").resolve()


def test_open_missing_file_raises_not_found(root: Path) -> None:
    with pytest.raises(SourceNotFoundError):
        LocalSourceClient(root).open("nothing.mp4")


def test_open_refuses_a_fifo_without_blocking(root: Path) -> None:
    os.mkfifo(root / "pipe.mp4")
    client = LocalSourceClient(root)

    assert _files(client) == set()
    with pytest.raises(SourceNotFoundError, match="not a regular file"):
        client.open("pipe.mp4")


# -- upload / download / delete ---


def test_upload_download_delete_round_trip(root: Path, tmp_path: Path) -> None:
    payload = os.urandom(3 * 1024 * 1024 + 17)
    src = write(tmp_path / "src.mp4", payload)
    client = LocalSourceClient(root)

    client.upload(src, "out/stitched.mp4")
    assert (root / "out" / "stitched.mp4").read_bytes() == payload
    assert sorted(p.name for p in (root / "out").iterdir()) == ["stitched.mp4"]  # no temp left
    assert _files(client) == {"out/stitched.mp4"}

    dest = client.download(
        "out/stitched.mp4", tmp_path / "dl" / "copy.mp4", expected_size=len(payload)
    )
    assert dest == tmp_path / "dl" / "copy.mp4"
    assert dest.read_bytes() == payload

    client.delete("out/stitched.mp4")
    assert not (root / "out" / "stitched.mp4").exists()
    client.delete("out/stitched.mp4")  # already gone: a re-run is harmless
    assert _files(client) == set()


def test_download_with_wrong_expected_size_fails_and_leaves_nothing(
    root: Path, tmp_path: Path
) -> None:
    write(root / "clip.mp4", b"abc")
    dest = tmp_path / "copy.mp4"

    with pytest.raises(SourceError, match="changed"):
        LocalSourceClient(root).download("clip.mp4", dest, expected_size=4)
    assert not dest.exists()


def test_delete_of_a_symlink_removes_the_link_not_its_target(root: Path) -> None:
    target = write(root / "real" / "clip.mp4")
    (root / "alias.mp4").symlink_to(target)

    LocalSourceClient(root).delete("alias.mp4")

    assert not (root / "alias.mp4").is_symlink()
    assert target.exists()
