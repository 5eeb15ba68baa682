"""Parallel ranged downloads from S3 against moto's server, with parts shrunk to 64 KiB.

The parts are small so that objects of a few parts stay small; the code paths are those of a
16 MiB part. Every download here is made to split (the single stream's rate probe ends after
one 16 KiB chunk, and no rate counts as fast): the probe's GET of the whole rest goes on to the
first part boundary, the other parts are ranged GETs. What a user sees: the downloaded file is
byte for byte the object, a failed attempt leaves a partial file that the next attempt
continues (only the missing bytes are requested, seen in the GETs' ``Range`` headers), and an
object replaced mid-download fails without leaving a file behind.
"""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest

from watch_pipeline.sources import _transfer
from watch_pipeline.sources import s3 as s3_module
from watch_pipeline.sources.base import SourceChangedError, SourceUnreachableError
from watch_pipeline.sources.s3 import S3SourceClient, kept_bytes, partial_files
from watch_pipeline_tests.fixtures.s3_server import S3Server
from watch_pipeline_tests.sources.test_s3 import (
    FlakyBody,
    leave_partial,
    make_client,
    put,
    random_bytes,
    stored_talk,
)

KIB = 1024
MIB = 1024 * KIB
PART = 64 * KIB
PROBE = 16 * KIB
WAIT_S = 20.0


def small_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s3_module, "PART_SIZE", PART)
    monkeypatch.setattr(s3_module, "MAX_PART_SIZE", PART)
    monkeypatch.setattr(s3_module, "DOWNLOAD_CHUNK", 16 * KIB)
    monkeypatch.setattr(s3_module, "PROBE_BYTES", PROBE)
    monkeypatch.setattr(s3_module, "FAST_STREAM_MIBPS", float("inf"))  # always split
    monkeypatch.setattr(_transfer, "RETRY_BACKOFF_SECONDS", 0.01)


@pytest.fixture(autouse=True)
def _small_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    small_parts(monkeypatch)


class Gets:
    """The GETs one client sends (``Range`` and ``If-Match``), seen through botocore's hooks."""

    def __init__(self, client: S3SourceClient) -> None:
        self.sent: list[tuple[str, str]] = []
        client.client.meta.events.register("before-call.s3.GetObject", self._before)

    def _before(self, params: dict[str, Any], **_kwargs: Any) -> None:
        headers = params["headers"]
        self.sent.append((headers.get("Range", ""), headers.get("If-Match", "")))

    def spans(self) -> list[tuple[int, int]]:
        """The byte spans asked for, ``[first, end)``, in order of their first byte."""
        spans = []
        for header, _ in self.sent:
            first, _, last = header.removeprefix("bytes=").partition("-")
            spans.append((int(first), int(last) + 1))
        return sorted(spans)


def assert_tiles(spans: list[tuple[int, int]], first: int, end: int) -> None:
    """``spans`` cover ``[first, end)`` exactly once, none longer than a part."""
    assert spans[0][0] == first and spans[-1][1] == end
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
    assert all(0 < stop - start <= PART for start, stop in spans)


def assert_split(gets: Gets, first: int, end: int) -> None:
    """One GET of ``[first, end)`` (read to the first part boundary), then ranged GETs of parts.

    Every GET is pinned to one version with ``If-Match``.
    """
    (probe, if_match), *parts = gets.sent
    assert probe == f"bytes={first}-{end - 1}"
    if end > first + PART:
        spans = gets.spans()
        spans.remove((first, end))
        assert_tiles(spans, first + PART, end)
    else:
        assert parts == []
    assert if_match and {m for _, m in gets.sent} == {if_match}


def assert_fetches_the_rest(s3_server: S3Server, s3_bucket: str, dest: Path, data: bytes,
                            etag: str, *, kept: int) -> None:
    """A new client completes ``dest`` with ``data``, fetching (split) only from ``kept`` on."""
    client = make_client(s3_server, s3_bucket)
    gets = Gets(client)
    client.download("talk.mp4", dest, expected_size=len(data), etag=etag)
    assert dest.read_bytes() == data
    assert_split(gets, kept, len(data))


def patch_gets(monkeypatch: pytest.MonkeyPatch, client: S3SourceClient, hook: Any) -> None:
    """Call ``hook(first_byte, real_get_object, kwargs)`` instead of each ``get_object``."""
    real = client.client.get_object

    def get_object(**kwargs: Any) -> dict[str, Any]:
        first = int(kwargs.get("Range", "bytes=0-").removeprefix("bytes=").partition("-")[0])
        return hook(first, real, kwargs)

    monkeypatch.setattr(client.client, "get_object", get_object)


