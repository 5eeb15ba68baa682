"""The S3 download adapts to the link: one GET on a fast server, parallel ranged GETs on a slow one.

A slow link is moto behind a loopback proxy that sends each connection's replies at 2 MiB/s
(:mod:`watch_pipeline_tests.fixtures.throttle_proxy`); a fast one is moto itself. Sizes are
shrunk (512 KiB parts, a 1 MiB / 0.2 s rate probe, 16 MiB/s counted as fast) so that a 3 MiB
object exercises every path: through the proxy the probe measures ~2 MiB/s, and directly moto
delivers the probe's 1 MiB in a few milliseconds, far above 16 MiB/s even on a busy machine.
What a user sees: the file is byte for byte the object either way, and the GETs sent (their
``Range`` and ``If-Match`` headers) and the log say which way it was fetched.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import botocore.exceptions
import pytest

from watch_pipeline.sources import _transfer
from watch_pipeline.sources import s3 as s3_module
from watch_pipeline.sources.s3 import S3SourceClient
from watch_pipeline_tests.fixtures.s3_server import S3Server
from watch_pipeline_tests.fixtures.throttle_proxy import ThrottleProxy, throttle_proxy
from watch_pipeline_tests.sources.test_s3 import (
    leave_partial,
    make_client,
    random_bytes,
    stored_talk,
)
from watch_pipeline_tests.sources.test_s3_parallel import (
    Gets,
    download_through,
    drops_once,
)

KIB = 1024
MIB = 1024 * KIB
PART = 512 * KIB
SIZE = 3 * MIB
LINK_MIBPS = 2


@pytest.fixture(autouse=True)
def _small_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s3_module, "PART_SIZE", PART)
    monkeypatch.setattr(s3_module, "MAX_PART_SIZE", PART)
    monkeypatch.setattr(s3_module, "DOWNLOAD_CHUNK", 16 * KIB)
    monkeypatch.setattr(s3_module, "PROBE_BYTES", 1 * MIB)
    monkeypatch.setattr(s3_module, "PROBE_SECONDS", 0.2)
    monkeypatch.setattr(s3_module, "FAST_STREAM_MIBPS", 16.0)
    monkeypatch.setattr(_transfer, "RETRY_BACKOFF_SECONDS", 0.01)


@pytest.fixture
def slow_link(s3_server: S3Server) -> Iterator[ThrottleProxy]:
    with throttle_proxy(urlsplit(s3_server.endpoint_url).port or 80, LINK_MIBPS) as proxy:
        yield proxy


def assert_tiles(spans: list[tuple[int, int]], first: int, end: int) -> None:
    """``spans`` cover ``[first, end)`` exactly once, none longer than a part."""
    assert spans[0][0] == first and spans[-1][1] == end
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
    assert all(0 < stop - start <= PART for start, stop in spans)


def mode_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == s3_module.__name__ and r.levelno == logging.INFO]


def fetch_logged(client: S3SourceClient, caplog: pytest.LogCaptureFixture, dest: Path,
                 data: bytes, etag: str) -> tuple[Gets, str]:
    """Download ``talk.mp4`` to ``dest`` and check it is ``data`` and the only file left; the
    GETs sent and the one line that logged the mode."""
    gets = Gets(client)
    with caplog.at_level(logging.INFO, logger=s3_module.__name__):
        client.download("talk.mp4", dest, expected_size=len(data), etag=etag)
    assert dest.read_bytes() == data
    assert [p.name for p in dest.parent.iterdir()] == [dest.name]
    (message,) = mode_logged(caplog)
    return gets, message


def test_a_slow_link_splits_into_parallel_ranged_gets(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path, slow_link: ThrottleProxy,
    caplog: pytest.LogCaptureFixture,
) -> None:
    data, etag, dest = stored_talk(s3_server, s3_bucket, tmp_path, SIZE, seed=3)
    client = make_client(s3_server, s3_bucket, endpoint_url=slow_link.endpoint_url)

    gets, message = fetch_logged(client, caplog, dest, data, etag)

    # The probe's GET asked for everything; it was read only up to the first part boundary,
    # and the other five parts came as ranged GETs of one version.
    assert gets.sent[0] == (f"bytes=0-{SIZE - 1}", f'"{etag}"')
    spans = gets.spans()
    spans.remove((0, SIZE))
    assert_tiles(spans, PART, SIZE)
    assert len(spans) == SIZE // PART - 1
    assert {m for _, m in gets.sent} == {f'"{etag}"'}
    assert "split" in message and "MiB/s" in message


def test_a_fast_server_is_fetched_with_one_get(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data, etag, dest = stored_talk(s3_server, s3_bucket, tmp_path, SIZE, seed=4)

    gets, message = fetch_logged(make_client(s3_server, s3_bucket), caplog, dest, data, etag)

    assert gets.sent == [(f"bytes=0-{SIZE - 1}", f'"{etag}"')]
    assert "one stream" in message and "kept to the end" in message


def test_a_split_resumed_download_keeps_its_part_boundaries(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path, slow_link: ThrottleProxy
) -> None:
    data, etag, dest = stored_talk(s3_server, s3_bucket, tmp_path, SIZE, seed=5)
    # Left by a one-GET attempt: its size is the prefix.
    leave_partial(dest, data[: 300 * KIB], f'"{etag}"')
    client = make_client(s3_server, s3_bucket, endpoint_url=slow_link.endpoint_url)
    gets = Gets(client)

    client.download("talk.mp4", dest, expected_size=SIZE, etag=etag)

    assert dest.read_bytes() == data
    assert gets.sent[0][0] == f"bytes={300 * KIB}-{SIZE - 1}"  # only what was missing
    spans = gets.spans()
    spans.remove((300 * KIB, SIZE))
    assert_tiles(spans, 300 * KIB + PART, SIZE)


def test_a_single_stream_that_drops_is_re_requested_from_the_byte_it_reached(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(s3_module, "FAST_STREAM_MIBPS", 0.0)  # never split
    reset = botocore.exceptions.ResponseStreamingError(error="connection reset")
    first_get_drops_after_the_probe = drops_once(0, after=2 * MIB, error=reset)

    gets = download_through(s3_server, s3_bucket, tmp_path / "talk.mp4", monkeypatch,
                            random_bytes(SIZE, seed=6), first_get_drops_after_the_probe)

    assert [r for r, _ in gets.sent] == [f"bytes=0-{SIZE - 1}", f"bytes={2 * MIB}-{SIZE - 1}"]


def test_a_probe_that_drops_splits_and_keeps_what_it_had(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed = botocore.exceptions.ConnectionClosedError(endpoint_url="x")
    probe_drops_at_100_kib = drops_once(0, after=100 * KIB, error=closed)

    gets = download_through(s3_server, s3_bucket, tmp_path / "talk.mp4", monkeypatch,
                            random_bytes(SIZE, seed=7), probe_drops_at_100_kib)

    spans = gets.spans()
    spans.remove((0, SIZE))
    # The first part is continued from the byte the probe reached, the rest as parts.
    assert_tiles(spans, 100 * KIB, SIZE)
    assert spans[0] == (100 * KIB, PART)
