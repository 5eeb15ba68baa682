"""RivaTranscriber against a loopback gRPC server implementing Riva's real servicer interface."""

from __future__ import annotations

import logging
import re
import socket
import subprocess
import time
from pathlib import Path

import dagster as dg
import grpc
import pytest
from riva.client.proto import riva_audio_pb2 as raudio

from watch_pipeline.transcribe.base import TranscriptionError
from watch_pipeline.transcribe.formats import to_srt, to_vtt
from watch_pipeline.transcribe.resource import TranscriberResource
from watch_pipeline.transcribe.riva import RivaTranscriber
from watch_pipeline_tests.fixtures.riva_server import FakeWord
from watch_pipeline_tests.transcribe.checks import assert_made_by

API_KEY = "nvapi-s3cret-TEST-key-0123456789"
FAST_RETRIES = {"max_retries": 2, "retry_backoff": 0.01, "max_backoff": 0.05, "timeout": 10.0}
IN_CLEAR = {"allow_insecure_api_key": True}  # the plaintext test server: the key goes in clear


@pytest.fixture(scope="module")
def long_wav(tmp_path_factory) -> Path:
    """Four minutes of a 440 Hz tone: the server needs only bytes, a stream needs length."""
    path = tmp_path_factory.mktemp("riva") / "long.wav"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=16000:duration=240",
         "-ac", "1", str(path)],
        check=True,
    )  # fmt: skip
    return path


def _transcriber(server, **options) -> RivaTranscriber:
    return RivaTranscriber(uri=server.uri, **{**FAST_RETRIES, **options})


def test_short_audio_is_one_offline_recognize(riva_server, speech_wav):
    transcriber = _transcriber(riva_server, api_key=API_KEY, **IN_CLEAR)

    transcript = transcriber.transcribe(speech_wav, min_speakers=1, max_speakers=1)

    [call] = riva_server.calls
    assert call.method == "Recognize"
    config = call.config
    assert config.encoding == raudio.AudioEncoding.LINEAR_PCM
    assert config.sample_rate_hertz == 16_000
    assert config.audio_channel_count == 1
    assert config.language_code == "en-US"
    assert config.enable_automatic_punctuation
    assert config.enable_word_time_offsets
    assert config.max_alternatives == 1
    assert not config.HasField("diarization_config")  # min == max == 1: diarization off
    assert call.metadata["authorization"] == f"Bearer {API_KEY}"
    assert call.audio_bytes == pytest.approx(transcript.audio_duration * 32_000, abs=2)
    assert "Hello there, good morning. How are you?" == transcript.text
    assert_made_by(transcript, backend="riva", model="default", language="en-US",
                   model_id="riva:default:en-US:diar")
    assert transcript.extra["mode"] == "offline"
    assert [(s.start, s.end, s.speaker) for s in transcript.segments] == [
        (0.1, 1.7, None),
        (2.0, 2.8, None),
    ]
    assert transcript.segments[0].words[1].text == "there,"
    assert transcript.segments[0].words[1].start == pytest.approx(0.45)


def test_long_audio_streams_in_small_chunks(riva_server, long_wav):
    transcriber = _transcriber(riva_server, model="parakeet", punctuation=False)

    transcript = transcriber.transcribe(long_wav, max_speakers=1)

    [call] = riva_server.calls
    assert call.method == "StreamingRecognize"
    assert call.config.sample_rate_hertz == 16_000
    assert call.config.audio_channel_count == 1
    assert call.config.encoding == raudio.AudioEncoding.LINEAR_PCM
    assert call.config.model == "parakeet"
    assert not call.config.enable_automatic_punctuation
    assert call.interim_results is False
    assert call.audio_chunks == 480  # 240 s in 0.5 s messages
    assert call.audio_bytes == 240 * 32_000
    assert call.max_message_size < 20_000  # 16 kB of PCM + framing, far below 4 MiB
    assert transcript.extra["mode"] == "streaming"
    assert transcript.audio_duration == pytest.approx(240.0)
    assert transcript.model == "parakeet"
    assert transcript.extra["model_id"] == "riva:parakeet:en-US:nopunct:diar"
    assert "partial" not in transcript.text  # interim results are dropped
    assert transcript.text == "Hello there, good morning. How are you?"


def test_offline_limit_decides_the_mode(riva_server, speech_wav):
    _transcriber(riva_server, offline_max_seconds=1.0, chunk_seconds=1.0).transcribe(speech_wav)

    [call] = riva_server.calls
    assert call.method == "StreamingRecognize"
    assert 2 <= call.audio_chunks <= 6
    assert call.max_message_size <= 32_000 + 100


