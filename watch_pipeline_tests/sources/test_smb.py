"""SMBSourceClient against a real Samba ``smbd`` on loopback (the ``smb_server`` fixture).

Files are created directly in the folder backing the share; the client sees them over SMB.
Where a test must count bytes or act at a known point of a download, it wraps the outermost
third-party calls the client makes: ``smbclient.open_file`` and smbprotocol's
``Connection.receive`` (which every READ response passes through).
"""

from __future__ import annotations

import os
import random
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import imohash
import pytest
import smbclient
from smbprotocol.connection import Connection
from smbprotocol.header import Commands
from smbprotocol.open import SMB2ReadResponse

from watch_pipeline.pipeline.fingerprint import imohash_fileobj
from watch_pipeline.sources._transfer import partial_file
from watch_pipeline.sources.base import (
    BrowseEntry,
    RejectedEntry,
    SourceAuthError,
    SourceChangedError,
    SourceEntry,
    SourceError,
    SourceNotFoundError,
    SourcePermissionError,
    SourceUnreachableError,
    UnsafePathError,
)
from watch_pipeline.sources.factory import create_client
from watch_pipeline.sources.smb import SMBSourceClient
from watch_pipeline_tests.fixtures.smb_server import SambaServer, _free_port

KIB = 1024
MIB = 1024 * KIB


