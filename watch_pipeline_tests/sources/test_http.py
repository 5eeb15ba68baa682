"""URL downloads against a real loopback HTTP server: ranges, drops, 404, caps, redirect loops."""

from __future__ import annotations

import pytest

from watch_pipeline.pipeline.manual import not_media
from watch_pipeline.sources import http
from watch_pipeline.sources.http import (
    DownloadError,
    DownloadLimits,
    DownloadNotFoundError,
    DownloadRedirectError,
    DownloadRefusedError,
    DownloadTooLargeError,
)
from watch_pipeline_tests.fakes import tone_wav

LIMITS = DownloadLimits(max_bytes=10 * 1024 * 1024, timeout_seconds=10, max_redirects=3)
BODY = tone_wav(440, seconds=5)  # 160 kB of real WAV


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch):
    monkeypatch.setattr(http._transfer, "RETRY_BACKOFF_SECONDS", 0.0)


def _leftovers(staging, url):
    folder = http.staging_folder(staging, url)
    return sorted(p.name for p in folder.iterdir() if p.name != http.LOCK) \
        if folder.exists() else []


def test_download_lands_under_its_own_name(http_server, tmp_path):
    http_server.route("/rec/talk%20one.wav", BODY)
    got = http.download(http_server.url("/rec/talk%20one.wav"), tmp_path, limits=LIMITS,
                        head_check=not_media)
    assert got.filename == "talk one.wav" and got.size == len(BODY)
    assert got.path.read_bytes() == BODY
    assert _leftovers(tmp_path, http_server.url("/rec/talk%20one.wav")) == ["talk one.wav"]


def test_content_disposition_names_the_file(http_server, tmp_path):
    http_server.route("/get", BODY, headers={
        "Content-Disposition": 'attachment; filename="../../etc/Meeting.wav"'})
    got = http.download(http_server.url("/get?id=7&sig=secret"), tmp_path, limits=LIMITS)
    assert got.filename == "Meeting.wav"
    assert got.path.parent.parent == tmp_path


def test_a_dropped_connection_resumes_with_range_and_if_range(http_server, tmp_path):
    http_server.route("/drop.wav", BODY, drops=2, drop_after=40_000)
    got = http.download(http_server.url("/drop.wav"), tmp_path, limits=LIMITS)
    assert got.path.read_bytes() == BODY
    asked = [(s.range, s.if_range) for s in http_server.seen]
    assert asked == [(None, None), ("bytes=40000-", '"v1"'), ("bytes=80000-", '"v1"')]


def test_a_later_call_resumes_the_partial_file(http_server, tmp_path):
    url = http_server.url("/flaky.wav")
    http_server.route("/flaky.wav", BODY, drops=1, drop_after=50_000, fail_after_drop=1)
    with pytest.raises(DownloadError, match="503"):
        http.download(url, tmp_path, limits=LIMITS)
    assert _leftovers(tmp_path, url) == [http.META, http.PARTIAL]  # kept for the next call
    got = http.download(url, tmp_path, limits=LIMITS)
    assert got.path.read_bytes() == BODY and got.resumed_from == 50_000
    assert http_server.seen[-1].range == "bytes=50000-"


def test_a_changed_file_is_fetched_whole_again(http_server, tmp_path):
    url = http_server.url("/v.wav")
    http_server.route("/v.wav", BODY, drops=1, drop_after=50_000, fail_after_drop=1)
    with pytest.raises(DownloadError):
        http.download(url, tmp_path, limits=LIMITS)
    new = tone_wav(880, seconds=5)
    http_server.route("/v.wav", new, etag='"v2"')  # If-Range "v1" no longer matches
    got = http.download(url, tmp_path, limits=LIMITS)
    assert got.path.read_bytes() == new


def test_404_is_reported_and_nothing_is_kept(http_server, tmp_path):
    url = http_server.url("/missing.wav")
    with pytest.raises(DownloadNotFoundError, match=r"/missing\.wav failed: 404"):
        http.download(url, tmp_path, limits=LIMITS)
    assert _leftovers(tmp_path, url) == []


def test_an_announced_body_over_the_cap_is_refused_before_reading(http_server, tmp_path):
    url = http_server.url("/big.wav")
    http_server.route("/big.wav", BODY)
    small = DownloadLimits(max_bytes=100_000, timeout_seconds=10, max_redirects=3)
    with pytest.raises(DownloadTooLargeError, match=r"160044 bytes, the limit is 100000"):
        http.download(url, tmp_path, limits=small)
    assert _leftovers(tmp_path, url) == []


def test_an_unannounced_body_over_the_cap_is_cut_and_discarded(http_server, tmp_path):
    url = http_server.url("/stream.wav")
    http_server.route("/stream.wav", BODY, with_length=False)
    small = DownloadLimits(max_bytes=100_000, timeout_seconds=10, max_redirects=3)
    with pytest.raises(DownloadTooLargeError, match="more than 100000 bytes arrived"):
        http.download(url, tmp_path, limits=small)
    assert _leftovers(tmp_path, url) == []
    # Without a cap problem the same unannounced body arrives whole.
    assert http.download(url, tmp_path, limits=LIMITS).path.read_bytes() == BODY


def test_a_redirect_loop_is_reported(http_server, tmp_path):
    http_server.route("/a", location="/b")
    http_server.route("/b", location="/a")
    with pytest.raises(DownloadRedirectError, match="more than 3 redirects"):
        http.download(http_server.url("/a"), tmp_path, limits=LIMITS)


def test_a_redirect_is_followed(http_server, tmp_path):
    http_server.route("/short", location="/files/long-name.wav")
    http_server.route("/files/long-name.wav", BODY)
    got = http.download(http_server.url("/short"), tmp_path, limits=LIMITS)
    assert got.filename == "long-name.wav" and got.path.read_bytes() == BODY


def test_a_web_page_is_refused_as_soon_as_it_starts(http_server, tmp_path):
    url = http_server.url("/page")
    http_server.route("/page", b"<!doctype html><title>Sign in</title>" + b" " * 200_000,
                      content_type="text/html")
    with pytest.raises(DownloadRefusedError, match="looks like a web page"):
        http.download(url, tmp_path, limits=LIMITS, head_check=not_media)
    assert _leftovers(tmp_path, url) == []


@pytest.mark.parametrize("url", ["ftp://example.org/a.wav", "file:///etc/passwd", "a.wav",
                                 "http:///nohost"])
def test_only_http_urls_are_accepted(tmp_path, url):
    with pytest.raises(DownloadError):
        http.download(url, tmp_path, limits=LIMITS)


def test_messages_never_show_credentials_or_queries(http_server, tmp_path):
    url = http_server.url("/missing.wav").replace("http://", "http://user:hunter2@") + \
        "?X-Amz-Signature=topsecret"
    with pytest.raises(DownloadNotFoundError) as caught:
        http.download(url, tmp_path, limits=LIMITS)
    assert "hunter2" not in str(caught.value) and "topsecret" not in str(caught.value)
    assert "/missing.wav?…" in str(caught.value)
