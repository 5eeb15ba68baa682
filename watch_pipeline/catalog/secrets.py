"""Encryption of secrets stored in the catalog (AES-256-GCM).

Each value is encrypted with a fresh random 96-bit nonce. The associated data binds the
ciphertext to ``table:row_id:column``, so a value copied into another row or column fails to
decrypt instead of yielding someone else's password. The stored form is::

    v1:<key id>:<base64(nonce || ciphertext || tag)>

The key id (first 8 hex digits of the SHA-256 of the key) lets a wrong key be reported as such.
The key comes from ``WATCH_SECRET_KEY`` (base64 of 32 bytes) or, for the embedded default, from a
key file created with mode 0600 under ``$DAGSTER_HOME`` on first use. No message in this module
ever contains a plaintext or a key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets as _random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_FILENAME = "watch_pipeline.key"
_VERSION = "v1"
_NONCE_BYTES = 12


class SecretKeyError(Exception):
    """The encryption key is missing, malformed, or does not match the stored values."""


class SecretDecryptError(SecretKeyError):
    """A stored value could not be decrypted (wrong key, tampered, or moved to another row)."""


def generate_key() -> str:
    """A new random key as base64 text (the format of ``WATCH_SECRET_KEY`` and key files)."""
    return base64.b64encode(_random.token_bytes(32)).decode("ascii")


def parse_key(text: str, *, origin: str) -> bytes:
    """Decode a base64 key and check it is 32 bytes.

    Args:
        text: The base64 text.
        origin: Where it came from, for the error message (never the key itself).
    """
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SecretKeyError(f"{origin} is not valid base64") from None
    if len(raw) != 32:
        raise SecretKeyError(f"{origin} must decode to 32 bytes (AES-256), got {len(raw)}")
    return raw


def read_key_file(path: Path) -> bytes:
    """Read a key file written by :func:`write_key_file` or by hand (base64 text)."""
    try:
        text = path.read_text(encoding="ascii")
    except OSError as exc:
        raise SecretKeyError(f"cannot read key file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise SecretKeyError(f"key file {path} is not base64 text") from None
    return parse_key(text, origin=f"key file {path}")


def write_key_file(path: Path, key_b64: str) -> None:
    """Create ``path`` holding ``key_b64`` with mode 0600; never overwrite an existing file.

    The key is written to a private temporary file first and then linked into place, so a
    process racing to read ``path`` (several containers starting together) sees either no file or
    the whole key, never an empty one.

    Raises:
        FileExistsError: ``path`` exists already (another process created it first).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{_random.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(key_b64 + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.link(tmp, path)  # atomic, and fails when path exists
    finally:
        tmp.unlink(missing_ok=True)


def key_id(key: bytes) -> str:
    """A short, non-secret identifier of ``key``."""
    return hashlib.sha256(key).hexdigest()[:8]


@dataclass(frozen=True)
class KeySource:
    """Where the active key was found: ``env`` (WATCH_SECRET_KEY) or ``file`` (with its path)."""

    kind: str
    path: Path | None = None


def load_key(environ: Mapping[str, str] | None = None, *, create: bool = True) -> tuple[
    bytes, KeySource
]:
    """Find the active key: ``WATCH_SECRET_KEY``, ``WATCH_SECRET_KEY_FILE`` or the default file.

    The environment's key wins; else the file named by ``WATCH_SECRET_KEY_FILE`` (the production
    stack mounts one); else ``$DAGSTER_HOME/watch_pipeline.key`` (the embedded default).

    Args:
        environ: Environment to read (defaults to ``os.environ``).
        create: Create the key file when it does not exist yet (the embedded default).
    """
    env = os.environ if environ is None else environ
    value = env.get("WATCH_SECRET_KEY", "")
    if value.strip():
        return parse_key(value, origin="WATCH_SECRET_KEY"), KeySource("env")
    named = env.get("WATCH_SECRET_KEY_FILE", "").strip()
    home = env.get("DAGSTER_HOME", "").strip()
    if named:
        path = Path(named).expanduser()
    elif not home:
        raise SecretKeyError(
            "no secret key: set WATCH_SECRET_KEY (base64 of 32 bytes) or DAGSTER_HOME "
            f"(the embedded default keeps its key in $DAGSTER_HOME/{KEY_FILENAME})"
        )
    else:
        path = Path(home).expanduser() / KEY_FILENAME
    if not path.exists():
        if not create:
            raise SecretKeyError(f"key file {path} does not exist")
        try:
            write_key_file(path, generate_key())
        except FileExistsError:  # another process created it first
            pass
    return read_key_file(path), KeySource("file", path)


class SecretBox:
    """Encrypts and decrypts catalog secrets with one AES-256 key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise SecretKeyError("the secret key must be 32 bytes")
        self._aead = AESGCM(key)
        self.key_id = key_id(key)

    @staticmethod
    def _aad(table: str, row_id: int, column: str) -> bytes:
        return f"{table}:{row_id}:{column}".encode()

    def encrypt(self, plaintext: str, *, table: str, row_id: int, column: str) -> str:
        """Encrypt ``plaintext`` bound to (table, row id, column)."""
        nonce = _random.token_bytes(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext.encode("utf-8"),
                                    self._aad(table, row_id, column))
        blob = base64.b64encode(nonce + sealed).decode("ascii")
        return f"{_VERSION}:{self.key_id}:{blob}"

    def decrypt(self, stored: str, *, table: str, row_id: int, column: str) -> str:
        """Decrypt a value produced by :meth:`encrypt` for the same (table, row id, column).

        Raises:
            SecretDecryptError: Naming the row and column, never the value.
        """
        where = f"{table} row {row_id} column {column}"
        try:
            version, stored_kid, blob = stored.split(":", 2)
        except ValueError:
            raise SecretDecryptError(f"{where}: not an encrypted value") from None
        if version != _VERSION:
            raise SecretDecryptError(f"{where}: unknown format {version!r}")
        if stored_kid != self.key_id:
            raise SecretDecryptError(
                f"{where}: encrypted with key {stored_kid}, but the active key is {self.key_id} "
                "(wrong WATCH_SECRET_KEY or key file?)"
            )
        try:
            raw = base64.b64decode(blob, validate=True)
        except (binascii.Error, ValueError):
            raise SecretDecryptError(f"{where}: stored value is corrupt") from None
        nonce, sealed = raw[:_NONCE_BYTES], raw[_NONCE_BYTES:]
        try:
            plain = self._aead.decrypt(nonce, sealed, self._aad(table, row_id, column))
        except InvalidTag:
            raise SecretDecryptError(
                f"{where}: authentication failed (tampered, or copied from another row)"
            ) from None
        return plain.decode("utf-8")


def stored_key_id(stored: str | None) -> str | None:
    """The key id recorded in a stored value, or ``None``."""
    if not stored:
        return None
    parts = stored.split(":", 2)
    return parts[1] if len(parts) == 3 else None
