"""In-memory implementations of our seams, for in-process tests that need no server.

Each fake keeps the contract of its ABC (what is called, what may raise) and records what a
test wants to assert: the bytes a source holds, the objects a store holds, the recordings a
transcriber heard, the messages a mailer sent. Real-server tests (fixtures/) stay the reference
for the backends themselves; these stand in where the backend is not what a test is about.
"""

from __future__ import annotations

import io
import math
import struct
import wave
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from watch_pipeline.mail.base import EmailMessage, Mailer, MailError
from watch_pipeline.sources.base import (
    RejectedEntry,
    SourceClient,
    SourceEntry,
    SourceNotFoundError,
    SourceUnreachableError,
)
from watch_pipeline.store import checksum
from watch_pipeline.store.base import ObjectStore, ObjectStoreError, StoredObject, check_key
from watch_pipeline.store.checksum import CRC32C
from watch_pipeline.transcribe.base import Segment, Transcriber, Transcript, TranscriptionError


@dataclass
class FakeFile:
    """One file of a :class:`FakeSource`."""

    data: bytes
    mtime: datetime = field(default_factory=lambda: datetime(2026, 1, 1, tzinfo=UTC))


class FakeSource(SourceClient):
    """A remote-like source whose files live in a dict (``remote_path`` → :class:`FakeFile`).

    It is remote-like: :meth:`local_path` is ``None``, so importers download. ``down = True``
    makes every call fail as an unreachable server would.
    """

    def __init__(self, files: dict[str, bytes] | None = None) -> None:
        self.files: dict[str, FakeFile] = {k: FakeFile(v) for k, v in (files or {}).items()}
        self.down = False
        self.downloads: list[str] = []
        self.uploads: list[str] = []
        self.deleted: list[str] = []

    def _check(self) -> None:
        if self.down:
            raise SourceUnreachableError("fake source is down")

    def _file(self, remote_path: str) -> FakeFile:
        self._check()
        try:
            return self.files[remote_path]
        except KeyError:
            raise SourceNotFoundError(f"{remote_path} does not exist") from None

    def put(self, remote_path: str, data: bytes) -> None:
        """Drop (or replace) a file, as an uploader would."""
        self.files[remote_path] = FakeFile(data, datetime.now(UTC))

    def test_connection(self) -> None:
        """Fails only when the source is down."""
        self._check()

    def list_files(self, *, recursive: bool = True,
                   extensions: tuple[str, ...] = ()) -> Iterator[SourceEntry | RejectedEntry]:
        """Every file, sorted, filtered by extension (and by folder when not recursive)."""
        self._check()
        for path in sorted(self.files):
            if not recursive and "/" in path:
                continue
            if extensions and not path.lower().endswith(extensions):
                continue
            entry = self.files[path]
            yield SourceEntry(path, len(entry.data), entry.mtime)

    def open(self, remote_path: str) -> io.BytesIO:
        """A seekable copy of the file's bytes."""
        return io.BytesIO(self._file(remote_path).data)

    def local_path(self, remote_path: str) -> Path | None:
        """Never: this source is remote-like."""
        return None

    def download(self, remote_path: str, dest: Path, *, expected_size: int | None = None) -> Path:
        """Write the file to ``dest`` (via ``dest.part``, as the real clients do)."""
        data = self._file(remote_path).data
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(dest.name + ".part")
        partial.write_bytes(data)
        partial.replace(dest)
        self.downloads.append(remote_path)
        return dest

    def upload(self, src: Path, remote_path: str) -> None:
        """Store ``src`` under ``remote_path``."""
        self._check()
        self.put(remote_path, src.read_bytes())
        self.uploads.append(remote_path)

    def delete(self, remote_path: str) -> None:
        """Remove ``remote_path``."""
        self._file(remote_path)
        del self.files[remote_path]
        self.deleted.append(remote_path)