def random_bytes(size: int, *, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def put(path: Path, data: bytes) -> Path:
    """Create ``path`` below the share with ``data``; folders writable by the share's user."""
    for parent in reversed(path.parents):
        if not parent.exists():
            parent.mkdir()
            parent.chmod(0o777)
    path.write_bytes(data)
    return path


@pytest.fixture
def folder(smb_server: SambaServer) -> Iterator[tuple[str, Path]]:
    """A fresh folder on the share for one test: (its path on the share, its local path)."""
    if not smb_server.running:  # a previous test stopped it and failed before restarting
        smb_server.start()
    name = f"t_{uuid.uuid4().hex[:12]}"
    local = smb_server.share_path / name
    local.mkdir()
    local.chmod(0o777)
    yield name, local
    for path in [local, *local.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o777)
    shutil.rmtree(local, ignore_errors=True)


def make_client(server: SambaServer, path: str = "/", **kwargs: Any) -> SMBSourceClient:
    options: dict[str, Any] = {
        "username": server.username,
        "password": server.password,
        "domain": server.domain,
        "port": server.port,
        "connect_timeout": 5,
        "read_timeout": 10,
        **kwargs,
    }
    return SMBSourceClient(server=server.host, share=server.share, path=path, **options)


@pytest.fixture
def client(smb_server: SambaServer, folder: tuple[str, Path]) -> Iterator[SMBSourceClient]:
    with make_client(smb_server, folder[0]) as smb:
        yield smb


def listed(client: SMBSourceClient, **kwargs: Any) -> set[str]:
    return {e.remote_path for e in client.list_files(**kwargs) if isinstance(e, SourceEntry)}


class WireSpy:
    """Counts what crosses the wire: READ payload bytes received, READ responses, files opened.

    Wraps ``Connection.receive``, through which every response comes (pipelined or not), and
    ``smbclient.open_file``. ``action`` runs once, inside the receive that brings the total to
    ``after`` bytes or more (that response is still delivered).
    """

    def __init__(
        self,
        monkeypatch: pytest.MonkeyPatch,
        *,
        after: int | None = None,
        action: Callable[[], None] | None = None,
    ) -> None:
        self.bytes_read = 0
        self.reads = 0
        self.opens = 0
        self._after = after
        self._action = action
        real_receive = Connection.receive
        real_open = smbclient.open_file

        def receive(connection: Connection, request: Any, *args: Any, **kwargs: Any) -> Any:
            response = real_receive(connection, request, *args, **kwargs)
            if request.message["command"].get_value() == Commands.SMB2_READ:
                self._received(response)
            return response

        def open_file(*args: Any, **kwargs: Any) -> Any:
            self.opens += 1
            return real_open(*args, **kwargs)

        monkeypatch.setattr(Connection, "receive", receive)
        monkeypatch.setattr(smbclient, "open_file", open_file)

    def _received(self, response: Any) -> None:
        read = SMB2ReadResponse()
        read.unpack(response["data"].get_value())
        self.bytes_read += len(read["buffer"].get_value())
        self.reads += 1
        if self._after is not None and self.bytes_read >= self._after and self._action:
            action, self._action = self._action, None
            action()

    def reset(self) -> None:
        self.bytes_read = self.reads = self.opens = 0


# -- listing ---------------------------------------------------------------------------------


@pytest.fixture
def tree(folder: tuple[str, Path]) -> str:
    name, local = folder
    put(local / "a.mp4", b"aaa")
    put(local / "B.MOV", b"bb")
    put(local / "notes.txt", b"n")
    put(local / ".hidden.mp4", b"h")
    put(local / ".cache" / "x.mp4", b"x")
    put(local / "sub" / "c.mp4", b"cccc")
    put(local / "sub" / "deeper" / "d.wav", b"ddddd")
    return name


def test_lists_recursively_relative_to_the_folder(smb_server: SambaServer, tree: str) -> None:
    with make_client(smb_server, tree) as client:
        assert listed(client) == {"a.mp4", "B.MOV", "notes.txt", "sub/c.mp4", "sub/deeper/d.wav"}


def test_stat_is_the_listed_entry_and_none_once_gone(
    smb_server: SambaServer, tree: str, folder: tuple[str, Path]
) -> None:
    with make_client(smb_server, tree) as client:
        listing = {e.remote_path: e for e in client.list_files() if isinstance(e, SourceEntry)}

        assert client.stat("sub/deeper/d.wav") == listing["sub/deeper/d.wav"]  # same mtime
        assert client.stat("a.mp4") == listing["a.mp4"]
        assert client.stat("sub/missing.mp4") is None
        assert client.stat("gone/a.mp4") is None  # nor its folder
        (folder[1] / "a.mp4").unlink()
        assert client.stat("a.mp4") is None


def test_folder_below_the_share_root_is_the_root(smb_server: SambaServer, tree: str) -> None:
    with make_client(smb_server, f"/{tree}/sub/") as client:
        assert listed(client) == {"c.mp4", "deeper/d.wav"}
    with make_client(smb_server, f"\\{tree}\\sub") as client:
        assert listed(client, recursive=False) == {"c.mp4"}


def test_non_recursive_listing(smb_server: SambaServer, tree: str) -> None:
    with make_client(smb_server, tree) as client:
        assert listed(client, recursive=False) == {"a.mp4", "B.MOV", "notes.txt"}


def test_extensions_match_case_insensitively(smb_server: SambaServer, tree: str) -> None:
    with make_client(smb_server, tree) as client:
        assert listed(client, extensions=(".mp4", "mov")) == {"a.mp4", "B.MOV", "sub/c.mp4"}


def test_entries_carry_size_and_utc_mtime_and_no_etag(
    smb_server: SambaServer, folder: tuple[str, Path]
) -> None:
    name, local = folder
    path = put(local / "clip.mp4", b"x" * 1234)
    os.utime(path, (1_700_000_000.25, 1_700_000_000.25))

    with make_client(smb_server, name) as client:
        [entry] = list(client.list_files())

    assert entry == SourceEntry(
        "clip.mp4", 1234, datetime.fromtimestamp(1_700_000_000.25, tz=UTC), None
    )
    assert entry.mtime.tzinfo is not None


def test_symlinks_leaving_the_share_are_never_listed_or_opened(
    smb_server: SambaServer, folder: tuple[str, Path], tmp_path: Path
) -> None:
    name, local = folder
    outside = put(tmp_path / "secret.mp4", b"secret")
    put(local / "real.mp4", b"real")
    (local / "escape.mp4").symlink_to(outside)
    (local / "escape_dir").symlink_to(tmp_path, target_is_directory=True)
    (local / "alias.mp4").symlink_to(local / "real.mp4")

    with make_client(smb_server, name) as client:
        entries = list(client.list_files())
        # Samba (wide links = no) hides links leaving the share; one inside reads as a file.
        assert {e.remote_path for e in entries} == {"real.mp4", "alias.mp4"}
        with pytest.raises(SourceError):
            client.open("escape.mp4")
        with pytest.raises(SourceError):
            client.open("escape_dir/secret.mp4")


def test_unreadable_subfolder_is_rejected_and_the_scan_goes_on(
    smb_server: SambaServer, folder: tuple[str, Path]
) -> None:
    name, local = folder
    put(local / "ok.mp4", b"ok")
    put(local / "locked" / "inside.mp4", b"no")
    (local / "locked").chmod(0o000)

    with make_client(smb_server, name) as client:
        entries = list(client.list_files())

    assert SourceEntry in {type(e) for e in entries}
    assert {e.remote_path for e in entries if isinstance(e, SourceEntry)} == {"ok.mp4"}
    assert RejectedEntry("locked", "permission denied") in entries


def test_browse_lists_one_level_folders_first(smb_server: SambaServer, tree: str) -> None:
    with make_client(smb_server, tree) as client:
        assert client.browse() == [
            BrowseEntry("folder", "sub"),
            BrowseEntry("file", "a.mp4", 3),
            BrowseEntry("file", "B.MOV", 2),
            BrowseEntry("file", "notes.txt", 1),
        ]
        assert client.browse("sub") == [
            BrowseEntry("folder", "deeper"),
            BrowseEntry("file", "c.mp4", 4),
        ]
        with pytest.raises(SourceNotFoundError):
            client.browse("nope")


# -- reading and fingerprints ----------------------------------------------------------------


@pytest.mark.parametrize(
    "size", [0, 1, 16 * KIB, 128 * KIB - 1, 128 * KIB, 128 * KIB + 1, 5 * MIB]
)
def test_fingerprint_equals_imohash_of_the_same_bytes(
    client: SMBSourceClient, folder: tuple[str, Path], size: int
) -> None:
    path = put(folder[1] / "clip.mp4", random_bytes(size, seed=size))

    with client.open("clip.mp4") as fh:
        fingerprint = imohash_fileobj(fh)

    assert fingerprint == imohash.hashfile(str(path), hexdigest=True)


def test_fingerprint_of_a_large_file_reads_only_three_windows(
    client: SMBSourceClient, folder: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    size = 50 * MIB
    path = folder[1] / "big.mp4"
    put(path, b"")
    with open(path, "r+b") as fh:  # sparse, with distinct bytes where imohash samples
        for offset in (0, size // 2 - 4 * KIB, size - 64 * KIB):
            fh.seek(offset)
            fh.write(random_bytes(64 * KIB, seed=offset))
        fh.truncate(size)
    spy = WireSpy(monkeypatch)

    [entry] = list(client.list_files())
    with client.open(entry.remote_path) as fh:
        fingerprint = imohash_fileobj(fh)

    assert fingerprint == imohash.hashfile(str(path), hexdigest=True)
    assert spy.bytes_read < 64 * KIB
    assert spy.reads == 3


def test_open_is_a_seekable_read_only_file(
    client: SMBSourceClient, folder: tuple[str, Path]
) -> None:
    put(folder[1] / "f.bin", bytes(range(256)) * 4)

    with client.open("f.bin") as fh:
        assert fh.seekable() and fh.readable() and not fh.writable()
        assert fh.seek(0, os.SEEK_END) == 1024
        fh.seek(250)
        assert fh.read(10) == bytes(range(250, 256)) + bytes(range(4))
        fh.seek(0)
        assert fh.read() == bytes(range(256)) * 4

    assert client.local_path("f.bin") is None


def test_open_missing_or_forbidden_file(client: SMBSourceClient, folder: tuple[str, Path]) -> None:
    put(folder[1] / "private.mp4", b"p").chmod(0o000)

    with pytest.raises(SourceNotFoundError, match=r"absent\.mp4 not found"):
        client.open("absent.mp4")
    with pytest.raises(SourcePermissionError, match=r"private\.mp4: access denied for TESTDOM\\"):
        client.open("private.mp4")


@pytest.mark.parametrize(
    "remote_path", ["../x.mp4", "a/../../x.mp4", "/abs.mp4", "a\\b.mp4", "f.mp4:stream", ""]
)
def test_unsafe_paths_are_refused_before_any_request(
    smb_server: SambaServer, remote_path: str, tmp_path: Path
) -> None:
    client = make_client(smb_server, port=_free_port())  # nothing listens: no request is made

    with pytest.raises(UnsafePathError):
        client.open(remote_path)
    with pytest.raises(UnsafePathError):
        client.download(remote_path, tmp_path / "x")
    with pytest.raises(UnsafePathError):
        client.delete(remote_path)


# -- downloads -------------------------------------------------------------------------------


def stamp_like_an_earlier_download(part: Path, data: bytes, remote: Path) -> None:
    """Write ``part`` as an interrupted download leaves it: stamped with the remote mtime.

    SMB carries the mtime in 100 ns units and smbprotocol in microseconds.
    """
    part.write_bytes(data)
    stamp = remote.stat().st_mtime_ns // 1000 * 1000
    os.utime(part, ns=(stamp, stamp))


def assert_downloaded(dest: Path, data: bytes, spy: WireSpy, *, read: int) -> None:
    """``dest`` holds ``data``, ``read`` bytes of it crossed the wire, no ``.part`` is left."""
    assert dest.read_bytes() == data
    assert spy.bytes_read == read
    assert not partial_file(dest).exists()


def test_download_streams_the_file(
    smb_server: SambaServer, folder: tuple[str, Path], tmp_path: Path
) -> None:
    data = random_bytes(3 * MIB + 17, seed=3)
    put(folder[1] / "talk.mp4", data)

    with make_client(smb_server, folder[0], chunk_size=1 * MIB) as client:
        dest = client.download("talk.mp4", tmp_path / "out" / "talk.mp4", expected_size=len(data))

    assert dest.read_bytes() == data
    assert not partial_file(dest).exists()


def test_download_of_an_empty_file(
    client: SMBSourceClient, folder: tuple[str, Path], tmp_path: Path
) -> None:
    put(folder[1] / "empty.mp4", b"")

    dest = client.download("empty.mp4", tmp_path / "empty.mp4", expected_size=0)

    assert dest.read_bytes() == b""


def test_download_resumes_from_the_partial_file(
    client: SMBSourceClient,
    folder: tuple[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = random_bytes(6 * MIB + 5, seed=6)
    put(folder[1] / "talk.mp4", data)
    dest = tmp_path / "talk.mp4"
    already = 2 * MIB + 3
    stamp_like_an_earlier_download(partial_file(dest), data[:already], folder[1] / "talk.mp4")
    spy = WireSpy(monkeypatch)

    client.download("talk.mp4", dest, expected_size=len(data))

    assert_downloaded(dest, data, spy, read=len(data) - already)  # only the rest crossed


def test_partial_file_of_another_version_is_discarded(
    client: SMBSourceClient,
    folder: tuple[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    old = random_bytes(1 * MIB, seed=1)
    new = random_bytes(1 * MIB, seed=2)
    remote = put(folder[1] / "talk.mp4", new)
    dest = tmp_path / "talk.mp4"
    stamp_like_an_earlier_download(partial_file(dest), old[: 512 * KIB], remote)
    os.utime(remote)  # the file was rewritten on the server since that attempt
    spy = WireSpy(monkeypatch)

    client.download("talk.mp4", dest, expected_size=len(new))

    assert_downloaded(dest, new, spy, read=len(new))


def test_partial_file_longer_than_the_remote_file_is_restarted(
    client: SMBSourceClient, folder: tuple[str, Path], tmp_path: Path
) -> None:
    put(folder[1] / "talk.mp4", b"new content")
    dest = tmp_path / "talk.mp4"
    partial_file(dest).write_bytes(b"an older, longer partial download")

    client.download("talk.mp4", dest)

    assert dest.read_bytes() == b"new content"


def test_server_stopped_mid_download_then_the_next_call_resumes(
    smb_server: SambaServer,
    folder: tuple[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = random_bytes(24 * MIB, seed=24)
    put(folder[1] / "long.mp4", data)
    dest = tmp_path / "long.mp4"
    spy = WireSpy(monkeypatch, after=5 * MIB, action=smb_server.stop)
    client = make_client(
        smb_server, folder[0], chunk_size=1 * MIB, max_attempts=3, retry_backoff=0.05
    )
    try:
        with pytest.raises(SourceUnreachableError) as failed:
            client.download("long.mp4", dest, expected_size=len(data))
        message = str(failed.value)
        assert f"SMB server 127.0.0.1:{smb_server.port} unreachable" in message
        assert "gave up after 3 failed attempts in a row" in message
        assert smb_server.password not in message
        kept = partial_file(dest).stat().st_size
        assert 5 * MIB <= kept < len(data)
        assert kept == spy.bytes_read  # every byte received was kept, in order
        assert not dest.exists()
    finally:
        smb_server.start()
    spy.reset()

    client.download("long.mp4", dest, expected_size=len(data))
    client.close()

    assert_downloaded(dest, data, spy, read=len(data) - kept)


def test_server_restarted_mid_download_is_resumed_within_the_call(
    smb_server: SambaServer,
    folder: tuple[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = random_bytes(16 * MIB, seed=16)
    put(folder[1] / "long.mp4", data)
    spy = WireSpy(monkeypatch, after=4 * MIB, action=smb_server.restart)

    with make_client(smb_server, folder[0], chunk_size=1 * MIB, retry_backoff=0.05) as client:
        dest = client.download("long.mp4", tmp_path / "long.mp4", expected_size=len(data))

    assert dest.read_bytes() == data
    assert spy.opens == 2  # reconnected once
    assert spy.bytes_read == len(data)  # what arrived before the restart was kept, not re-read


def test_file_truncated_during_the_download_fails_and_is_discarded(
    smb_server: SambaServer,
    folder: tuple[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = random_bytes(8 * MIB, seed=33)
    remote = put(folder[1] / "talk.mp4", data)
    # Cut to 6 MiB once 2 MiB arrived: the reads already in flight end at 4 MiB at most.
    WireSpy(monkeypatch, after=2 * MIB, action=lambda: os.truncate(remote, 6 * MIB))
    dest = tmp_path / "talk.mp4"

    with (
        make_client(smb_server, folder[0], chunk_size=1 * MIB, reads_in_flight=2) as client,
        pytest.raises(
            SourceChangedError,
            match=rf"talk\.mp4 ended at {6 * MIB} bytes during the download \(truncated on the "
            rf"server, {len(data)} bytes when it began\)",
        ),
    ):
        client.download("talk.mp4", dest, expected_size=len(data))

    assert list(tmp_path.iterdir()) == []  # neither the file nor a partial one


def test_file_rewritten_during_the_download_fails_and_is_discarded(
    smb_server: SambaServer,
    folder: tuple[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = random_bytes(4 * MIB, seed=34)
    remote = put(folder[1] / "talk.mp4", data)
    os.utime(remote, (1_000_000_000, 1_000_000_000))

    def rewrite_the_start() -> None:  # same size, other bytes, a new modification time
        with open(remote, "r+b") as fh:
            fh.write(random_bytes(1 * MIB, seed=35))

    WireSpy(monkeypatch, after=2 * MIB, action=rewrite_the_start)
    dest = tmp_path / "talk.mp4"

    with (
        make_client(smb_server, folder[0], chunk_size=1 * MIB) as client,
        pytest.raises(SourceChangedError, match=r"talk\.mp4 changed on the server during the"),
    ):
        client.download("talk.mp4", dest, expected_size=len(data))

    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "size", [0, 1, 64 * KIB - 1, 64 * KIB, 64 * KIB + 1, 7 * 64 * KIB + 5]
)
def test_pipelined_reads_are_byte_exact_around_read_boundaries(
    smb_server: SambaServer,
    folder: tuple[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    size: int,
) -> None:
    data = random_bytes(size, seed=size)
    put(folder[1] / "clip.mp4", data)
    spy = WireSpy(monkeypatch)

    with make_client(smb_server, folder[0], chunk_size=64 * KIB, reads_in_flight=3) as client:
        dest = client.download("clip.mp4", tmp_path / "clip.mp4", expected_size=size)

    assert_downloaded(dest, data, spy, read=size)
    assert spy.reads == -(-size // (64 * KIB))  # one read per 64 KiB started, none empty


def test_reads_larger_than_the_first_credit_grant(
    smb_server: SambaServer,
    folder: tuple[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 4 reads of 8 MiB in flight cost 512 credits; a session starts with far fewer.
    data = random_bytes(40 * MIB + 3, seed=40)
    put(folder[1] / "long.mp4", data)
    spy = WireSpy(monkeypatch)

    with make_client(smb_server, folder[0], chunk_size=8 * MIB, reads_in_flight=4) as client:
        dest = client.download("long.mp4", tmp_path / "long.mp4", expected_size=len(data))

    assert_downloaded(dest, data, spy, read=len(data))


def test_size_different_from_the_listing_is_refused(
    client: SMBSourceClient, folder: tuple[str, Path], tmp_path: Path
) -> None:
    put(folder[1] / "talk.mp4", b"z" * 1000)
    dest = tmp_path / "talk.mp4"

    with pytest.raises(SourceError, match=r"changed on the server.*\(1000 bytes, listed 2000\)"):
        client.download("talk.mp4", dest, expected_size=2000)

    assert list(tmp_path.iterdir()) == []


def test_free_space_is_checked_first(
    client: SMBSourceClient,
    folder: tuple[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    put(folder[1] / "talk.mp4", b"z" * 5000)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda _path: usage._replace(free=4000))
    spy = WireSpy(monkeypatch)

    with pytest.raises(SourceError, match=f"not enough free space in {tmp_path}: need 5000, have"):
        client.download("talk.mp4", tmp_path / "talk.mp4")

    assert spy.bytes_read == 0


def test_download_missing_file(client: SMBSourceClient, tmp_path: Path) -> None:
    with pytest.raises(SourceNotFoundError, match=r"absent\.mp4"):
        client.download("absent.mp4", tmp_path / "absent.mp4")

    assert list(tmp_path.iterdir()) == []


def test_frozen_server_fails_a_read_within_the_read_timeout(
    smb_server: SambaServer, folder: tuple[str, Path]
) -> None:
    put(folder[1] / "f.bin", b"x" * 100)
    client = make_client(smb_server, folder[0], read_timeout=1)
    fh = client.open("f.bin")
    smb_server.pause()
    try:
        started = time.monotonic()
        with pytest.raises(SourceUnreachableError, match="unreachable"):
            fh.read(100)
        assert time.monotonic() - started < 10
    finally:
        smb_server.resume()
        fh.close()
        client.close()


# -- writing ---------------------------------------------------------------------------------


def test_upload_and_delete_round_trip(
    client: SMBSourceClient, folder: tuple[str, Path], tmp_path: Path
) -> None:
    data = random_bytes(2 * MIB + 1, seed=2)
    src = tmp_path / "stitched.mp4"
    src.write_bytes(data)

    client.upload(src, "out/2024/stitched.mp4")

    target = folder[1] / "out" / "2024" / "stitched.mp4"
    assert target.read_bytes() == data
    assert [p.name for p in target.parent.iterdir()] == ["stitched.mp4"]  # no temp file left
    assert "out/2024/stitched.mp4" in listed(client)

    client.upload(src, "out/2024/stitched.mp4")  # replacing is allowed
    client.delete("out/2024/stitched.mp4")
    client.delete("out/2024/stitched.mp4")  # already gone: not an error

    assert not target.exists()


# -- connection failures and the domain ------------------------------------------------------


def test_connection_test_passes_and_shows_the_folder(
    smb_server: SambaServer, folder: tuple[str, Path], client: SMBSourceClient
) -> None:
    # What `watch-pipeline source test` shows: the connection passes, then the folder's listing.
    put(folder[1] / "talk.mp4", b"abc")
    put(folder[1] / "sub" / "inner.mp4", b"x")

    assert client.test_connection() is None
    assert client.browse() == [BrowseEntry("folder", "sub"), BrowseEntry("file", "talk.mp4", 3)]
    with pytest.raises(SourceNotFoundError):
        make_client(smb_server, f"{folder[0]}/gone").test_connection()


def test_wrong_password_is_an_auth_error_without_the_password(
    smb_server: SambaServer, folder: tuple[str, Path]
) -> None:
    password = "Wr0ng-" + uuid.uuid4().hex
    client = make_client(smb_server, folder[0], password=password)

    with pytest.raises(SourceAuthError) as refused:
        client.test_connection()
    with pytest.raises(SourceAuthError):
        client.list_files()  # raised at call time, before iteration

    message = str(refused.value)
    assert message == (
        f"SMB login refused for TESTDOM\\{smb_server.username} on "
        f"127.0.0.1:{smb_server.port} (logon failure)"
    )
    assert password not in message and password not in repr(client)
    assert smb_server.password not in message


def test_unreachable_port_fails_fast(smb_server: SambaServer) -> None:
    port = _free_port()
    client = make_client(smb_server, port=port, connect_timeout=2)
    started = time.monotonic()

    with pytest.raises(SourceUnreachableError, match=f"SMB server 127.0.0.1:{port} unreachable"):
        client.test_connection()

    assert time.monotonic() - started < 5


def test_missing_share(smb_server: SambaServer) -> None:
    client = SMBSourceClient(
        server=smb_server.host,
        share="nosuchshare",
        username=smb_server.username,
        password=smb_server.password,
        domain=smb_server.domain,
        port=smb_server.port,
    )

    with pytest.raises(SourceNotFoundError, match="SMB share 'nosuchshare' not found on"):
        client.test_connection()
    client.close()


def test_missing_folder(smb_server: SambaServer, folder: tuple[str, Path]) -> None:
    put(folder[1] / "file.mp4", b"f")
    with make_client(smb_server, f"{folder[0]}/nope") as client:
        with pytest.raises(SourceNotFoundError, match=rf"folder //.*/{folder[0]}/nope not found"):
            client.test_connection()
        with pytest.raises(SourceNotFoundError):
            client.list_files()
    with make_client(smb_server, f"{folder[0]}/file.mp4") as client:
        with pytest.raises(SourceNotFoundError, match="is not a folder"):
            client.list_files()


def _auth_lines(server: SambaServer, domain: str) -> list[str]:
    # auth_audit level 3: "user [DOMAIN]\[name] at [...] with [NTLMv2] status [NT_STATUS_OK]"
    pattern = re.compile(
        rf"user \[{re.escape(domain)}\]\\\[{re.escape(server.username)}\] at \[[^\]]*\] "
        r"with \[NTLMv2\] status \[NT_STATUS_OK\]"
    )
    return pattern.findall(server.log_text())


@pytest.mark.parametrize("domain", ["TESTDOM", "OTHERDOM"])
def test_the_domain_reaches_the_server(
    smb_server: SambaServer, folder: tuple[str, Path], domain: str
) -> None:
    before = len(_auth_lines(smb_server, domain))

    with make_client(smb_server, folder[0], domain=domain) as client:
        client.test_connection()

    deadline = time.monotonic() + 5
    while len(_auth_lines(smb_server, domain)) == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(_auth_lines(smb_server, domain)) == before + 1


def test_a_qualified_user_name_is_sent_as_is(smb_server: SambaServer) -> None:
    qualified = f"TESTDOM\\{smb_server.username}"

    assert make_client(smb_server, username=qualified, domain=None).account == qualified
    assert make_client(smb_server, username=qualified).account == qualified
    with pytest.raises(SourceError, match="names domain 'TESTDOM' but the domain is 'OTHER'"):
        make_client(smb_server, username=qualified, domain="OTHER")


def test_each_client_has_its_own_session(smb_server: SambaServer, tree: str) -> None:
    first, second = make_client(smb_server, tree), make_client(smb_server, tree)
    assert listed(first) == listed(second)

    first.close()

    assert "a.mp4" in listed(second)  # closing one client left the other's session alone
    assert "a.mp4" in listed(first)  # and a closed client reconnects on demand
    first.close()
    second.close()


# -- factory ---------------------------------------------------------------------------------


def test_factory_builds_the_client_from_a_catalog_row(
    smb_server: SambaServer, tree: str, tmp_path: Path
) -> None:
    row = SimpleNamespace(
        source_type="smb",
        local_path=None,
        smb_server=smb_server.host,
        smb_share=smb_server.share,
        smb_path=f"/{tree}/sub",
        smb_username=smb_server.username,
        smb_domain="TESTDOM",
        smb_port=smb_server.port,
    )

    client = create_client(row, watch_folder=tmp_path, secrets={"secret": smb_server.password})

    assert isinstance(client, SMBSourceClient)
    with client:
        assert listed(client) == {"c.mp4", "deeper/d.wav"}
    assert client.account == f"TESTDOM\\{smb_server.username}"
    assert smb_server.password not in repr(client)
