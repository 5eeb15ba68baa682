from __future__ import annotations

import hashlib
import io
import os
import random
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from watch_pipeline.store import local as local_module
from watch_pipeline.store.base import ObjectStoreError, StoredObject
from watch_pipeline.store.local import CHUNK_SIZE, LocalObjectStore
from watch_pipeline_tests.store.contract import UNSAFE_KEYS, assert_key_refused


def write_random(path: Path, size: int, seed: int = 0) -> bytes:
    data = random.Random(seed).randbytes(size)
    path.write_bytes(data)
    return data


def no_temp_files(root: Path) -> bool:
    return not [p for p in root.rglob("*.part")]


@pytest.fixture
def store(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "objects")


def test_round_trip(store: LocalObjectStore, tmp_path: Path) -> None:
    data = write_random(tmp_path / "talk.mp4", 300_000)

    stored = store.put_file(
        "user_1/file_42/talk.mp4", tmp_path / "talk.mp4", content_type="video/mp4"
    )

    assert stored == StoredObject(
        "user_1/file_42/talk.mp4", len(data), hashlib.sha256(data).hexdigest()
    )
    assert store.head("user_1/file_42/talk.mp4") == stored
    assert store.get_bytes("user_1/file_42/talk.mp4") == data
    with store.open("user_1/file_42/talk.mp4") as fh:
        assert fh.seekable()
        fh.seek(1000)
        assert fh.read(10) == data[1000:1010]
    store.delete("user_1/file_42/talk.mp4")
    assert store.head("user_1/file_42/talk.mp4") is None
    assert no_temp_files(store.root)


@pytest.mark.parametrize("size", [0, 1, CHUNK_SIZE - 1, 2 * CHUNK_SIZE, 2 * CHUNK_SIZE + 12_345])
def test_put_file_hash_and_content_at_chunk_boundaries(
    store: LocalObjectStore, tmp_path: Path, size: int
) -> None:
    data = write_random(tmp_path / "src.bin", size, seed=size)

    stored = store.put_file("k/src.bin", tmp_path / "src.bin")

    assert stored.size == size
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert store.path("k/src.bin").read_bytes() == data


def test_put_file_without_sendfile_uses_the_buffered_copy(
    store: LocalObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = write_random(tmp_path / "src.bin", 2 * CHUNK_SIZE + 7)

    def refuse(*_args: object) -> int:
        raise OSError(22, "Invalid argument")

    monkeypatch.setattr(local_module.os, "sendfile", refuse)
    stored = store.put_file("k", tmp_path / "src.bin")

    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert store.path("k").read_bytes() == data


def test_put_bytes_and_overwrite(store: LocalObjectStore) -> None:
    store.put_bytes("t/transcript.json", b'{"v": 1}', content_type="application/json")
    stored = store.put_bytes("t/transcript.json", b'{"v": 2}')

    assert stored.sha256 == hashlib.sha256(b'{"v": 2}').hexdigest()
    assert store.get_bytes("t/transcript.json") == b'{"v": 2}'
    assert store.head("t/transcript.json") == stored
    assert no_temp_files(store.root)


def test_failed_write_keeps_the_previous_object_and_leaves_no_temp_file(
    store: LocalObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.put_bytes("a/b.bin", b"old")
    write_random(tmp_path / "new.bin", 3 * CHUNK_SIZE)

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


def test_open_returns_a_normal_binary_file(store: LocalObjectStore) -> None:
    store.put_bytes("f", b"0123456789")
    with store.open("f") as fh:
        assert isinstance(fh, io.BufferedReader)
        fh.seek(-3, io.SEEK_END)
        assert fh.read() == b"789"