class FakeObjectStore(ObjectStore):
    """An object store in a dict; remote-like (:meth:`local_path` is ``None``).

    ``fail_puts = True`` makes every write fail as a full or unreachable store would.
    """

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.content_types: dict[str, str | None] = {}
        self.puts: list[str] = []
        self.fail_puts = False

    def _put(self, key: str, data: bytes, content_type: str | None) -> StoredObject:
        check_key(key)
        if self.fail_puts:
            raise ObjectStoreError(f"cannot write {key}: the fake store refuses writes")
        self.objects[key] = data
        self.content_types[key] = content_type
        self.puts.append(key)
        return StoredObject(key, len(data), checksum.to_hex(checksum.value(data)), CRC32C)

    def put_file(self, key: str, src: Path, *, content_type: str | None = None) -> StoredObject:
        """Store ``src``'s bytes under ``key``."""
        return self._put(key, src.read_bytes(), content_type)

    def put_bytes(self, key: str, data: bytes, *, content_type: str | None = None) -> StoredObject:
        """Store ``data`` under ``key``."""
        return self._put(key, data, content_type)

    def head(self, key: str) -> StoredObject | None:
        """Size and CRC32C of ``key``, or ``None``."""
        data = self.objects.get(check_key(key))
        return None if data is None else StoredObject(
            key, len(data), checksum.to_hex(checksum.value(data)), CRC32C)

    def open(self, key: str) -> io.BytesIO:
        """A seekable copy of the object."""
        try:
            return io.BytesIO(self.objects[check_key(key)])
        except KeyError:
            raise ObjectStoreError(f"no object {key}") from None

    def get_bytes(self, key: str) -> bytes:
        """The object's bytes."""
        return self.open(key).getvalue()

    def delete(self, key: str) -> None:
        """Remove ``key`` if present."""
        self.objects.pop(check_key(key), None)

    def url(self, key: str) -> str:
        """``fake://key``."""
        return f"fake://{check_key(key)}"


class FakeTranscriber(Transcriber):
    """Hears ``text`` in every recording; ``error`` makes it fail with that message."""

    def __init__(self, text: str = "hello from the fake transcriber", *,
                 model: str = "fake:1", error: str | None = None) -> None:
        self.text = text
        self.model = model
        self.error = error
        self.heard: list[bytes] = []

    @property
    def model_id(self) -> str:
        """The fake's model id."""
        return self.model

    def transcribe(self, media_path: Path, *, min_speakers: int = 1,
                   max_speakers: int = 20) -> Transcript:
        """One segment with :attr:`text`, after reading the recording."""
        self.heard.append(Path(media_path).read_bytes())
        if self.error is not None:
            raise TranscriptionError(self.error)
        return Transcript(segments=(Segment(0.0, 1.0, self.text),), text=self.text,
                          language="en", model=self.model, backend="fake", audio_duration=1.0,
                          processing_seconds=0.1)


class FakeMailer(Mailer):
    """Collects sent messages in :attr:`sent`; ``error`` makes every call fail."""

    def __init__(self, *, error: str | None = None) -> None:
        self.sent: list[EmailMessage] = []
        self.error = error

    def send(self, message: EmailMessage) -> None:
        """Record ``message``."""
        if self.error is not None:
            raise MailError(self.error)
        self.sent.append(message)

    def test(self) -> None:
        """Succeeds unless configured to fail."""
        if self.error is not None:
            raise MailError(self.error)

    @property
    def description(self) -> str:
        """``fake://mailer``."""
        return "fake://mailer"



def tone_wav(frequency: int = 440, seconds: float = 1.0, rate: int = 16_000) -> bytes:
    """A real WAV recording (mono, 16 bit) of a sine tone: ffprobe reads it, each frequency
    gives other bytes and so another fingerprint."""
    samples = (int(8000 * math.sin(2 * math.pi * frequency * i / rate))
               for i in range(int(rate * seconds)))
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"".join(struct.pack("<h", s) for s in samples))
    return buffer.getvalue()
