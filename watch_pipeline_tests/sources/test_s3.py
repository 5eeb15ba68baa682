from __future__ import annotations

import hashlib
import random
import shutil
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import botocore.exceptions
import imohash
import pytest

from watch_pipeline.pipeline.fingerprint import imohash_fileobj
from watch_pipeline.sources import _transfer
from watch_pipeline.sources import s3 as s3_module
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
from watch_pipeline.sources.s3 import S3SourceClient, partial_files
from watch_pipeline_tests.fixtures.s3_server import S3AuthUsers, S3Server, _free_port

KIB = 1024
MIB = 1024 * KIB


def make_client(server: S3Server, bucket: str, **kwargs: Any) -> S3SourceClient:
    return S3SourceClient(bucket=bucket, **{**server.options(), **kwargs})


_fixture_clients: dict[str, Any] = {}


def put(server: S3Server, bucket: str, key: str, data: bytes = b"x") -> str:
    """Store ``data`` under ``key`` with the fixture's own client; return the bare ETag."""
    # One client per server: building a boto3 client costs far more than a PUT.
    s3 = _fixture_clients.get(server.endpoint_url)
    if s3 is None:
        s3 = _fixture_clients[server.endpoint_url] = server.client()
    response = s3.put_object(Bucket=bucket, Key=key, Body=data)
    return response["ETag"].strip('"')


def random_bytes(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


class Traffic:
    """What one boto3 client sent and received, seen through botocore's own event hooks."""

    def __init__(self, client: Any) -> None:
        self.calls: Counter[str] = Counter()
        self.ranges: list[str] = []
        self.body_bytes = 0
        client.meta.events.register("before-call.s3", self._before)
        client.meta.events.register("after-call.s3.GetObject", self._after_get)

    def _before(self, model: Any, params: dict[str, Any], **_kwargs: Any) -> None:
        self.calls[model.name] += 1
        if model.name == "GetObject":
            self.ranges.append(params["headers"].get("Range", ""))

    def _after_get(self, parsed: dict[str, Any], **_kwargs: Any) -> None:
        self.body_bytes += int(parsed.get("ContentLength", 0))


def stored_talk(server: S3Server, bucket: str, tmp_path: Path, size: int,
                seed: int = 0) -> tuple[bytes, str, Path]:
    """``size`` random bytes stored as ``talk.mp4``: the bytes, their ETag, the download path."""
    data = random_bytes(size, seed)
    return data, put(server, bucket, "talk.mp4", data), tmp_path / "talk.mp4"


def leave_partial(dest: Path, data: bytes, tag_text: str) -> tuple[Path, Path]:
    """Write what an earlier attempt at ``dest`` left (partial file, tag file); their paths."""
    part, tag = partial_files(dest)
    part.write_bytes(data)
    tag.write_text(tag_text)
    return part, tag


def listed(client: S3SourceClient, **kwargs: Any) -> set[str]:
    return {e.remote_path for e in client.list_files(**kwargs) if isinstance(e, SourceEntry)}


@pytest.fixture
def bucket_with_tree(s3_server: S3Server, s3_bucket: str) -> str:
    for key in [
        "incoming/a.mp4",
        "incoming/notes.txt",
        "incoming/sub/b.MP4",
        "incoming/sub/",  # a folder marker
        "incoming/sub/deeper/c.wav",
        "other/d.mp4",
        "top.mp4",
    ]:
        put(s3_server, s3_bucket, key)
    return s3_bucket


# -- listing ---


@pytest.mark.parametrize("prefix", ["incoming", "incoming/", " incoming/ "])
def test_lists_keys_relative_to_the_prefix(
    s3_server: S3Server, bucket_with_tree: str, prefix: str
) -> None:
    client = make_client(s3_server, bucket_with_tree, prefix=prefix)

    assert listed(client) == {"a.mp4", "notes.txt", "sub/b.MP4", "sub/deeper/c.wav"}
    assert listed(client, recursive=False) == {"a.mp4", "notes.txt"}
    assert listed(client, extensions=(".mp4",)) == {"a.mp4", "sub/b.MP4"}
    assert listed(client, extensions=(".MP4", ".wav"), recursive=False) == {"a.mp4"}


def test_stat_is_the_listed_entry_and_none_once_gone(
    s3_server: S3Server, bucket_with_tree: str
) -> None:
    client = make_client(s3_server, bucket_with_tree, prefix="incoming/")
    listing = {e.remote_path: e for e in client.list_files() if isinstance(e, SourceEntry)}
    traffic = Traffic(client.client)

    assert client.stat("sub/b.MP4") == listing["sub/b.MP4"]  # ETag, size, mtime to the ms
    assert client.stat("sub/b") is None  # a prefix of a key is not the key
    client.delete("a.mp4")
    assert client.stat("a.mp4") is None
    assert traffic.calls["ListObjectsV2"] == 3 and traffic.calls["GetObject"] == 0


def test_empty_prefix_lists_the_whole_bucket(s3_server: S3Server, bucket_with_tree: str) -> None:
    client = make_client(s3_server, bucket_with_tree)

    assert listed(client) == {
        "incoming/a.mp4",
        "incoming/notes.txt",
        "incoming/sub/b.MP4",
        "incoming/sub/deeper/c.wav",
        "other/d.mp4",
        "top.mp4",
    }
    assert listed(client, recursive=False) == {"top.mp4"}


def test_entry_carries_size_bare_etag_and_utc_mtime(s3_server: S3Server, s3_bucket: str) -> None:
    data = b"hello world"
    put(s3_server, s3_bucket, "clip.mp4", data)

    [entry] = make_client(s3_server, s3_bucket).list_files()

    assert isinstance(entry, SourceEntry)
    assert (entry.remote_path, entry.size) == ("clip.mp4", len(data))
    assert entry.etag == hashlib.md5(data).hexdigest()
    assert entry.mtime.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - entry.mtime) < timedelta(minutes=5)


