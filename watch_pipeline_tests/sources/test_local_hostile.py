"""A local source over the kind of folder people really have, and over one set up to escape.

Everything here runs on the real file system: undecodable names, symlink loops, paths longer
than the system allows, roots and folders that lead out of the watch folder through symlinks.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from watch_pipeline.sources import local as local_module
from watch_pipeline.sources.base import (
    MAX_REMOTE_PATH,
    RejectedEntry,
    SourceError,
    SourceNotFoundError,
    UnsafePathError,
    path_bytes,
)
from watch_pipeline.sources.factory import create_client
from watch_pipeline.sources.local import LocalSourceClient, resolve_root
from watch_pipeline_tests.sources.local_files import listing, write


@pytest.fixture
def watch(tmp_path: Path) -> Path:
    """The watch folder (WATCH_FOLDER_PATH)."""
    folder = tmp_path / "watch"
    folder.mkdir()
    return folder


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder beside the watch folder holding a file no source may reach."""
    write(tmp_path / "outside" / "clip.mp4", b"secret")
    return tmp_path / "outside"


def _deep_folder(top: Path, *, levels: int, name_length: int = 200) -> Path:
    """Create ``levels`` nested folders of ``name_length`` characters each, below ``top``.

    Made with ``dir_fd`` one level at a time: the whole path is longer than the system accepts.
    """
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for level in range(levels):
            name = f"{level:02d}" + "d" * (name_length - 2)
            os.mkdir(name, dir_fd=fd)
            child = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        with open(os.open("deep.mp4", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "wb") as fh:
            fh.write(b"deep")
    finally:
        os.close(fd)
    return top.joinpath(*(f"{level:02d}" + "d" * (name_length - 2) for level in range(levels)))


# -- one bad entry never stops a listing ---


def test_a_name_that_is_not_utf8_is_rejected_escaped_and_the_listing_goes_on(watch: Path) -> None:
    write(watch / "good.mp4")
    raw_file = os.fsencode(watch) + b"/caf\xe9 \\ take.mp4"
    raw_folder = os.fsencode(watch) + b"/d\xff\xfe"
    with open(raw_file, "wb") as fh:
        fh.write(b"latin-1 name")
    os.mkdir(raw_folder)
    with open(raw_folder + b"/inside.mp4", "wb") as fh:
        fh.write(b"x")

    files, rejected = listing(LocalSourceClient(watch))

    assert files == {"good.mp4"}
    shown = {e.remote_path: (e.reason, e.skip_reason) for e in rejected}
    assert shown == {
        "caf\\xe9 \\\\ take.mp4": ("name is not valid UTF-8", "unreadable_name"),
        "d\\xff\\xfe": ("name is not valid UTF-8", "unreadable_name"),
    }
    for entry in rejected:
        entry.remote_path.encode("utf-8")  # storable in a VARCHAR as it is
    assert os.fsencode(watch) + b"/" + path_bytes("caf\\xe9 \\\\ take.mp4") == raw_file
    assert os.fsencode(watch) + b"/" + path_bytes("d\\xff\\xfe") == raw_folder


def test_symlink_loops_anywhere_are_rejected_and_the_listing_goes_on(watch: Path) -> None:
    write(watch / "good.mp4")
    (watch / "a").mkdir()
    (watch / "a" / "self.mp4").symlink_to("self.mp4")
    (watch / "a" / "ping.mp4").symlink_to("pong.mp4")
    (watch / "a" / "pong.mp4").symlink_to("ping.mp4")
    (watch / "circle").symlink_to(watch / "circle" / "x")  # a folder link through itself

    files, rejected = listing(LocalSourceClient(watch))

    assert files == {"good.mp4"}
    assert {(e.remote_path, e.reason, e.skip_reason) for e in rejected} == {
        ("a/self.mp4", "symlink loop", "symlink_loop"),
        ("a/ping.mp4", "symlink loop", "symlink_loop"),
        ("a/pong.mp4", "symlink loop", "symlink_loop"),
        ("circle", "symlink loop", "symlink_loop"),
    }


def test_a_path_longer_than_the_system_allows_is_rejected_and_the_listing_goes_on(
    watch: Path,
) -> None:
    write(watch / "good.mp4")
    _deep_folder(watch, levels=25)  # 5000 characters below the root

    files, rejected = listing(LocalSourceClient(watch))

    assert files == {"good.mp4"}
    [entry] = rejected
    assert entry.skip_reason == "path_too_long"
    assert entry.reason.startswith("path is too long")
    assert len(entry.remote_path) <= MAX_REMOTE_PATH
    assert entry.remote_path.startswith("00dddd")
    # The same folder is named the same way on every scan: one catalog row.
    [again] = listing(LocalSourceClient(watch))[1]
    assert again == entry


def test_an_unusual_error_on_one_folder_becomes_a_rejected_entry(
    watch: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(watch / "good.mp4")
    write(watch / "flaky" / "lost.mp4")
    real_scandir = os.scandir

    def scandir(path):
        if isinstance(path, int) and os.readlink(f"/proc/self/fd/{path}").endswith("/flaky"):
            raise OSError(5, "Input/output error")
        return real_scandir(path)

    monkeypatch.setattr(local_module.os, "scandir", scandir)

    files, rejected = listing(LocalSourceClient(watch))

    assert files == {"good.mp4"}
    assert rejected == [
        RejectedEntry("flaky", "cannot be read: Input/output error", "validation_failed")
    ]


# -- a root that cannot be used raises SourceError with a clear message ---


@pytest.mark.parametrize(
    ("make_root", "message"),
    [
        (lambda w: w / "loop", "is a symlink loop"),
        (lambda w: w / ("n" * 300), "path too long"),
        (lambda w: _deep_folder(w, levels=25), "path too long"),
    ],
    ids=["looping-symlink", "300-char-name", "5000-char-path"],
)
def test_an_unusable_root_is_a_source_error_with_a_clear_message(
    watch: Path, make_root, message: str
) -> None:
    (watch / "loop").symlink_to(watch / "loop")
    client = LocalSourceClient(make_root(watch))

    for call in (client.test_connection, client.list_files, lambda: client.open("a.mp4")):
        with pytest.raises(SourceError, match=message) as raised:
            call()
        assert len(str(raised.value)) < 400  # a 5000-character path is shortened


def test_resolve_root_refuses_unusable_folders(watch: Path) -> None:
    (watch / "loop").symlink_to(watch / "loop")
    write(watch / "file")

    with pytest.raises(SourceNotFoundError, match="does not exist"):
        resolve_root(watch, "missing")
    with pytest.raises(SourceNotFoundError, match="not a directory"):
        resolve_root(watch, "file")
    with pytest.raises(SourceError, match="symlink loop"):
        resolve_root(watch, "loop")
    with pytest.raises(SourceError, match="too long"):
        resolve_root(watch, "n" * 300)
    with pytest.raises(SourceError, match="too long"):
        resolve_root(watch, "/".join(["d" * 200] * 25))
    assert resolve_root(watch, "") == watch.resolve()


# -- containment: the root stays inside the watch folder ---


def test_a_root_that_leads_out_of_the_watch_folder_is_refused(
    watch: Path, outside: Path
) -> None:
    (watch / "escape").symlink_to(outside, target_is_directory=True)
    source = SimpleNamespace(source_type="local", local_path="escape")

    with pytest.raises(UnsafePathError, match="outside the watch folder"):
        resolve_root(watch, "escape")
    with pytest.raises(UnsafePathError):
        create_client(source, watch_folder=watch)
    client = LocalSourceClient(watch / "escape", watch_root=watch)
    with pytest.raises(UnsafePathError):
        client.test_connection()
    with pytest.raises(UnsafePathError):
        client.list_files()
    with pytest.raises(UnsafePathError):
        client.delete("clip.mp4")
    assert (outside / "clip.mp4").read_bytes() == b"secret"


def test_a_root_inside_the_watch_folder_through_a_symlink_is_accepted(watch: Path) -> None:
    write(watch / "teams" / "a" / "talk.mp4")
    (watch / "alias").symlink_to(watch / "teams" / "a", target_is_directory=True)

    assert resolve_root(watch, "alias") == (watch / "teams" / "a").resolve()
    client = create_client(
        SimpleNamespace(source_type="local", local_path="alias"), watch_folder=watch
    )
    assert {e.remote_path for e in client.list_files()} == {"talk.mp4"}


def test_a_root_swapped_for_a_link_out_after_the_client_was_made_is_refused_atlisting(
    watch: Path, outside: Path
) -> None:
    write(watch / "inbox" / "talk.mp4")
    client = create_client(
        SimpleNamespace(source_type="local", local_path="inbox"), watch_folder=watch
    )
    assert {e.remote_path for e in client.list_files()} == {"talk.mp4"}

    (watch / "inbox").rename(watch / "inbox.old")
    (watch / "inbox").symlink_to(outside, target_is_directory=True)

    with pytest.raises(UnsafePathError, match="outside"):
        client.list_files()
    with pytest.raises(UnsafePathError):
        client.open("clip.mp4")


@pytest.fixture
def swap_before_access(monkeypatch: pytest.MonkeyPatch) -> Iterator[list]:
    """Run a queued swap just before the client's next ``os.open`` or ``os.unlink``.

    This is the race an uploader with write access to the watch folder can try: whatever the
    client checked before, the file is then reached through a link.
    """
    pending: list = []

    def before(real):
        def call(*args, **kwargs):
            if pending:
                pending.pop()()
            return real(*args, **kwargs)

        return call

    monkeypatch.setattr(local_module.os, "open", before(os.open))
    monkeypatch.setattr(local_module.os, "unlink", before(os.unlink))
    yield pending


def test_a_folder_swapped_for_a_link_out_after_the_listing_is_never_followed(
    watch: Path, outside: Path, swap_before_access: list
) -> None:
    write(watch / "sub" / "clip.mp4", b"mine")
    client = LocalSourceClient(watch, watch_root=watch)
    assert {e.remote_path for e in client.list_files()} == {"sub/clip.mp4"}

    def swap() -> None:
        (watch / "sub").rename(watch / "sub.old")
        (watch / "sub").symlink_to(outside, target_is_directory=True)

    def swap_back() -> None:
        (watch / "sub").unlink()
        (watch / "sub.old").rename(watch / "sub")
        swap()

    swap_before_access.append(swap)
    with pytest.raises(UnsafePathError):
        client.open("sub/clip.mp4").read()
    with pytest.raises(UnsafePathError):
        client.local_path("sub/clip.mp4")
    swap_before_access.append(swap_back)
    with pytest.raises(UnsafePathError):
        client.delete("sub/clip.mp4")  # delete_after_import
    assert (outside / "clip.mp4").read_bytes() == b"secret"
    assert (watch / "sub.old" / "clip.mp4").read_bytes() == b"mine"


def test_a_file_swapped_for_a_link_out_is_neither_read_nor_its_target_deleted(
    watch: Path, outside: Path
) -> None:
    write(watch / "clip.mp4", b"mine")
    client = LocalSourceClient(watch, watch_root=watch)
    (watch / "clip.mp4").unlink()
    (watch / "clip.mp4").symlink_to(outside / "clip.mp4")

    with pytest.raises(UnsafePathError):
        client.open("clip.mp4")
    client.delete("clip.mp4")  # removes the link itself

    assert not (watch / "clip.mp4").is_symlink()
    assert (outside / "clip.mp4").read_bytes() == b"secret"


def test_links_inside_the_root_keep_working_relative_and_absolute(tmp_path: Path) -> None:
    real = tmp_path / "real-watch"
    write(real / "inbox" / "take" / "clip.mp4", b"abc")
    configured = tmp_path / "watch-link"
    configured.symlink_to(real, target_is_directory=True)  # WATCH_FOLDER_PATH via a link
    root = configured / "inbox"
    (real / "inbox" / "relative.mp4").symlink_to("take/clip.mp4")
    (real / "inbox" / "absolute.mp4").symlink_to(root / "take" / "clip.mp4")
    (real / "inbox" / "dotted.mp4").symlink_to("take/../take/./clip.mp4")
    client = LocalSourceClient(root, watch_root=configured)

    files, rejected = listing(client)

    assert files == {"take/clip.mp4", "relative.mp4", "absolute.mp4", "dotted.mp4"}
    assert rejected == []
    for name in files:
        with client.open(name) as fh:
            assert fh.read() == b"abc"
        assert client.local_path(name) == real / "inbox" / "take" / "clip.mp4"
