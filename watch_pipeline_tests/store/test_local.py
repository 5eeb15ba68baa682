"""The local object store: atomic writes, CRC32C verified copies (reflink, kernel, streamed)."""

from __future__ import annotations

import errno
import io
import os
import random
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from watch_pipeline.store import checksum
from watch_pipeline.store import local as local_module
from watch_pipeline.store.base import ObjectStoreError, StoredObject
from watch_pipeline.store.local import LocalObjectStore
from watch_pipeline_tests.store.contract import UNSAFE_KEYS, assert_key_refused

MIB = 1024 * 1024
_real_copy_file_range = os.copy_file_range


def write_random(path: Path, size: int, seed: int = 0) -> bytes:
    data = random.Random(seed).randbytes(size)
    path.write_bytes(data)
    return data


def crc32c(data: bytes) -> str:
    return checksum.to_hex(checksum.value(data))


def no_temp_files(root: Path) -> bool:
    return not [p for p in root.rglob("*.part")]


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "objects")


@pytest.fixture
def small_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel copy for files from 2 MiB, in 1 MiB steps, flushing every 2 MiB."""
    monkeypatch.setattr(local_module, "COPY_STEP", MIB)
    monkeypatch.setattr(local_module, "STREAM_BELOW", 2 * MIB)
    monkeypatch.setattr(local_module, "FLUSH_EVERY", 2 * MIB)


def test_round_trip(store: LocalObjectStore, tmp_path: Path) -> None:
    data = write_random(tmp_path / "talk.mp4", 300_000)

    stored = store.put_file(
        "user_1/file_42/talk.mp4", tmp_path / "talk.mp4", content_type="video/mp4"
    )

    assert stored == StoredObject("user_1/file_42/talk.mp4", len(data), crc32c(data), "crc32c")
    assert store.head("user_1/file_42/talk.mp4") == stored
    assert store.get_bytes("user_1/file_42/talk.mp4") == data
    with store.open("user_1/file_42/talk.mp4") as fh:
        assert fh.seekable()
        fh.seek(1000)
        assert fh.read(10) == data[1000:1010]
    store.delete("user_1/file_42/talk.mp4")
    assert store.head("user_1/file_42/talk.mp4") is None
    assert no_temp_files(store.root)


@pytest.mark.parametrize("size", [0, 1, 2 * MIB - 1, 2 * MIB, 5 * MIB + 12_345])
def test_put_file_checksum_and_content_at_step_boundaries(
    store: LocalObjectStore, tmp_path: Path, size: int, small_steps: None
) -> None:
    data = write_random(tmp_path / "src.bin", size, seed=size)

    stored = store.put_file("k/src.bin", tmp_path / "src.bin")

    assert (stored.size, stored.checksum) == (size, crc32c(data))
    assert store.path("k/src.bin").read_bytes() == data
    assert no_temp_files(store.root)


@pytest.mark.parametrize("refused", [("copy_file_range",), ("copy_file_range", "sendfile")])
def test_a_kernel_that_refuses_the_copy_gets_the_next_method(
    store: LocalObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    small_steps: None, refused: tuple[str, ...],
) -> None:
    data = write_random(tmp_path / "src.bin", 3 * MIB + 7)

    def refuse(*_args: object) -> int:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    for name in refused:
        monkeypatch.setattr(local_module.os, name, refuse)
    stored = store.put_file("k", tmp_path / "src.bin")

    assert stored.checksum == crc32c(data)
    assert store.path("k").read_bytes() == data


def test_a_reflink_is_used_where_the_file_system_clones(
    store: LocalObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_steps: None
) -> None:
    data = write_random(tmp_path / "src.bin", 3 * MIB)
    clones: list[int] = []

    def clone(dst_fd: int, request: int, src_fd: int) -> int:  # what FICLONE leaves behind
        assert request == local_module.FICLONE
        clones.append(dst_fd)
        offset = 0
        while n := _real_copy_file_range(src_fd, dst_fd, MIB, offset, offset):
            offset += n
        return 0

    def no_copy(*_args: object) -> int:
        raise AssertionError("a cloned file is not copied")

    monkeypatch.setattr(local_module.fcntl, "ioctl", clone)
    monkeypatch.setattr(local_module.os, "copy_file_range", no_copy)
    stored = store.put_file("k", tmp_path / "src.bin")

    assert clones
    assert stored.checksum == crc32c(data)
    assert store.path("k").read_bytes() == data


def _corrupting(offset_to_flip: int):
    """``copy_file_range`` that copies, then flips one byte it just wrote at ``offset_to_flip``."""

    def copy(src_fd: int, dst_fd: int, count: int, offset_src: int, offset_dst: int) -> int:
        n = _real_copy_file_range(src_fd, dst_fd, count, offset_src, offset_dst)
        if offset_dst <= offset_to_flip < offset_dst + n:
            byte = os.pread(dst_fd, 1, offset_to_flip)
            os.pwrite(dst_fd, bytes([byte[0] ^ 0xFF]), offset_to_flip)
        return n

    return copy


def test_a_byte_flipped_during_the_kernel_copy_is_caught_and_nothing_is_stored(
    store: LocalObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_steps: None
) -> None:
    store.put_bytes("a/b.bin", b"old")
    write_random(tmp_path / "new.bin", 6 * MIB)
    monkeypatch.setattr(local_module.os, "copy_file_range", _corrupting(3 * MIB + 5))

    with pytest.raises(ObjectStoreError, match=r"differ from the source .*new\.bin.*not stored"):
        store.put_file("a/b.bin", tmp_path / "new.bin")

    assert store.get_bytes("a/b.bin") == b"old"
    assert no_temp_files(store.root)


def test_a_byte_flipped_during_the_streamed_copy_is_caught_and_nothing_is_stored(
    store: LocalObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_random(tmp_path / "new.bin", 300_000)
    real_pwrite = os.pwrite

    def corrupting(fd: int, data: bytes, offset: int) -> int:
        flipped = bytearray(data)
        flipped[len(flipped) // 2] ^= 0x01
        return real_pwrite(fd, bytes(flipped), offset)

    monkeypatch.setattr(local_module.os, "pwrite", corrupting)
    with pytest.raises(ObjectStoreError, match="differ from the source"):
        store.put_file("k/new.bin", tmp_path / "new.bin")

    assert store.head("k/new.bin") is None
    assert no_temp_files(store.root)


def test_a_source_growing_during_the_copy_is_refused(
    store: LocalObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_steps: None
) -> None:
    src = tmp_path / "recording.wav"
    write_random(src, 3 * MIB)

    def copy_while_written(src_fd: int, dst_fd: int, count: int, off_src: int,
                           off_dst: int) -> int:
        if off_src == 0:
            with open(src, "ab") as writer:  # the recorder is still writing
                writer.write(b"more")
        return _real_copy_file_range(src_fd, dst_fd, count, off_src, off_dst)

    monkeypatch.setattr(local_module.os, "copy_file_range", copy_while_written)
    with pytest.raises(ObjectStoreError, match="changed while being stored"):
        store.put_file("k", src)

    assert store.head("k") is None
    assert no_temp_files(store.root)


def test_objects_stored_before_crc32c_report_their_sha256(store: LocalObjectStore) -> None:
    store.put_bytes("old/talk.mp4", b"abc")
    path = store.path("old/talk.mp4")
    digest = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    try:
        os.removexattr(path, local_module.CRC32C_XATTR)
        os.setxattr(path, local_module.SHA256_XATTR, digest.encode())
    except OSError as exc:
        pytest.skip(f"no user extended attributes here: {exc}")

    assert store.head("old/talk.mp4") == StoredObject("old/talk.mp4", 3, digest, "sha256")


def test_put_bytes_and_overwrite(store: LocalObjectStore) -> None:
    store.put_bytes("t/transcript.json", b'{"v": 1}', content_type="application/json")
    stored = store.put_bytes("t/transcript.json", b'{"v": 2}')

    assert stored.checksum == crc32c(b'{"v": 2}')
    assert store.get_bytes("t/transcript.json") == b'{"v": 2}'
    assert store.head("t/transcript.json") == stored
    assert no_temp_files(store.root)


def test_failed_write_keeps_the_previous_object_and_leaves_no_temp_file(
    store: LocalObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.put_bytes("a/b.bin", b"old")
    write_random(tmp_path / "new.bin", 3 * MIB)

    def crash(*_args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(local_module.os, "replace", crash)
    with pytest.raises(ObjectStoreError, match="No space left"):
        store.put_file("a/b.bin", tmp_path / "new.bin")

    assert store.get_bytes("a/b.bin") == b"old"
    assert no_temp_files(store.root)


def test_missing_source_is_an_os_error_and_creates_nothing(
    store: LocalObjectStore, tmp_path: Path
) -> None:
    with pytest.raises(FileNotFoundError):
        store.put_file("x", tmp_path / "absent")
    assert store.head("x") is None


def test_new_objects_are_readable_by_group_and_others_under_default_umask(
    store: LocalObjectStore,
) -> None:
    old = os.umask(0o022)
    try:
        store.put_bytes("m", b"x")
    finally:
        os.umask(old)
    assert store.path("m").stat().st_mode & 0o777 == 0o644


def test_missing_key(store: LocalObjectStore) -> None:
    assert store.head("nothing/here") is None
    store.delete("nothing/here")
    with pytest.raises(ObjectStoreError, match="no object"):
        store.open("nothing/here")
    with pytest.raises(ObjectStoreError, match="no object"):
        store.get_bytes("nothing/here")


@pytest.mark.parametrize("key", UNSAFE_KEYS)
def test_unsafe_keys_are_rejected(store: LocalObjectStore, tmp_path: Path, key: str) -> None:
    (tmp_path / "src").write_bytes(b"x")
    assert_key_refused(store, key, tmp_path / "src")
    assert not (tmp_path / "passwd").exists()
    assert not store.root.exists() or not any(store.root.rglob("*"))


def test_url_is_a_file_uri_of_the_object(store: LocalObjectStore) -> None:
    store.put_bytes("dir with space/ä.txt", b"hello")

    url = store.url("dir with space/ä.txt")

    assert url.startswith("file:///")
    assert Path(unquote(urlparse(url).path)).read_bytes() == b"hello"


def test_stream_url_is_the_objects_file_read_in_place(store: LocalObjectStore) -> None:
    store.put_bytes("user_1/file_1/talk.mp4", b"media bytes")

    location = store.stream_url("user_1/file_1/talk.mp4")

    assert location == str(store.path("user_1/file_1/talk.mp4"))
    assert Path(location).is_absolute() and Path(location).read_bytes() == b"media bytes"


def test_open_returns_a_normal_binary_file(store: LocalObjectStore) -> None:
    store.put_bytes("f", b"0123456789")
    with store.open("f") as fh:
        assert isinstance(fh, io.BufferedReader)
        fh.seek(-3, io.SEEK_END)
        assert fh.read() == b"789"