def test_listing_is_paginated_and_streamed(s3_server: S3Server, s3_bucket: str) -> None:
    for i in range(25):
        put(s3_server, s3_bucket, f"k{i:02}.mp4")
    client = make_client(s3_server, s3_bucket, page_size=10)
    traffic = Traffic(client.client)

    entries = client.list_files()
    first = next(entries)
    assert traffic.calls["ListObjectsV2"] == 1  # only the first page so far
    rest = list(entries)

    assert first.remote_path == "k00.mp4"
    assert len(rest) == 24
    assert traffic.calls["ListObjectsV2"] == 3


def test_more_than_a_thousand_keys(s3_server: S3Server, s3_bucket: str) -> None:
    s3 = s3_server.client()
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda i: s3.put_object(Bucket=s3_bucket, Key=f"f/{i:04}.wav"), range(1003)))
    client = make_client(s3_server, s3_bucket, prefix="f")
    traffic = Traffic(client.client)

    names = [e.remote_path for e in client.list_files()]

    assert len(names) == len(set(names)) == 1003
    assert traffic.calls["ListObjectsV2"] == 2
    # Batch delete: the bucket fixture would otherwise remove the keys one request at a time.
    for start in range(0, 1003, 1000):
        batch = [{"Key": f"f/{i:04}.wav"} for i in range(start, min(start + 1000, 1003))]
        s3.delete_objects(Bucket=s3_bucket, Delete={"Objects": batch})


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("a/../b.mp4", "'..'"),
        ("../up.mp4", "'..'"),
        ("/abs.mp4", "starts with '/'"),
        ("x\\y.mp4", "backslash"),
    ],
)
def test_unsafe_keys_are_rejected_never_opened(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path, key: str, reason: str
) -> None:
    put(s3_server, s3_bucket, key)
    put(s3_server, s3_bucket, "safe.mp4")
    client = make_client(s3_server, s3_bucket)

    entries = list(client.list_files(extensions=(".mp4",)))

    rejected = [e for e in entries if isinstance(e, RejectedEntry)]
    assert [e.remote_path for e in rejected] == [key]
    assert rejected[0].reason.startswith("unsafe key:")
    assert reason in rejected[0].reason
    assert {e.remote_path for e in entries if isinstance(e, SourceEntry)} == {"safe.mp4"}
    with pytest.raises(UnsafePathError):
        client.open(key)
    with pytest.raises(UnsafePathError):
        client.download(key, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


_EMPTY_SEGMENT = "contains an empty segment ('//' or a trailing '/')"


@pytest.mark.parametrize(
    ("key", "reason", "skip_reason"),
    [
        ("talks/.", "contains a '.' segment", "validation_failed"),
        ("talks/./a.mp4", "contains a '.' segment", "validation_failed"),
        ("talks//a.mp4", _EMPTY_SEGMENT, "validation_failed"),
        ("talks/a.mp4/", _EMPTY_SEGMENT, "validation_failed"),
        ("talks/" + "n" * 300 + ".mp4", "has a segment longer than 255 bytes", "path_too_long"),
    ],
    ids=["ends-in-dot", "dot-segment", "empty-segment", "trailing-slash-with-bytes", "300-chars"],
)
def test_keys_that_cannot_be_one_file_of_their_own_are_rejected(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path, key: str, reason: str, skip_reason: str
) -> None:
    put(s3_server, s3_bucket, key, b"payload")
    put(s3_server, s3_bucket, "talks/good.mp4")
    client = make_client(s3_server, s3_bucket)

    entries = list(client.list_files())

    assert {e.remote_path for e in entries if isinstance(e, SourceEntry)} == {"talks/good.mp4"}
    rejected = [e for e in entries if isinstance(e, RejectedEntry)]
    assert [(e.remote_path, e.reason, e.skip_reason) for e in rejected] == [
        (key, f"unsafe key: {reason}", skip_reason)
    ]
    # The import names the download after the key's last segment, in its temp folder.
    temp = tmp_path / "imports" / "fingerprint"
    _write_file(temp / "other-part.wav", b"kept")
    with pytest.raises(UnsafePathError):
        client.download(key, temp / key.rsplit("/", 1)[-1])
    assert [(p.name, p.read_bytes()) for p in temp.iterdir()] == [("other-part.wav", b"kept")]


def test_a_download_never_lands_on_its_folder(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    put(s3_server, s3_bucket, "talks/good.mp4", b"payload")
    client = make_client(s3_server, s3_bucket)
    temp = tmp_path / "imports" / "fingerprint"
    _write_file(temp / "other-part.wav", b"kept")

    for dest in (temp / ".", temp, temp / ".."):
        with pytest.raises(UnsafePathError, match="is a folder, not a file name"):
            client.download("talks/good.mp4", dest)

    assert [(p.name, p.read_bytes()) for p in temp.iterdir()] == [("other-part.wav", b"kept")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imports"]


def _write_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_unsafe_key_of_another_type_is_ignored(s3_server: S3Server, s3_bucket: str) -> None:
    put(s3_server, s3_bucket, "a/../notes.txt")

    assert list(make_client(s3_server, s3_bucket).list_files(extensions=(".mp4",))) == []


def test_unsafe_prefix_is_refused() -> None:
    with pytest.raises(UnsafePathError):
        S3SourceClient(bucket="b", prefix="a/../b")
    with pytest.raises(UnsafePathError):
        S3SourceClient(bucket="b", prefix="/abs")


# -- fingerprints over ranged reads ---


@pytest.mark.parametrize(
    "size", [0, 1, 16 * KIB, 128 * KIB - 1, 128 * KIB, 128 * KIB + 1, 5 * MIB]
)
def test_fingerprint_equals_imohash_of_the_same_bytes(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path, size: int
) -> None:
    data = random_bytes(size, seed=size)
    put(s3_server, s3_bucket, "media/clip.mp4", data)
    local_copy = tmp_path / "clip.mp4"
    local_copy.write_bytes(data)
    client = make_client(s3_server, s3_bucket, prefix="media")
    traffic = Traffic(client.client)

    with client.open("clip.mp4") as fh:
        fingerprint = imohash_fileobj(fh)

    assert fingerprint == imohash.hashfile(str(local_copy), hexdigest=True)
    assert traffic.calls["HeadObject"] == 1
    assert traffic.calls["GetObject"] <= 3


def test_fingerprint_of_a_large_object_reads_only_three_windows(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    data = random_bytes(50 * MIB, seed=50)
    put(s3_server, s3_bucket, "big.mp4", data)
    (tmp_path / "big.mp4").write_bytes(data)
    client = make_client(s3_server, s3_bucket)
    [entry] = client.list_files()
    traffic = Traffic(client.client)

    with client.open(entry.remote_path, size=entry.size, etag=entry.etag) as fh:
        fingerprint = imohash_fileobj(fh)

    assert fingerprint == imohash.hashfile(str(tmp_path / "big.mp4"), hexdigest=True)
    assert traffic.body_bytes < 64 * KIB
    assert traffic.calls == Counter({"GetObject": 3})  # listed size and ETag: no HEAD


def test_open_missing_object(s3_server: S3Server, s3_bucket: str) -> None:
    with pytest.raises(SourceNotFoundError, match=r"absent\.mp4"):
        make_client(s3_server, s3_bucket).open("absent.mp4")


def test_local_path_is_none(s3_server: S3Server, s3_bucket: str) -> None:
    assert make_client(s3_server, s3_bucket).local_path("x.mp4") is None


# -- downloads ---


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_transfer, "RETRY_BACKOFF_SECONDS", 0.01)


def test_download_streams_the_object(s3_server: S3Server, s3_bucket: str, tmp_path: Path) -> None:
    data = random_bytes(3 * MIB + 7)
    put(s3_server, s3_bucket, "in/talk.mp4", data)
    client = make_client(s3_server, s3_bucket, prefix="in")
    dest = tmp_path / "deep" / "er" / "talk.mp4"

    assert client.download("talk.mp4", dest) == dest

    assert dest.read_bytes() == data
    assert sorted(p.name for p in dest.parent.iterdir()) == ["talk.mp4"]


def test_download_of_an_empty_object(s3_server: S3Server, s3_bucket: str, tmp_path: Path) -> None:
    etag = put(s3_server, s3_bucket, "empty.wav", b"")
    client = make_client(s3_server, s3_bucket)

    client.download("empty.wav", tmp_path / "empty.wav", expected_size=0, etag=etag)

    assert (tmp_path / "empty.wav").read_bytes() == b""


def test_download_resumes_from_the_partial_file(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    data, etag, dest = stored_talk(s3_server, s3_bucket, tmp_path, 2 * MIB + 123)
    part, tag = leave_partial(dest, data[: 700 * KIB], f'"{etag}"')
    client = make_client(s3_server, s3_bucket)
    traffic = Traffic(client.client)

    client.download("talk.mp4", dest, expected_size=len(data), etag=etag)

    assert dest.read_bytes() == data
    assert traffic.ranges == [f"bytes={700 * KIB}-"]
    assert traffic.body_bytes == len(data) - 700 * KIB
    assert not part.exists() and not tag.exists()


def test_partial_file_of_another_version_is_discarded(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    old_etag = put(s3_server, s3_bucket, "talk.mp4", b"a" * 5000)
    new_data = b"b" * 6000
    put(s3_server, s3_bucket, "talk.mp4", new_data)
    dest = tmp_path / "talk.mp4"
    leave_partial(dest, b"a" * 1000, f'"{old_etag}"')
    client = make_client(s3_server, s3_bucket)
    traffic = Traffic(client.client)

    client.download("talk.mp4", dest)  # no listed ETag: the HEAD tells the current one

    assert dest.read_bytes() == new_data
    assert traffic.ranges == ["bytes=0-"]


def test_object_replaced_between_attempts_is_a_changed_error(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    data, etag, dest = stored_talk(s3_server, s3_bucket, tmp_path, 300 * KIB)
    part, tag = leave_partial(dest, data[:1000], f'"{etag}"')
    put(s3_server, s3_bucket, "talk.mp4", random_bytes(300 * KIB, seed=1))
    client = make_client(s3_server, s3_bucket)

    with pytest.raises(SourceChangedError, match="changed"):
        client.download("talk.mp4", dest, expected_size=len(data), etag=etag)

    assert not dest.exists() and not part.exists() and not tag.exists()
    # Without an ETag the size decides: a listed size the object no longer has is a change too.
    with pytest.raises(SourceChangedError, match="listed 5"):
        client.download("talk.mp4", dest, expected_size=5)


class FlakyBody:
    """A streaming body that raises ``error`` once ``fail_after`` bytes have been read."""

    def __init__(self, body: Any, fail_after: int, error: Exception) -> None:
        self._body = body
        self._left = fail_after
        self._error = error

    def readinto(self, buffer: Any) -> int:
        if self._left <= 0:
            raise self._error
        view = memoryview(buffer)[: self._left]
        n = self._body.readinto(view)
        self._left -= n
        return n

    def close(self) -> None:
        self._body.close()


def inject_drops(
    monkeypatch: pytest.MonkeyPatch,
    client: S3SourceClient,
    drops: list[tuple[int, Exception]],
    on_drop: Any = None,
) -> None:
    """Make the next GETs' bodies fail as listed: ``(bytes before the drop, exception)``."""
    real_get_object = client.client.get_object

    def get_object(**kwargs: Any) -> dict[str, Any]:
        response = real_get_object(**kwargs)
        if drops:
            fail_after, error = drops.pop(0)
            response["Body"] = FlakyBody(response["Body"], fail_after, error)
            if on_drop is not None:
                on_drop()
        return response

    monkeypatch.setattr(client.client, "get_object", get_object)


def flaky_talk(
    s3_server: S3Server,
    s3_bucket: str,
    monkeypatch: pytest.MonkeyPatch,
    data: bytes,
    drops: list[tuple[int, Exception]],
    on_drop: Any = None,
) -> S3SourceClient:
    """Upload ``talk.mp4`` holding ``data``; a client whose next GETs drop as ``drops`` lists."""
    put(s3_server, s3_bucket, "talk.mp4", data)
    client = make_client(s3_server, s3_bucket)
    inject_drops(monkeypatch, client, drops, on_drop)
    return client


@pytest.mark.usefixtures("fast_retries")
def test_dropped_connections_are_resumed(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import urllib3.exceptions

    data = random_bytes(3 * MIB)
    client = flaky_talk(s3_server, s3_bucket, monkeypatch, data, [
        (1 * MIB, botocore.exceptions.ResponseStreamingError(error="connection reset")),
        (512 * KIB, urllib3.exceptions.ProtocolError("connection broken")),
    ])
    traffic = Traffic(client.client)

    client.download("talk.mp4", tmp_path / "talk.mp4", expected_size=len(data))

    assert (tmp_path / "talk.mp4").read_bytes() == data
    assert traffic.ranges == ["bytes=0-", f"bytes={1 * MIB}-", f"bytes={1536 * KIB}-"]


@pytest.mark.usefixtures("fast_retries")
def test_object_replaced_mid_download_is_a_changed_error(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = flaky_talk(
        s3_server, s3_bucket, monkeypatch, random_bytes(2 * MIB),
        [(MIB, botocore.exceptions.ResponseStreamingError(error="reset"))],
        on_drop=lambda: put(s3_server, s3_bucket, "talk.mp4", random_bytes(2 * MIB, seed=9)),
    )
    dest = tmp_path / "talk.mp4"

    with pytest.raises(SourceChangedError):
        client.download("talk.mp4", dest)

    assert list(tmp_path.iterdir()) == []


@pytest.mark.usefixtures("fast_retries")
def test_a_connection_that_keeps_dropping_gives_up_and_keeps_the_partial_file(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = random_bytes(MIB)
    etag = put(s3_server, s3_bucket, "talk.mp4", data)
    client = make_client(s3_server, s3_bucket)
    traffic = Traffic(client.client)
    retries = s3_module.DOWNLOAD_RETRIES
    drops = [(1000, botocore.exceptions.ReadTimeoutError(endpoint_url="x"))] + [
        (0, botocore.exceptions.ConnectionClosedError(endpoint_url="x"))
    ] * retries
    inject_drops(monkeypatch, client, drops)
    dest = tmp_path / "talk.mp4"

    with pytest.raises(SourceUnreachableError, match="dropped"):
        client.download("talk.mp4", dest, expected_size=len(data), etag=etag)

    assert traffic.calls["GetObject"] == 1 + retries
    part, _tag = partial_files(dest)
    assert part.read_bytes() == data[:1000]
    # The next attempt resumes where the last one stopped.
    client.download("talk.mp4", dest, expected_size=len(data), etag=etag)
    assert dest.read_bytes() == data
    assert traffic.ranges[-1] == "bytes=1000-"


def test_size_is_verified(s3_server: S3Server, s3_bucket: str, tmp_path: Path) -> None:
    etag = put(s3_server, s3_bucket, "talk.mp4", b"z" * 1000)
    client = make_client(s3_server, s3_bucket)
    dest = tmp_path / "talk.mp4"

    with pytest.raises(SourceError, match=r"truncated download .*: got 1000 of 1010 bytes"):
        client.download("talk.mp4", dest, expected_size=1010, etag=etag)

    assert list(tmp_path.iterdir()) == []


def test_free_space_is_checked_first(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    put(s3_server, s3_bucket, "talk.mp4", b"z" * 5000)
    client = make_client(s3_server, s3_bucket)
    traffic = Traffic(client.client)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda _path: usage._replace(free=4000))

    with pytest.raises(SourceError, match=f"not enough free space in {tmp_path}: need 5000, have"):
        client.download("talk.mp4", tmp_path / "talk.mp4")

    assert traffic.calls["GetObject"] == 0
    assert list(tmp_path.iterdir()) == []


def test_download_missing_object(s3_server: S3Server, s3_bucket: str, tmp_path: Path) -> None:
    with pytest.raises(SourceNotFoundError, match=r"absent\.mp4"):
        make_client(s3_server, s3_bucket).download("absent.mp4", tmp_path / "a")


# -- write-back and browsing ---


def test_upload_and_delete_round_trip(s3_server: S3Server, s3_bucket: str, tmp_path: Path) -> None:
    data = random_bytes(200 * KIB)
    (tmp_path / "stitched.mp4").write_bytes(data)
    client = make_client(s3_server, s3_bucket, prefix="incoming")

    client.upload(tmp_path / "stitched.mp4", "done/stitched.mp4")

    [entry] = client.list_files()
    assert (entry.remote_path, entry.size) == ("done/stitched.mp4", len(data))
    got = s3_server.client().get_object(Bucket=s3_bucket, Key="incoming/done/stitched.mp4")
    assert got["Body"].read() == data
    client.delete("done/stitched.mp4")
    assert list(client.list_files()) == []
    client.delete("done/stitched.mp4")  # already gone: not an error
    with pytest.raises(UnsafePathError):
        client.upload(tmp_path / "stitched.mp4", "../escape.mp4")


def test_browse_lists_one_level(s3_server: S3Server, bucket_with_tree: str) -> None:
    client = make_client(s3_server, bucket_with_tree)

    assert client.browse() == [
        ("folder", "incoming", None),
        ("folder", "other", None),
        ("file", "top.mp4", 1),
    ]
    assert client.browse("incoming/") == client.browse("incoming") == [
        ("folder", "sub", None),
        ("file", "a.mp4", 1),
        ("file", "notes.txt", 1),
    ]
    assert make_client(s3_server, bucket_with_tree, prefix="incoming").browse("sub") == [
        ("folder", "deeper", None),
        ("file", "b.MP4", 1),
    ]


# -- failures ---


def test_connection_test_passes_and_shows_the_prefix(
    s3_server: S3Server, bucket_with_tree: str
) -> None:
    # What `watch-pipeline source test` shows: the connection passes, then the prefix's listing.
    client = make_client(s3_server, bucket_with_tree, prefix="incoming")

    assert client.test_connection() is None
    assert client.browse() == [
        BrowseEntry("folder", "sub", None),
        BrowseEntry("file", "a.mp4", 1),
        BrowseEntry("file", "notes.txt", 1),
    ]
    with pytest.raises(SourceNotFoundError):
        make_client(s3_server, bucket_with_tree + "-gone").test_connection()


def test_missing_bucket(s3_server: S3Server) -> None:
    client = make_client(s3_server, "no-such-bucket-here")

    with pytest.raises(SourceNotFoundError, match="bucket no-such-bucket-here does not exist"):
        client.test_connection()
    with pytest.raises(SourceNotFoundError, match="no-such-bucket-here"):
        client.list_files()  # raised at call time, before iteration


def test_credentials_are_checked_and_never_shown(
    s3_server: S3Server, s3_bucket: str, s3_enforced_auth: S3AuthUsers
) -> None:
    allowed, denied = s3_enforced_auth.allowed, s3_enforced_auth.denied
    good = make_client(
        s3_server,
        s3_bucket,
        access_key_id=allowed.access_key_id,
        secret_access_key=allowed.secret_access_key,
    )
    good.test_connection()
    assert list(good.list_files()) == []

    wrong_secret = "wrong-" + allowed.secret_access_key[6:]
    cases = [
        (allowed.access_key_id, wrong_secret, SourceAuthError),
        ("AKIAUNKNOWNKEY000000", wrong_secret, SourceAuthError),
        (denied.access_key_id, denied.secret_access_key, SourcePermissionError),
    ]
    for access_key_id, secret, error in cases:
        client = make_client(
            s3_server, s3_bucket, access_key_id=access_key_id, secret_access_key=secret
        )
        for call in (client.test_connection, client.list_files):
            with pytest.raises(error) as info:
                call()
            assert secret not in str(info.value)
            if error is SourceAuthError:
                assert str(info.value).startswith("S3 credentials were refused")
        assert secret not in repr(client)


def test_half_credentials_are_refused_at_once() -> None:
    with pytest.raises(SourceAuthError, match="incomplete"):
        S3SourceClient(bucket="b", access_key_id="id")


def test_unreachable_endpoint_fails_fast() -> None:
    client = S3SourceClient(
        bucket="bucket",
        endpoint_url=f"127.0.0.1:{_free_port()}",
        use_ssl=False,
        access_key_id="id",
        secret_access_key="s3cr3t-never-shown",
        connect_timeout=1,
    )
    started = time.monotonic()

    with pytest.raises(SourceUnreachableError, match="cannot reach S3 endpoint http://") as info:
        client.test_connection()

    assert time.monotonic() - started < 10
    assert "s3cr3t-never-shown" not in str(info.value)
    with pytest.raises(SourceUnreachableError):
        client.list_files()


# -- factory ---


def test_factory_builds_the_client_from_a_catalog_row(
    s3_server: S3Server, bucket_with_tree: str, tmp_path: Path
) -> None:
    row = SimpleNamespace(
        source_type="s3",
        local_path=None,
        s3_bucket_name=bucket_with_tree,
        s3_prefix="incoming/sub",
        s3_endpoint_url=s3_server.endpoint_url,
        s3_region=s3_server.region,
        s3_access_key_id=s3_server.access_key_id,
        s3_use_ssl=False,
    )

    client = create_client(
        row, watch_folder=tmp_path, secrets={"secret": s3_server.secret_access_key}
    )

    assert isinstance(client, S3SourceClient)
    assert listed(client) == {"b.MP4", "deeper/c.wav"}
    assert s3_server.secret_access_key not in repr(client)