def test_diarized_segments_become_speaker_labelled_subtitles(riva_server, speech_wav):
    transcript = _transcriber(riva_server).transcribe(speech_wav, min_speakers=2, max_speakers=3)

    [call] = riva_server.calls
    assert call.config.diarization_config.enable_speaker_diarization
    assert call.config.diarization_config.max_speaker_count == 3
    assert [(s.speaker, s.text, s.start, s.end) for s in transcript.segments] == [
        ("Speaker 1", "Hello there,", 0.1, 0.8),  # split on the speaker change
        ("Speaker 2", "good morning.", 0.9, 1.7),
        ("Speaker 1", "How are you?", 2.0, 2.8),  # split on the result boundary
    ]
    assert transcript.extra["min_speakers"] == "2"
    assert transcript.extra["max_speakers"] == "3"

    srt_cues = _parse_srt(to_srt(transcript))
    assert [text for _, _, text in srt_cues] == [
        "Speaker 1: Hello there,",
        "Speaker 2: good morning.",
        "Speaker 1: How are you?",
    ]
    vtt_cues = _parse_vtt(to_vtt(transcript))
    assert [text for _, _, text in vtt_cues] == [
        "<v Speaker 1>Hello there,",
        "<v Speaker 2>good morning.",
        "<v Speaker 1>How are you?",
    ]
    for cues in (srt_cues, vtt_cues):
        assert [(start, end) for start, end, _ in cues] == [(0.1, 0.8), (0.9, 1.7), (2.0, 2.8)]


def test_diarization_can_be_switched_off(riva_server, speech_wav):
    transcriber = _transcriber(riva_server, speaker_diarization=False)

    transcript = transcriber.transcribe(speech_wav, max_speakers=3)

    assert not riva_server.calls[0].config.HasField("diarization_config")
    assert all(segment.speaker is None for segment in transcript.segments)
    assert transcriber.model_id == "riva:default:en-US"


def test_unavailable_twice_then_success(riva_server, speech_wav):
    riva_server.servicer.fail_next(2, grpc.StatusCode.UNAVAILABLE)

    transcript = _transcriber(riva_server).transcribe(speech_wav)

    assert len(riva_server.calls) == 3
    assert transcript.text.startswith("Hello there")


def test_deadline_exceeded_is_retried_while_streaming(riva_server, long_wav):
    riva_server.servicer.fail_next(1, grpc.StatusCode.DEADLINE_EXCEEDED)

    transcript = _transcriber(riva_server).transcribe(long_wav)

    assert [call.method for call in riva_server.calls] == ["StreamingRecognize"] * 2
    assert riva_server.calls[1].audio_chunks == 480  # the retry sends the audio from the start
    assert transcript.segments


def test_unavailable_beyond_the_retries_is_unreachable(riva_server, speech_wav):
    riva_server.servicer.fail_next(5, grpc.StatusCode.UNAVAILABLE)

    with pytest.raises(TranscriptionError, match=r"unreachable after 3 attempts"):
        _transcriber(riva_server).transcribe(speech_wav)
    assert len(riva_server.calls) == 3


def test_invalid_argument_is_a_clear_error_without_retries(riva_server, speech_wav):
    riva_server.servicer.reject_with = "Unsupported sample rate"

    with pytest.raises(TranscriptionError) as excinfo:
        _transcriber(riva_server).transcribe(speech_wav)

    assert str(excinfo.value) == "Riva rejected the audio: Unsupported sample rate"
    assert len(riva_server.calls) == 1


def test_wrong_api_key_is_refused_and_never_shown(riva_server, speech_wav):
    riva_server.servicer.required_api_key = "the-right-key"
    transcriber = _transcriber(riva_server, api_key=API_KEY, **IN_CLEAR)

    with pytest.raises(TranscriptionError, match="Riva refused the API key") as excinfo:
        transcriber.transcribe(speech_wav)

    assert len(riva_server.calls) == 1  # auth failures are not retried
    assert API_KEY not in str(excinfo.value)
    assert API_KEY not in repr(excinfo.value)
    assert API_KEY not in repr(transcriber)
    assert "api_key='***'" in repr(transcriber)
    resource = TranscriberResource(
        backend="riva",
        riva_uri=riva_server.uri,
        riva_api_key=API_KEY,
        riva_allow_insecure_api_key=True,
    )
    assert API_KEY not in repr(resource.get_transcriber())


def test_api_key_echoed_by_the_server_is_masked(riva_server, speech_wav):
    riva_server.servicer.reject_with = f"bad request from key {API_KEY}"

    with pytest.raises(TranscriptionError) as excinfo:
        _transcriber(riva_server, api_key=API_KEY, **IN_CLEAR).transcribe(speech_wav)

    assert str(excinfo.value) == "Riva rejected the audio: bad request from key ***"
    assert excinfo.value.__cause__ is None