def drops_once(first_byte: int, *, after: int, error: BaseException) -> Any:
    """A :func:`patch_gets` hook: the first GET from ``first_byte`` drops with ``error`` after
    ``after`` bytes; every other GET is served whole."""
    dropped = threading.Event()

    def hook(first: int, real: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        response = real(**kwargs)
        if first == first_byte and not dropped.is_set():
            dropped.set()
            response["Body"] = FlakyBody(response["Body"], after, error)
        return response

    return hook


def download_through(s3_server: S3Server, s3_bucket: str, dest: Path,
                     monkeypatch: pytest.MonkeyPatch, data: bytes, hook: Any) -> Gets:
    """Store ``data`` as ``talk.mp4``, download it to ``dest`` with its GETs through ``hook``
    and check the file is ``data``; the GETs sent."""
    etag = put(s3_server, s3_bucket, "talk.mp4", data)
    client = make_client(s3_server, s3_bucket)
    patch_gets(monkeypatch, client, hook)
    gets = Gets(client)
    client.download("talk.mp4", dest, expected_size=len(data), etag=etag)
    assert dest.read_bytes() == data
    return gets


def wait_until(condition: Any) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the download never got there")
        time.sleep(0.001)


@pytest.mark.parametrize(
    "size",
    [0, 1, PART - 1, PART, PART + 1, 3 * PART, 10 * PART + 7],
    ids=["empty", "1-byte", "part-1", "part", "part+1", "3-parts", "10-parts+7"],
)
def test_download_is_byte_exact_around_part_boundaries(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path, size: int
) -> None:
    data = random_bytes(size, seed=size)
    etag = put(s3_server, s3_bucket, "talk.mp4", data)
    client = make_client(s3_server, s3_bucket)
    gets = Gets(client)
    dest = tmp_path / "talk.mp4"

    client.download("talk.mp4", dest, expected_size=size, etag=etag)

    assert dest.read_bytes() == data
    assert [p.name for p in tmp_path.iterdir()] == ["talk.mp4"]
    if size == 0:
        assert gets.sent == []
    elif size <= PART:
        assert [r for r, _ in gets.sent] == ["bytes=0-"]  # small objects: one GET
    else:
        assert_split(gets, 0, size)
        assert {m for _, m in gets.sent} == {f'"{etag}"'}  # every part pinned to one version


def test_a_failed_part_leaves_the_complete_prefix_and_the_next_attempt_fetches_the_rest(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = random_bytes(10 * PART + 5)
    etag = put(s3_server, s3_bucket, "talk.mp4", data)
    client = make_client(s3_server, s3_bucket)
    dest = tmp_path / "talk.mp4"
    part, _tag = partial_files(dest)

    def third_part_fails(first: int, real: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        if first == 2 * PART:
            wait_until(lambda: kept_bytes(dest) >= 2 * PART)  # parts 1 and 2 are whole
            raise botocore.exceptions.EndpointConnectionError(endpoint_url="http://gone")
        return real(**kwargs)

    patch_gets(monkeypatch, client, third_part_fails)
    with pytest.raises(SourceUnreachableError, match="cannot reach"):
        client.download("talk.mp4", dest, expected_size=len(data), etag=etag)

    # Only the complete prefix is kept: the file is cut back to it, whatever ran ahead.
    assert part.read_bytes() == data[: 2 * PART]
    assert not dest.exists()

    monkeypatch.undo()  # the next attempt: the real GETs again
    small_parts(monkeypatch)
    assert_fetches_the_rest(s3_server, s3_bucket, dest, data, etag, kept=2 * PART)
    assert [p.name for p in tmp_path.iterdir()] == ["talk.mp4"]


def test_a_dropped_part_is_re_requested_from_the_byte_it_reached(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reset = botocore.exceptions.ResponseStreamingError(error="connection reset")
    second_part_drops_once = drops_once(PART, after=10 * KIB, error=reset)

    gets = download_through(s3_server, s3_bucket, tmp_path / "talk.mp4", monkeypatch,
                            random_bytes(4 * PART), second_part_drops_once)

    assert f"bytes={PART + 10 * KIB}-{2 * PART - 1}" in [r for r, _ in gets.sent]


def test_a_crash_leaves_a_full_size_file_that_is_resumed_from_its_recorded_prefix(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    data, etag, dest = stored_talk(s3_server, s3_bucket, tmp_path, 6 * PART)
    # What a killed process leaves: preallocated to the full size, two parts recorded whole,
    # a third written but not yet recorded, the rest zeros.
    leave_partial(dest, data[: 3 * PART] + bytes(3 * PART),
                  f'"{etag}"\n{2 * PART} {_transfer.boot_id()}\n')
    assert kept_bytes(dest) == 2 * PART

    assert_fetches_the_rest(s3_server, s3_bucket, dest, data, etag, kept=2 * PART)


def test_a_prefix_recorded_before_a_reboot_is_not_trusted(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    data, etag, dest = stored_talk(s3_server, s3_bucket, tmp_path, 3 * PART)
    # The page cache never reached the disk: the recorded prefix is zeros.
    leave_partial(dest, bytes(3 * PART), f'"{etag}"\n{2 * PART} another-boot\n')

    assert_fetches_the_rest(s3_server, s3_bucket, dest, data, etag, kept=0)


def test_object_replaced_mid_download_fails_and_keeps_nothing(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = random_bytes(8 * PART)
    put(s3_server, s3_bucket, "talk.mp4", data)
    client = make_client(s3_server, s3_bucket)

    def replaced_before_the_third_part(first: int, real: Any, kwargs: dict[str, Any]
                                       ) -> dict[str, Any]:
        if first == 2 * PART:
            put(s3_server, s3_bucket, "talk.mp4", random_bytes(8 * PART, seed=7))
        return real(**kwargs)

    patch_gets(monkeypatch, client, replaced_before_the_third_part)
    with pytest.raises(SourceChangedError, match="changed on the server"):
        client.download("talk.mp4", tmp_path / "talk.mp4")  # ETag and size from a HEAD

    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("listed", [5 * PART - 10, 5 * PART + 10, 7 * PART])
def test_an_object_of_another_size_than_listed_is_a_changed_error(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path, listed: int
) -> None:
    etag = put(s3_server, s3_bucket, "talk.mp4", random_bytes(5 * PART))
    client = make_client(s3_server, s3_bucket)

    with pytest.raises(SourceChangedError, match=f"listed {listed}"):
        client.download("talk.mp4", tmp_path / "talk.mp4", expected_size=listed, etag=etag)

    assert list(tmp_path.iterdir()) == []


def test_a_part_that_keeps_dropping_keeps_what_the_first_part_had_written(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = random_bytes(4 * PART)
    etag = put(s3_server, s3_bucket, "talk.mp4", data)
    client = make_client(s3_server, s3_bucket)
    dest = tmp_path / "talk.mp4"

    def first_part_breaks_after_40_kib(first: int, real: Any, kwargs: dict[str, Any]
                                       ) -> dict[str, Any]:
        response = real(**kwargs)
        if first < PART:
            error = botocore.exceptions.ConnectionClosedError(endpoint_url="x")
            response["Body"] = FlakyBody(response["Body"], 40 * KIB - first, error)
        return response

    patch_gets(monkeypatch, client, first_part_breaks_after_40_kib)
    with pytest.raises(SourceUnreachableError, match="dropped"):
        client.download("talk.mp4", dest, expected_size=len(data), etag=etag)

    # The other parts had arrived whole, but only a prefix without a gap is kept.
    part, _tag = partial_files(dest)
    assert part.read_bytes() == data[: 40 * KIB]
    assert kept_bytes(dest) == 40 * KIB

    monkeypatch.undo()  # the next attempt: the real GETs again
    small_parts(monkeypatch)
    assert_fetches_the_rest(s3_server, s3_bucket, dest, data, etag, kept=40 * KIB)


@pytest.mark.parametrize(
    ("rest", "expected"),
    [(17 * MIB, 16 * MIB), (96 * MIB, 24 * MIB), (256 * MIB, 64 * MIB), (10240 * MIB, 64 * MIB)],
)
def test_parts_are_an_even_split_within_the_bounds(
    monkeypatch: pytest.MonkeyPatch, rest: int, expected: int
) -> None:
    monkeypatch.setattr(s3_module, "PART_SIZE", 16 * MIB)
    monkeypatch.setattr(s3_module, "MAX_PART_SIZE", 64 * MIB)
    monkeypatch.setattr(s3_module, "DOWNLOAD_WORKERS", 4)

    assert s3_module.part_size(rest) == expected
