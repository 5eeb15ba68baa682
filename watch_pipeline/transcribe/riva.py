"""The production backend: an NVIDIA Riva ASR server over gRPC (``nvidia-riva-client`` stubs).

The audio is normalised by ffmpeg to a temporary 16 kHz mono 16-bit WAV and sent as raw
``LINEAR_PCM``:

* up to ``offline_max_seconds`` (default 30 s, about 1 MB of PCM) in one offline ``Recognize``
  call;
* anything longer through ``StreamingRecognize``: a config message, then one ``chunk_seconds``
  message after another, read from disk as they are sent. No message comes near gRPC's 4 MiB
  default limit and a 3-hour recording is never held in memory.

Only final results are kept. Each result becomes one segment, split further wherever the speaker
changes; word times (milliseconds in Riva) become seconds.

The channel, its TLS credentials, the API-key metadata and the deadlines are built here rather
than through ``riva.client.Auth``/``ASRService``, so that every one of them is explicit.
"""

from __future__ import annotations

import logging
import tempfile
import time
import wave
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TypeVar

import grpc
from riva.client.proto import riva_asr_pb2 as rasr
from riva.client.proto import riva_asr_pb2_grpc as rasr_grpc
from riva.client.proto import riva_audio_pb2 as raudio

from watch_pipeline.catalog.secrets import public_repr
from watch_pipeline.media.audio import SAMPLE_RATE, AudioError, normalize_audio
from watch_pipeline.media.limits import DEFAULT_MAX_DURATION_HOURS, hours_to_seconds
from watch_pipeline.transcribe.base import (
    Segment,
    Transcriber,
    Transcript,
    TranscriptionError,
    Word,
)

logger = logging.getLogger(__name__)

BYTES_PER_SECOND = SAMPLE_RATE * 2
"""Bytes of one second of the normalised audio (16 kHz, mono, 16-bit)."""

MAX_MESSAGE_BYTES = 2 * 1024 * 1024
"""The largest audio payload this client puts in one gRPC message: half the 4 MiB default."""

_RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
_AUTH_FAILURES = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
_T = TypeVar("_T")