def test_right_api_key_is_accepted(riva_server, speech_wav):
    riva_server.servicer.required_api_key = API_KEY

    transcript = _transcriber(riva_server, api_key=API_KEY, **IN_CLEAR).transcribe(speech_wav)

    assert transcript.segments


def test_server_down_is_unreachable_quickly(speech_wav):
    with socket.socket() as probe:  # a port nobody listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    transcriber = RivaTranscriber(
        uri=f"127.0.0.1:{port}", api_key=API_KEY, **IN_CLEAR, **FAST_RETRIES
    )

    started = time.monotonic()
    with pytest.raises(TranscriptionError, match=rf"Riva server 127.0.0.1:{port} is unreachable"):
        transcriber.transcribe(speech_wav)

    assert time.monotonic() - started < 10
    with pytest.raises(TranscriptionError) as excinfo:
        transcriber.list_models()
    assert "unreachable" in str(excinfo.value)
    assert API_KEY not in str(excinfo.value)


def test_tls_with_a_self_signed_certificate(riva_tls_server, speech_wav, caplog):
    transcriber = _transcriber(riva_tls_server, ssl_cert=riva_tls_server.cert_path, api_key="k")

    transcript = transcriber.transcribe(speech_wav)

    assert transcript.text.startswith("Hello there")
    assert riva_tls_server.calls[0].metadata["authorization"] == "Bearer k"
    assert transcriber.list_models() == ["parakeet-0.6b-en-US-asr-offline"]
    assert "in clear" not in caplog.text


def test_api_key_without_tls_is_refused_before_anything_is_sent(riva_server):
    riva_server.servicer.required_api_key = API_KEY

    with pytest.raises(ValueError, match="without TLS") as excinfo:
        _transcriber(riva_server, api_key=API_KEY)

    message = str(excinfo.value)
    assert "RIVA_ALLOW_INSECURE_API_KEY=1" in message  # says how to allow it on purpose
    assert API_KEY not in message
    assert API_KEY not in repr(excinfo.value)
    resource = TranscriberResource(backend="riva", riva_uri=riva_server.uri, riva_api_key=API_KEY)
    with pytest.raises(ValueError, match="without TLS") as excinfo:
        resource.get_transcriber()
    assert API_KEY not in str(excinfo.value)
    assert riva_server.calls == []
    # Without a key there is nothing to protect: plaintext stays allowed.
    assert not _transcriber(riva_server).use_ssl


def test_api_key_in_clear_when_allowed_warns_once(riva_server, speech_wav, caplog):
    riva_server.servicer.required_api_key = API_KEY
    resource = TranscriberResource(
        backend="riva",
        riva_uri=riva_server.uri,
        riva_api_key=API_KEY,
        riva_allow_insecure_api_key=True,
        riva_max_retries=0,
    )
    transcriber = resource.get_transcriber()

    with caplog.at_level(logging.WARNING, logger="watch_pipeline.transcribe.riva"):
        first = transcriber.transcribe(speech_wav)
        second = transcriber.transcribe(speech_wav)

    assert first.text == second.text == "Hello there, good morning. How are you?"
    assert [call.metadata["authorization"] for call in riva_server.calls] == [
        f"Bearer {API_KEY}"
    ] * 2
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "API key is sent in clear" in warnings[0].getMessage()
    assert riva_server.uri in warnings[0].getMessage()
    assert API_KEY not in caplog.text


def test_tls_without_trusting_the_certificate_fails(riva_tls_server, speech_wav):
    transcriber = _transcriber(riva_tls_server, use_ssl=True, max_retries=0)

    with pytest.raises(TranscriptionError, match="unreachable"):
        transcriber.transcribe(speech_wav)
    assert riva_tls_server.calls == []


def test_plaintext_client_against_tls_server_fails(riva_tls_server, speech_wav):
    with pytest.raises(TranscriptionError, match="unreachable"):
        _transcriber(riva_tls_server, max_retries=0).transcribe(speech_wav)


def test_results_without_words_keep_their_text(riva_server, speech_wav):
    riva_server.servicer.results = ((FakeWord("one", 0, 500, 0),), ())

    transcript = _transcriber(riva_server).transcribe(speech_wav, max_speakers=2)

    assert [s.text for s in transcript.segments] == ["one"]
    assert transcript.segments[0].speaker == "Speaker 1"


