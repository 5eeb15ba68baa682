from __future__ import annotations

import hashlib
import io
import random
import socket
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.error import HTTPError
from urllib.parse import parse_qs, urlsplit
from urllib.request import Request, urlopen

import pytest

from watch_pipeline.store import checksum
from watch_pipeline.store.base import ObjectStoreError, StoredObject
from watch_pipeline.store.s3 import MAX_PRESIGN_SECONDS, S3ObjectStore, S3RangeReader
from watch_pipeline_tests.fixtures.s3_server import S3AuthUsers, S3Server, _free_port
from watch_pipeline_tests.store.contract import UNSAFE_KEYS, assert_key_refused

MIB = 1024 * 1024


def crc32c(data: bytes) -> str:
    return checksum.to_hex(checksum.value(data))


def make_store(server: S3Server, bucket: str, **kwargs: Any) -> S3ObjectStore:
    return S3ObjectStore(bucket, **{**server.options(), **kwargs})


def write_random(path: Path, size: int, seed: int = 0) -> bytes:
    data = random.Random(seed).randbytes(size)
    path.write_bytes(data)
    return data


def count_calls(client: Any) -> Counter[str]:
    """Count the S3 operations ``client`` sends (registered on botocore's own event hook)."""
    calls: Counter[str] = Counter()

    def on_call(model: Any, **_kwargs: Any) -> None:
        calls[model.name] += 1

    client.meta.events.register("before-call.s3", on_call)
    return calls


@pytest.fixture
def store(s3_server: S3Server, s3_bucket: str) -> S3ObjectStore:
    return make_store(s3_server, s3_bucket)


def test_round_trip(store: S3ObjectStore, s3_server: S3Server, tmp_path: Path) -> None:
    data = write_random(tmp_path / "talk.mp4", 300_000)
    key = "user_1/file_42/talk.mp4"

    stored = store.put_file(key, tmp_path / "talk.mp4", content_type="video/mp4")

    assert stored == StoredObject(key, len(data), crc32c(data), "crc32c")
    assert store.head(key) == stored
    raw = s3_server.client().head_object(Bucket=store.bucket, Key=key, ChecksumMode="ENABLED")
    assert raw["Metadata"] == {"crc32c": stored.checksum}
    assert raw["ContentType"] == "video/mp4"
    # the checksum the server keeps (and checks on AWS and MinIO) is the one of the bytes
    assert checksum.from_base64(raw["ChecksumCRC32C"]) == checksum.value(data)
    assert store.get_bytes(key) == data
    with store.open(key) as fh:
        fh.seek(1000)
        assert fh.read(10) == data[1000:1010]
    store.delete(key)
    assert store.head(key) is None
    store.delete(key)


def test_put_bytes_with_prefix(s3_server: S3Server, s3_bucket: str) -> None:
    store = make_store(s3_server, s3_bucket, prefix="/media/")

    stored = store.put_bytes("t/transcript.json", b"{}", content_type="application/json")

    assert stored.checksum == crc32c(b"{}")
    assert store.url("t/transcript.json") == f"s3://{s3_bucket}/media/t/transcript.json"
    body = s3_server.client().get_object(Bucket=s3_bucket, Key="media/t/transcript.json")["Body"]
    assert body.read() == b"{}"
    assert store.head("t/transcript.json") == stored