class RivaTranscriber(Transcriber):
    """Transcribes on an NVIDIA Riva server, with speaker labels when diarization is on.

    Constructing one opens nothing: each :meth:`transcribe` opens its own channel (one per
    attempt) and closes it.

    Speakers: Riva takes only a maximum speaker count. When ``speaker_diarization`` is on and
    ``max_speakers`` > 1, diarization is requested with ``max_speaker_count = max_speakers``.
    ``min_speakers`` is informational (recorded in ``Transcript.extra``, not sent): Riva may find
    fewer speakers than it says. ``min_speakers == max_speakers == 1`` (any ``max_speakers`` of
    1) turns diarization off, and segments carry no speaker. Riva's 0-based ``speaker_tag`` *n*
    becomes the label ``"Speaker n+1"``, as in ``nvidia-riva-client``'s own output.

    Args:
        uri: Server address, ``"host:port"``.
        use_ssl: Connect with TLS, verified against the system's CA certificates (or
            ``ssl_cert``).
        ssl_cert: Path of a PEM CA bundle or server certificate to verify the server with;
            setting it implies TLS.
        api_key: Sent on every call as the metadata ``authorization: Bearer <api_key>`` (what
            NVIDIA-hosted Riva expects; ``riva.client.Auth`` sends the same pairs given as
            ``--metadata``). A secret: never logged, never in an exception message or ``repr``,
            and only sent over TLS unless ``allow_insecure_api_key``.
        allow_insecure_api_key: Send ``api_key`` over a plaintext channel (``use_ssl`` off and no
            ``ssl_cert``) anyway. Off, that combination is refused at construction; on, one
            warning is logged when the key first goes out in clear.
        metadata: Further, non-secret metadata pairs for every call, e.g. ``{"function-id": ...}``
            for NVIDIA-hosted Riva.
        language_code: BCP-47 language of the audio, e.g. ``"en-US"``.
        model: Name of a model deployed on the server; ``None`` lets the server choose.
        punctuation: Ask the server to punctuate and capitalise.
        max_alternatives: Alternatives requested per result; only the best one is used.
        speaker_diarization: Request speaker labels when ``max_speakers`` allows several.
        offline_max_seconds: Audio up to this length goes in one ``Recognize`` call; longer audio
            is streamed. At most 60 s, so the message stays under 2 MiB.
        chunk_seconds: Audio per streaming message (0.5 s = 16 kB).
        timeout: Deadline in seconds of a ``Recognize`` call; a stream's deadline is this plus
            the audio's duration.
        max_retries: Further attempts after ``UNAVAILABLE`` or ``DEADLINE_EXCEEDED``.
        retry_backoff: Seconds before the first retry; doubled for each next one.
        max_backoff: Upper bound of one wait between retries.
        normalize_timeout: Seconds ffmpeg may take to normalise; ``None`` derives it from the
            audio's duration (``media.limits.ffmpeg_timeout``).
        max_audio_hours: Longer audio is refused when normalised, having written no more than
            this much WAV.

    Raises:
        ValueError: An option is out of range, or an API key would go over a plaintext channel
            without ``allow_insecure_api_key`` (the message never contains the key).
    """

    def __init__(
        self,
        *,
        uri: str = "localhost:50051",
        use_ssl: bool = False,
        ssl_cert: str | Path | None = None,
        api_key: str | None = None,
        metadata: Mapping[str, str] | None = None,
        language_code: str = "en-US",
        model: str | None = None,
        punctuation: bool = True,
        max_alternatives: int = 1,
        speaker_diarization: bool = True,
        offline_max_seconds: float = 30.0,
        chunk_seconds: float = 0.5,
        timeout: float = 120.0,
        max_retries: int = 3,
        retry_backoff: float = 1.0,
        max_backoff: float = 30.0,
        normalize_timeout: float | None = None,
        max_audio_hours: float = DEFAULT_MAX_DURATION_HOURS,
        allow_insecure_api_key: bool = False,
    ) -> None:
        if not uri or ":" not in uri:
            raise ValueError(f"uri must be 'host:port', got {uri!r}")
        if not 0 <= offline_max_seconds <= MAX_MESSAGE_BYTES / BYTES_PER_SECOND:
            raise ValueError(
                f"offline_max_seconds must be between 0 and "
                f"{MAX_MESSAGE_BYTES // BYTES_PER_SECOND}, got {offline_max_seconds}"
            )
        if not 0.05 <= chunk_seconds <= 10:
            raise ValueError(f"chunk_seconds must be between 0.05 and 10, got {chunk_seconds}")
        if max_alternatives < 1:
            raise ValueError(f"max_alternatives must be at least 1, got {max_alternatives}")
        if max_retries < 0 or retry_backoff < 0 or max_backoff < 0 or timeout <= 0:
            raise ValueError("timeout must be positive; retries and backoff not negative")
        if not max_audio_hours > 0:
            raise ValueError(f"max_audio_hours must be positive, got {max_audio_hours}")
        self.uri = uri
        self.use_ssl = use_ssl or ssl_cert is not None
        self.ssl_cert = Path(ssl_cert).expanduser() if ssl_cert is not None else None
        self._api_key = api_key or None
        if self._api_key is not None and not self.use_ssl and not allow_insecure_api_key:
            raise ValueError(
                f"refusing to send the Riva API key to {uri} without TLS: set use_ssl or "
                "ssl_cert (RIVA_USE_SSL / RIVA_SSL_CERT), or allow_insecure_api_key "
                "(RIVA_ALLOW_INSECURE_API_KEY=1) to send it in clear"
            )
        self.allow_insecure_api_key = allow_insecure_api_key
        self._warned_in_clear = False
        self._metadata = tuple((key.lower(), value) for key, value in (metadata or {}).items())
        self.language_code = language_code
        self.model = model or None
        self.punctuation = punctuation
        self.max_alternatives = max_alternatives
        self.speaker_diarization = speaker_diarization
        self.offline_max_seconds = offline_max_seconds
        self.chunk_seconds = chunk_seconds
        self.timeout = timeout
        self.max_retries = max_retries
        self.retry_backoff = retry_backoff
        self.max_backoff = max_backoff
        self.normalize_timeout = normalize_timeout
        self.max_audio_hours = max_audio_hours

    def __repr__(self) -> str:
        return public_repr(self, uri=self.uri, use_ssl=self.use_ssl, model=self.model,
                           language_code=self.language_code,
                           api_key="***" if self._api_key else None)

    @property
    def model_name(self) -> str:
        """The configured model name, or ``default`` when the server chooses."""
        return self.model or "default"

    @property
    def model_id(self) -> str:
        """E.g. ``riva:default:en-US:diar``; ``:nopunct`` when punctuation is off."""
        return self.join_model_id("riva", self.model_name, self.language_code,
                                  "" if self.punctuation else "nopunct",
                                  "diar" if self.speaker_diarization else "")

    def transcribe(
        self, media_path: Path, *, min_speakers: int = 1, max_speakers: int = 20
    ) -> Transcript:
        """Normalise ``media_path`` and transcribe it on the Riva server.

        ``max_speakers`` is sent as ``max_speaker_count`` (1 turns diarization off);
        ``min_speakers`` is informational, as Riva takes only a maximum.

        Returns:
            The transcript; ``processing_seconds`` covers normalisation and recognition.

        Raises:
            ValueError: ``min_speakers``/``max_speakers`` are not 1 <= min <= max.
            TranscriptionError: The audio cannot be decoded, or Riva rejected it, refused the
                API key, stayed unreachable or failed otherwise; the message names the cause.
        """
        if not 1 <= min_speakers <= max_speakers:
            raise ValueError(
                f"need 1 <= min_speakers <= max_speakers, got {min_speakers}, {max_speakers}"
            )
        media_path = Path(media_path)
        diarize = self.speaker_diarization and max_speakers > 1
        config = self._recognition_config(max_speakers if diarize else 0)
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="watch_pipeline_riva_") as tmp:
            wav_path = Path(tmp) / "audio.wav"
            try:
                duration = normalize_audio(
                    media_path,
                    wav_path,
                    timeout=self.normalize_timeout,
                    max_seconds=hours_to_seconds(self.max_audio_hours),
                )
            except AudioError as exc:
                raise TranscriptionError(str(exc)) from exc
            if duration <= self.offline_max_seconds:
                mode = "offline"
                results = self._with_retries(lambda stub: self._recognize(stub, config, wav_path))
            else:
                mode = "streaming"
                results = self._with_retries(
                    lambda stub: self._stream(stub, config, wav_path, duration)
                )
        segments = _segments(results, diarize=diarize)
        language = next(
            (alt.language_code[0] for alt in results if alt.language_code), self.language_code
        )
        extra = {"model_id": self.model_id, "mode": mode, "uri": self.uri}
        if diarize:
            extra.update(min_speakers=str(min_speakers), max_speakers=str(max_speakers))
        return Transcript.of_segments(segments, language=language, model=self.model_name,
                                      backend="riva", audio_duration=duration,
                                      processing_seconds=time.perf_counter() - started, extra=extra)

    def list_models(self) -> list[str]:
        """Names of the ASR models the server has deployed (``GetRivaSpeechRecognitionConfig``).

        Returns:
            Model names in the server's order.

        Raises:
            TranscriptionError: As for :meth:`transcribe`.
        """

        def call(stub: rasr_grpc.RivaSpeechRecognitionStub) -> list[str]:
            response = stub.GetRivaSpeechRecognitionConfig(
                rasr.RivaSpeechRecognitionConfigRequest(),
                timeout=self.timeout,
                metadata=self._call_metadata(),
            )
            return [config.model_name for config in response.model_config]

        return self._with_retries(call)

    # -- gRPC plumbing -----------------------------------------------------------------------

    def _recognition_config(self, max_speaker_count: int) -> rasr.RecognitionConfig:
        config = rasr.RecognitionConfig(
            encoding=raudio.AudioEncoding.LINEAR_PCM,
            sample_rate_hertz=SAMPLE_RATE,
            audio_channel_count=1,
            language_code=self.language_code,
            max_alternatives=self.max_alternatives,
            enable_automatic_punctuation=self.punctuation,
            enable_word_time_offsets=True,
            model=self.model or "",
        )
        if max_speaker_count:
            config.diarization_config.CopyFrom(
                rasr.SpeakerDiarizationConfig(
                    enable_speaker_diarization=True, max_speaker_count=max_speaker_count
                )
            )
        return config

    def _call_metadata(self) -> tuple[tuple[str, str], ...]:
        if self._api_key is None:
            return self._metadata
        return (("authorization", f"Bearer {self._api_key}"), *self._metadata)

    def _channel(self) -> grpc.Channel:
        options = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
        if not self.use_ssl:
            if self._api_key is not None and not self._warned_in_clear:
                self._warned_in_clear = True
                logger.warning(
                    "Riva %s: the API key is sent in clear (no TLS; allowed by "
                    "allow_insecure_api_key / RIVA_ALLOW_INSECURE_API_KEY)",
                    self.uri,
                )
            return grpc.insecure_channel(self.uri, options=options)
        root = None
        if self.ssl_cert is not None:
            try:
                root = self.ssl_cert.read_bytes()
            except OSError as exc:
                raise TranscriptionError(
                    f"cannot read the Riva TLS certificate {self.ssl_cert}: {exc.strerror}"
                ) from exc
        credentials = grpc.ssl_channel_credentials(root_certificates=root)
        return grpc.secure_channel(self.uri, credentials, options=options)

    def _with_retries(self, call: Callable[[rasr_grpc.RivaSpeechRecognitionStub], _T]) -> _T:
        """Run ``call`` on a fresh channel, retrying transient failures with backoff."""
        delay = self.retry_backoff
        for attempt in range(self.max_retries + 1):
            try:
                with self._channel() as channel:
                    return call(rasr_grpc.RivaSpeechRecognitionStub(channel))
            except grpc.RpcError as exc:
                code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
                details = self._scrub(exc.details() if isinstance(exc, grpc.Call) else str(exc))
                if code in _RETRYABLE and attempt < self.max_retries:
                    logger.warning(
                        "Riva %s: %s (attempt %d of %d); retrying in %.2f s",
                        self.uri, code.name, attempt + 1, self.max_retries + 1, delay,
                    )  # fmt: skip
                    time.sleep(delay)
                    delay = min(delay * 2, self.max_backoff)
                    continue
                raise self._error(code, details, attempts=attempt + 1) from None
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _error(self, code: grpc.StatusCode, details: str, *, attempts: int) -> TranscriptionError:
        tried = f" after {attempts} attempts" if attempts > 1 else ""
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            return TranscriptionError(f"Riva rejected the audio: {details}")
        if code in _AUTH_FAILURES:
            given = "the API key" if self._api_key else "the request without an API key"
            return TranscriptionError(f"Riva refused {given} ({code.name}): {details}")
        if code == grpc.StatusCode.UNAVAILABLE:
            return TranscriptionError(f"Riva server {self.uri} is unreachable{tried}: {details}")
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return TranscriptionError(
                f"Riva server {self.uri} did not answer in time{tried}: {details}"
            )
        return TranscriptionError(f"Riva failed ({code.name}): {details}")

    def _scrub(self, text: str | None) -> str:
        """``text`` with the API key masked, should a server or library ever echo it.

        Keys shorter than 6 characters are not masked: they would mangle ordinary words.
        """
        text = text or "no details"
        if self._api_key and len(self._api_key) >= 6:
            return text.replace(self._api_key, "***")
        return text

    def _recognize(
        self,
        stub: rasr_grpc.RivaSpeechRecognitionStub,
        config: rasr.RecognitionConfig,
        wav_path: Path,
    ) -> list[rasr.SpeechRecognitionAlternative]:
        with wave.open(str(wav_path), "rb") as wav:
            audio = wav.readframes(wav.getnframes())
        response = stub.Recognize(
            rasr.RecognizeRequest(config=config, audio=audio),
            timeout=self.timeout,
            metadata=self._call_metadata(),
        )
        return [result.alternatives[0] for result in response.results if result.alternatives]

    def _stream(
        self,
        stub: rasr_grpc.RivaSpeechRecognitionStub,
        config: rasr.RecognitionConfig,
        wav_path: Path,
        duration: float,
    ) -> list[rasr.SpeechRecognitionAlternative]:
        responses = stub.StreamingRecognize(
            self._stream_requests(config, wav_path),
            timeout=self.timeout + duration,
            metadata=self._call_metadata(),
        )
        return [
            result.alternatives[0]
            for response in responses
            for result in response.results
            if result.is_final and result.alternatives
        ]

    def _stream_requests(
        self, config: rasr.RecognitionConfig, wav_path: Path
    ) -> Iterator[rasr.StreamingRecognizeRequest]:
        """The config message, then the PCM in ``chunk_seconds`` pieces read lazily from disk."""
        yield rasr.StreamingRecognizeRequest(
            streaming_config=rasr.StreamingRecognitionConfig(config=config, interim_results=False)
        )
        frames_per_chunk = max(1, round(self.chunk_seconds * SAMPLE_RATE))
        with wave.open(str(wav_path), "rb") as wav:
            while chunk := wav.readframes(frames_per_chunk):
                yield rasr.StreamingRecognizeRequest(audio_content=chunk)


def _segments(
    alternatives: Iterable[rasr.SpeechRecognitionAlternative], *, diarize: bool
) -> tuple[Segment, ...]:
    """One segment per result, split where the speaker changes; times in seconds."""
    segments: list[Segment] = []
    for alternative in alternatives:
        text = alternative.transcript.strip()
        if not alternative.words:
            if text:
                at = segments[-1].end if segments else 0.0
                segments.append(Segment(start=at, end=at, text=text))
            continue
        runs: list[list[rasr.WordInfo]] = []
        for info in alternative.words:
            if runs and (not diarize or info.speaker_tag == runs[-1][-1].speaker_tag):
                runs[-1].append(info)
            else:
                runs.append([info])
        for run in runs:
            words = tuple(
                Word(start=info.start_time / 1000, end=info.end_time / 1000, text=info.word.strip())
                for info in run
            )
            segments.append(
                Segment(
                    start=words[0].start,
                    end=words[-1].end,
                    # One run is the whole result: keep Riva's punctuated transcript as is.
                    text=text if len(runs) == 1 and text else " ".join(w.text for w in words),
                    speaker=f"Speaker {run[0].speaker_tag + 1}" if diarize else None,
                    words=words,
                )
            )
    return tuple(segments)