def test_bad_media_is_a_transcription_error(riva_server, tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_text("not media\n" * 20)

    with pytest.raises(TranscriptionError, match=r"junk\.mp4"):
        _transcriber(riva_server).transcribe(junk)
    assert riva_server.calls == []


def test_invalid_options_are_refused():
    with pytest.raises(ValueError, match="offline_max_seconds"):
        RivaTranscriber(offline_max_seconds=300)
    with pytest.raises(ValueError, match="chunk_seconds"):
        RivaTranscriber(chunk_seconds=60)
    with pytest.raises(ValueError, match="uri"):
        RivaTranscriber(uri="no-port")
    with pytest.raises(ValueError, match="min_speakers"):
        RivaTranscriber().transcribe(Path("x.wav"), min_speakers=3, max_speakers=2)


def test_resource_builds_the_riva_backend(tmp_path):
    resource = TranscriberResource(
        backend="riva",
        riva_uri="riva.example:443",
        riva_ssl_cert=str(tmp_path / "ca.pem"),
        riva_language_code="de-DE",
        riva_model="conformer-de",
        riva_chunk_seconds=1.0,
        riva_max_retries=5,
        riva_metadata={"function-id": "abc"},
    )

    transcriber = resource.get_transcriber()

    assert isinstance(transcriber, RivaTranscriber)
    assert resource.model_id == "riva:conformer-de:de-DE:diar"
    assert transcriber.use_ssl
    assert transcriber.chunk_seconds == 1.0
    assert transcriber.max_retries == 5
    assert TranscriberResource(backend="riva").model_id == "riva:default:en-US:diar"
    with pytest.raises(Exception, match="riva_offline_max_seconds"):
        TranscriberResource(backend="riva", riva_offline_max_seconds=600)


def test_resource_api_key_from_env_var(monkeypatch, riva_server, speech_wav):
    monkeypatch.setenv("RIVA_API_KEY", API_KEY)
    riva_server.servicer.required_api_key = API_KEY

    @dg.asset
    def riva_text(transcriber: TranscriberResource) -> str:
        return transcriber.get_transcriber().transcribe(speech_wav).text

    resource = TranscriberResource(
        backend="riva",
        riva_uri=riva_server.uri,
        riva_api_key=dg.EnvVar("RIVA_API_KEY"),
        riva_allow_insecure_api_key=True,
    )
    result = dg.materialize([riva_text], resources={"transcriber": resource})

    assert result.success
    assert result.output_for_node("riva_text").startswith("Hello there")
    assert riva_server.calls[0].metadata["authorization"] == f"Bearer {API_KEY}"


# -- subtitle re-parsing -------------------------------------------------------------------------

_TIME = r"(\d{2,}):(\d{2}):(\d{2})[,.](\d{3})"


def _seconds(match: tuple[str, ...]) -> float:
    hours, minutes, seconds, millis = (int(part) for part in match)
    assert minutes < 60 and seconds < 60
    return hours * 3600 + minutes * 60 + seconds + millis / 1000


def _parse_cues(blocks: list[str], mark: str) -> list[tuple[float, float, str]]:
    cues = []
    for block in blocks:
        timing, text = block.split("\n", 1)
        match = re.fullmatch(rf"{_TIME} --> {_TIME}".replace("[,.]", mark), timing)
        assert match, f"bad cue timing {timing!r}"
        start, end = _seconds(match.groups()[:4]), _seconds(match.groups()[4:])
        assert start <= end
        cues.append((start, end, text.strip()))
    starts = [start for start, _, _ in cues]
    assert starts == sorted(starts)
    return cues


def _parse_srt(srt: str) -> list[tuple[float, float, str]]:
    blocks = [block for block in srt.strip().split("\n\n") if block]
    for number, block in enumerate(blocks, start=1):
        index, _ = block.split("\n", 1)
        assert index == str(number)
    return _parse_cues([block.split("\n", 1)[1] for block in blocks], ",")


def _parse_vtt(vtt: str) -> list[tuple[float, float, str]]:
    header, *blocks = vtt.strip().split("\n\n")
    assert header == "WEBVTT"
    return _parse_cues(blocks, r"\.")


def test_normalisation_for_riva_has_a_deadline(riva_server, speech_wav, instant_deadlines):
    with pytest.raises(TranscriptionError, match=r"\.wav: ffmpeg timed out after"):
        _transcriber(riva_server).transcribe(speech_wav)
    assert riva_server.calls == []


def test_audio_longer_than_the_cap_never_reaches_riva(riva_server, two_minutes_of_silence):
    silence = two_minutes_of_silence
    resource = TranscriberResource(backend="riva", riva_uri=riva_server.uri, max_audio_hours=12)

    with pytest.raises(TranscriptionError, match=r"silence\.flac: lasts 2\.0 min, over the 60"):
        resource.get_transcriber(max_audio_hours=1 / 60).transcribe(silence)
    assert riva_server.calls == []