def test_multipart_upload_sends_a_crc32c_per_part(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    store = make_store(
        s3_server, s3_bucket, multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB
    )
    data = write_random(tmp_path / "big.bin", 12 * MIB)
    calls = count_calls(store.client)

    stored = store.put_file("big.bin", tmp_path / "big.bin")

    assert stored.checksum == crc32c(data)
    assert calls["UploadPart"] == 3
    assert calls["CompleteMultipartUpload"] == 1
    raw = s3_server.client().head_object(Bucket=s3_bucket, Key="big.bin",
                                         ChecksumMode="ENABLED")
    assert raw["ETag"].endswith('-3"')  # S3's multipart ETag: <md5 of part md5s>-<parts>
    assert raw["Metadata"]["crc32c"] == stored.checksum
    # the server's composite, computed from the bytes it received: the CRC32C of the parts'
    parts = [data[i : i + 5 * MIB] for i in range(0, len(data), 5 * MIB)]
    composite = checksum.composite([checksum.value(p) for p in parts])
    assert raw["ChecksumCRC32C"] in (composite, f"{composite}-3")
    assert store.head("big.bin") == stored
    with store.open("big.bin") as fh:
        assert fh.read() == data


def test_a_part_corrupted_in_transit_is_caught_and_nothing_is_stored(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    """A part whose bytes change after their CRC32C was taken: AWS and MinIO refuse the part
    (BadDigest); moto stores it, and the composite it reports then differs from ours."""
    store = make_store(
        s3_server, s3_bucket, multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB
    )
    write_random(tmp_path / "big.bin", 11 * MIB)

    def flip_a_byte(params: dict[str, Any], **_kwargs: Any) -> None:
        if params.get("PartNumber") == 2:
            body = bytearray(params["Body"])
            body[1234] ^= 0x01
            params["Body"] = bytes(body)

    store.client.meta.events.register("before-parameter-build.s3.UploadPart", flip_a_byte)
    with pytest.raises(ObjectStoreError, match=r"big\.bin.*CRC32C.*not stored|BadDigest"):
        store.put_file("big.bin", tmp_path / "big.bin")

    assert store.head("big.bin") is None
    uploads = s3_server.client().list_multipart_uploads(Bucket=s3_bucket)
    assert not uploads.get("Uploads")


def test_a_source_rewritten_during_the_upload_is_not_stored(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    store = make_store(
        s3_server, s3_bucket, multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB
    )
    src = tmp_path / "big.bin"
    write_random(src, 11 * MIB)

    def rewrite_the_source(params: dict[str, Any], **_kwargs: Any) -> None:
        if params.get("PartNumber") == 1:
            with open(src, "r+b") as fh:  # another program rewrites the end of the file
                fh.seek(10 * MIB)
                fh.write(b"x" * 100)

    store.client.meta.events.register("before-parameter-build.s3.UploadPart",
                                      rewrite_the_source)
    with pytest.raises(ObjectStoreError, match="changed while being uploaded"):
        store.put_file("big.bin", src)

    assert store.head("big.bin") is None


def test_objects_stored_before_crc32c_report_their_sha256(
    store: S3ObjectStore, s3_server: S3Server
) -> None:
    digest = hashlib.sha256(b"abc").hexdigest()
    s3_server.client().put_object(Bucket=store.bucket, Key="old.wav", Body=b"abc",
                                  Metadata={"sha256": digest})

    assert store.head("old.wav") == StoredObject("old.wav", 3, digest, "sha256")


def test_empty_file(store: S3ObjectStore, tmp_path: Path) -> None:
    (tmp_path / "empty").write_bytes(b"")

    stored = store.put_file("empty", tmp_path / "empty")

    assert stored == StoredObject("empty", 0, crc32c(b""), "crc32c")
    with store.open("empty") as fh:
        assert fh.read() == b""
        assert fh.read(10) == b""


def test_range_reader_reads_like_a_local_file(
    store: S3ObjectStore, s3_server: S3Server, tmp_path: Path
) -> None:
    size = 3 * MIB + 17
    data = write_random(tmp_path / "obj.bin", size, seed=7)
    store.put_file("obj.bin", tmp_path / "obj.bin")
    rng = random.Random(42)

    with (
        S3RangeReader(s3_server.client(), store.bucket, "obj.bin") as remote,
        open(tmp_path / "obj.bin", "rb", buffering=0) as local,
    ):
        assert remote.size == size
        assert (remote.readable(), remote.seekable(), remote.writable()) == (True, True, False)
        for _ in range(60):
            whence = rng.choice([io.SEEK_SET, io.SEEK_CUR, io.SEEK_END])
            offset = {
                io.SEEK_SET: rng.randrange(0, size + 100),
                io.SEEK_CUR: rng.randrange(-remote.tell(), 100_000),
                io.SEEK_END: rng.randrange(-size, 100),
            }[whence]
            assert remote.seek(offset, whence) == local.seek(offset, whence)
            length = rng.choice([0, 1, 100, 16 * 1024, 300_000])
            assert remote.read(length) == local.read(length)
            assert remote.tell() == local.tell()
        remote.seek(size - 5)
        local.seek(size - 5)
        buf_remote, buf_local = bytearray(10), bytearray(10)
        assert remote.readinto(buf_remote) == local.readinto(buf_local) == 5
        assert buf_remote == buf_local
        remote.seek(MIB)
        assert remote.read() == data[MIB:]
        with pytest.raises(OSError):
            remote.seek(-1)
    assert remote.closed
    with pytest.raises(ValueError):
        remote.read(1)


def test_three_windows_cost_three_gets_and_one_head(
    store: S3ObjectStore, s3_server: S3Server, tmp_path: Path
) -> None:
    data = write_random(tmp_path / "big.bin", 4 * MIB)
    store.put_file("big.bin", tmp_path / "big.bin")
    client = s3_server.client()
    calls = count_calls(client)

    with S3RangeReader(client, store.bucket, "big.bin") as reader:
        windows = []
        for offset in (0, len(data) // 2, len(data) - 16 * 1024):
            reader.seek(offset)
            windows.append(reader.read(16 * 1024))
        reader.seek(0, io.SEEK_END)
        assert reader.read(16) == b""  # at EOF: no request

    assert windows == [data[:16384], data[2 * MIB : 2 * MIB + 16384], data[-16384:]]
    assert reader.requests == 3
    assert calls == Counter({"GetObject": 3, "HeadObject": 1})


def test_range_reader_with_known_size_skips_the_head(
    store: S3ObjectStore, s3_server: S3Server
) -> None:
    store.put_bytes("small", b"0123456789")
    client = s3_server.client()
    calls = count_calls(client)

    reader = S3RangeReader(client, store.bucket, "small", size=10)

    assert reader.read(4) == b"0123"
    assert calls == Counter({"GetObject": 1})


def test_buffered_reader_over_range_reader(store: S3ObjectStore) -> None:
    store.put_bytes("lines.txt", b"one\ntwo\nthree\n")
    with io.BufferedReader(store.open("lines.txt"), buffer_size=64 * 1024) as fh:
        assert fh.readlines() == [b"one\n", b"two\n", b"three\n"]


def test_overwritten_object_fails_the_reader_instead_of_mixing_versions(
    store: S3ObjectStore,
) -> None:
    store.put_bytes("v", b"a" * 1000)
    reader = store.open("v")
    assert reader.read(10) == b"a" * 10
    store.put_bytes("v", b"b" * 1000)

    with pytest.raises(ObjectStoreError, match="changed"):
        reader.read(10)


def test_stream_url_is_a_presigned_get_that_serves_ranges(
    s3_server: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    store = make_store(s3_server, s3_bucket, prefix="media",
                       secret_access_key="secret-never-in-a-url")
    data = write_random(tmp_path / "talk.mp4", 300_000)
    store.put_file("user_1/file_1/talk.mp4", tmp_path / "talk.mp4")

    url = store.stream_url("user_1/file_1/talk.mp4", expires=120)

    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == s3_server.endpoint_url
    assert parts.path == f"/{s3_bucket}/media/user_1/file_1/talk.mp4"
    query = parse_qs(parts.query)
    assert query["X-Amz-Expires"] == ["120"] and "X-Amz-Signature" in query
    assert "secret-never-in-a-url" not in url
    # what ffmpeg's http protocol sends: an open-ended range from the offset it seeks to
    with urlopen(Request(url, headers={"Range": "bytes=250000-"}), timeout=10) as response:
        assert response.status == 206
        assert response.read() == data[250_000:]
    far = parse_qs(urlsplit(store.stream_url("user_1/file_1/talk.mp4", expires=10**9)).query)
    assert far["X-Amz-Expires"] == [str(MAX_PRESIGN_SECONDS)]
    with pytest.raises(HTTPError) as missing:
        urlopen(store.stream_url("user_1/file_1/absent.mp4"), timeout=10)
    assert missing.value.code == 404


@pytest.mark.parametrize("key", UNSAFE_KEYS)
def test_unsafe_keys_are_rejected(store: S3ObjectStore, tmp_path: Path, key: str) -> None:
    (tmp_path / "src").write_bytes(b"x")
    assert_key_refused(store, key, tmp_path / "src")


def test_missing_object(store: S3ObjectStore) -> None:
    assert store.head("absent") is None
    with pytest.raises(ObjectStoreError, match="no such object"):
        store.get_bytes("absent")
    with pytest.raises(ObjectStoreError, match=r"s3://.*/absent"):
        store.open("absent")


def test_missing_bucket_is_named(s3_server: S3Server, tmp_path: Path) -> None:
    store = make_store(s3_server, "no-such-bucket-here")
    (tmp_path / "src").write_bytes(b"x")

    with pytest.raises(ObjectStoreError, match="bucket does not exist") as info:
        store.put_file("k", tmp_path / "src")
    assert "no-such-bucket-here" in str(info.value)
    with pytest.raises(ObjectStoreError, match="bucket does not exist"):
        store.put_bytes("k", b"x")


def test_unreachable_endpoint(tmp_path: Path) -> None:
    store = S3ObjectStore(
        "bucket",
        endpoint_url=f"127.0.0.1:{_free_port()}",
        use_ssl=False,
        access_key_id="id",
        secret_access_key="s3cr3t-never-shown",
        connect_timeout=1,
    )

    with pytest.raises(ObjectStoreError, match=r"cannot connect to http://127\.0\.0\.1") as info:
        store.put_bytes("k", b"x")
    assert "s3cr3t-never-shown" not in str(info.value)
    assert "s3cr3t-never-shown" not in repr(store)


def test_silent_server_times_out() -> None:
    with socket.socket() as listener:
        # Accepted by the kernel's backlog but never answered.
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        store = S3ObjectStore(
            "bucket",
            endpoint_url=f"http://127.0.0.1:{listener.getsockname()[1]}",
            access_key_id="id",
            secret_access_key="s3cr3t-never-shown",
            read_timeout=0.2,
        )

        with pytest.raises(ObjectStoreError, match="did not answer in time") as info:
            store.head("k")
    assert "s3cr3t-never-shown" not in str(info.value)


def test_half_credentials_are_refused_at_once() -> None:
    with pytest.raises(ObjectStoreError, match="incomplete"):
        S3ObjectStore("bucket", access_key_id="id")


def test_credentials_are_checked_and_never_shown(
    s3_server: S3Server, s3_bucket: str, s3_enforced_auth: S3AuthUsers, tmp_path: Path
) -> None:
    allowed, denied = s3_enforced_auth.allowed, s3_enforced_auth.denied
    (tmp_path / "src").write_bytes(b"payload")
    wrong_secret = "wrong-" + allowed.secret_access_key[6:]

    good = make_store(
        s3_server,
        s3_bucket,
        access_key_id=allowed.access_key_id,
        secret_access_key=allowed.secret_access_key,
    )
    assert good.put_file("k", tmp_path / "src").size == 7
    assert good.get_bytes("k") == b"payload"

    cases = [
        (allowed.access_key_id, wrong_secret, "secret access key is wrong"),
        ("AKIAUNKNOWNKEY000000", wrong_secret, "access key id is not known"),
        (denied.access_key_id, denied.secret_access_key, "access denied"),
    ]
    for access_key_id, secret, message in cases:
        store = make_store(
            s3_server, s3_bucket, access_key_id=access_key_id, secret_access_key=secret
        )
        with pytest.raises(ObjectStoreError, match=message) as info:
            store.put_file("k2", tmp_path / "src")
        assert secret not in str(info.value)
        with pytest.raises(ObjectStoreError) as info:
            store.get_bytes("k")
        assert secret not in str(info.value)
        with pytest.raises(ObjectStoreError) as info:
            store.head("k")
        assert secret not in str(info.value)


def test_ensure_bucket_creates_once_and_then_finds_it(s3_server: S3Server) -> None:
    name = f"ensure-{random.Random().randrange(10**9)}"
    store = make_store(s3_server, name)

    with pytest.raises(ObjectStoreError, match=f"bucket '{name}'.* does not exist"):
        store.ensure_bucket(create=False)
    assert store.ensure_bucket() is True
    assert store.ensure_bucket() is False
    assert store.ensure_bucket(create=False) is False
    store.put_bytes("k", b"x")
    assert store.get_bytes("k") == b"x"


def test_ensure_bucket_on_an_unreachable_endpoint_is_a_clear_error() -> None:
    store = S3ObjectStore("bucket", endpoint_url=f"http://127.0.0.1:{_free_port()}",
                          access_key_id="id", secret_access_key="s3cr3t-never-shown",
                          connect_timeout=1)

    with pytest.raises(ObjectStoreError, match="cannot be checked: cannot connect") as info:
        store.ensure_bucket()
    assert "s3cr3t-never-shown" not in str(info.value)
