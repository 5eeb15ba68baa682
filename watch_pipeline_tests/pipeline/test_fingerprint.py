from __future__ import annotations

import io
import os
import random

import imohash
import pytest

from watch_pipeline.pipeline.fingerprint import (
    SAMPLE_SIZE,
    SAMPLE_THRESHOLD,
    imohash_fileobj,
    imohash_path,
)

KIB = 1024
MIB = 1024 * KIB


class CountingReader(io.RawIOBase):
    """A seekable file that records every byte handed out and refuses relative end seeks.

    Like an S3 ranged-read object it supports only absolute seeks plus SEEK_END with offset 0,
    and it returns at most ``max_chunk`` bytes per read.
    """

    def __init__(self, fh: io.BufferedReader, *, max_chunk: int = 1 << 30) -> None:
        super().__init__()
        self._fh = fh
        self._max_chunk = max_chunk
        self.bytes_read = 0
        self.reads = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_END and offset != 0:
            raise io.UnsupportedOperation("only seek(0, SEEK_END) is supported")
        return self._fh.seek(offset, whence)

    def tell(self) -> int:
        return self._fh.tell()

    def readinto(self, buffer) -> int:  # type: ignore[override]
        data = self._fh.read(min(len(buffer), self._max_chunk))
        buffer[: len(data)] = data
        self.bytes_read += len(data)
        self.reads += 1
        return len(data)


def write_random(path, size: int) -> None:
    path.write_bytes(os.urandom(size))


def _seeded(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


@pytest.mark.parametrize(
    "size",
    [
        0,
        1,
        SAMPLE_SIZE,
        SAMPLE_THRESHOLD - 1,
        SAMPLE_THRESHOLD,
        SAMPLE_THRESHOLD + 1,
        5 * MIB,
    ],
)
def test_matches_imohash_hashfile(tmp_path, size):
    path = tmp_path / "f.bin"
    write_random(path, size)
    expected = imohash.hashfile(str(path), hexdigest=True)

    assert imohash_path(path) == expected
    with open(path, "rb") as fh:
        assert imohash_fileobj(fh) == expected
    assert len(expected) == 32


@pytest.mark.parametrize("size", [100, SAMPLE_THRESHOLD + 7, 3 * MIB + 5])
def test_matches_through_a_ranged_reader_with_short_reads(tmp_path, size):
    # No relative end seeks, at most 5000 bytes per read: what a ranged-read client might give.
    path = tmp_path / "f.bin"
    write_random(path, size)
    with open(path, "rb") as raw:
        assert imohash_fileobj(CountingReader(raw, max_chunk=5000)) == imohash.hashfile(
            str(path), hexdigest=True
        )


def test_big_file_reads_only_three_windows(tmp_path):
    path = tmp_path / "big.bin"
    with open(path, "wb") as out:
        block = os.urandom(MIB)
        for _ in range(50):
            out.write(block)
    with open(path, "rb", buffering=0) as raw:
        counter = CountingReader(raw)
        digest = imohash_fileobj(counter)

    assert digest == imohash.hashfile(str(path), hexdigest=True)
    assert counter.bytes_read <= 3 * SAMPLE_SIZE + 4 * KIB


def test_same_content_same_hash_and_middle_window_matters(tmp_path):
    size = 2 * MIB
    data = bytearray(_seeded(size, seed=42))
    a, b, c = tmp_path / "a.bin", tmp_path / "b.bin", tmp_path / "c.bin"
    a.write_bytes(data)
    b.write_bytes(data)
    data[size // 2 + 10] ^= 0xFF  # inside the middle window
    c.write_bytes(data)

    assert imohash_path(a) == imohash_path(b)
    assert imohash_path(c) != imohash_path(a)


def test_bytes_outside_the_windows_do_not_matter(tmp_path):
    # The flip side of sampling: it is what makes the fingerprint cheap.
    size = 2 * MIB
    data = bytearray(_seeded(size, seed=7))
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(data)
    data[size // 4] ^= 0xFF
    b.write_bytes(data)

    assert imohash_path(a) == imohash_path(b)


def test_size_is_part_of_the_hash(tmp_path):
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"\x00" * SAMPLE_THRESHOLD)
    b.write_bytes(b"\x00" * (SAMPLE_THRESHOLD + 1))

    assert imohash_path(a) != imohash_path(b)


def test_truncated_small_file_raises_instead_of_hashing_other_bytes():
    class Liar(io.BytesIO):
        def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
            pos = super().seek(offset, whence)
            return 1000 if whence == os.SEEK_END else pos

    with pytest.raises(EOFError):
        imohash_fileobj(Liar(b"x" * 10))
