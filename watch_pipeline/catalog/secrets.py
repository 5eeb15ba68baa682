"""Encryption of secrets stored in the catalog (AES-256-GCM), and the key files.

Each value is encrypted with a fresh random 96-bit nonce. The associated data binds the
ciphertext to ``table:row_id:column``, so a value copied into another row or column fails to
decrypt instead of yielding someone else's password. The stored form is::

    v1:<key id>:<base64(nonce || ciphertext || tag)>

The key id (first 8 hex digits of the SHA-256 of the key) is not secret: it lets a wrong or
missing key be reported by name ("the catalog needs key 1a2b3c4d").

Where the key comes from is a :class:`KeyConfig` handed in by the caller (``defs/resources.py``
for Dagster, the CLI's entry for the CLI): a key value (``WATCH_SECRET_KEY``, base64 of 32 bytes)
or a key file (``WATCH_SECRET_KEY_FILE``, else ``$DAGSTER_HOME/watch_pipeline.key``). This module
never reads the environment itself; :meth:`KeyConfig.from_environ` maps a mapping the caller
passes.

Key files:

* are created with mode 0600 from the first byte (``os.open(..., O_CREAT | O_EXCL, 0o600)``),
  fsynced, and only then linked or renamed into place, so no key is ever on disk with wider
  permissions, and a reader sees either no file or the whole key;
* are **refused** when their mode gives group or others any access (``chmod 600`` fixes it).
  A wide key file is not tightened silently: somebody may already have copied it, and the
  operator should know (as ``ssh`` does with private keys).

No message in this module ever contains a plaintext or a key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets as _random
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from watch_pipeline.catalog.files import fsync_dir

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


def check_key_file_mode(path: Path, mode: int) -> None:
    """Refuse a key file whose permission bits give group or others any access.

    Raises:
        SecretKeyError: Naming the file, its mode and the fix (never the key).
    """
    if stat.S_IMODE(mode) & 0o077:
        raise SecretKeyError(
            f"key file {path} has mode {stat.S_IMODE(mode):04o}: group or others may read it; "
            f"a key file must be private to its owner (run: chmod 600 {path})")


def read_key_file(path: Path) -> bytes:
    """Read a key file written by :func:`write_key_file` or by hand (base64 text).

    The mode is checked on the opened file (``fstat``), so a file swapped in between the check
    and the read cannot slip through.

    Raises:
        SecretKeyError: The file is missing, unreadable, not a key, or readable by others.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise SecretKeyError(f"cannot read key file {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        check_key_file_mode(path, os.fstat(fh.fileno()).st_mode)
        try:
            text = fh.read(4096).decode("ascii")
        except OSError as exc:
            raise SecretKeyError(f"cannot read key file {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise SecretKeyError(f"key file {path} is not base64 text") from None
    return parse_key(text, origin=f"key file {path}")


def _private_temp(path: Path, data: bytes) -> Path:
    """Write ``data`` to a new temporary file beside ``path``, mode 0600 from creation, fsynced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{_random.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def write_key_file(path: Path, key_b64: str) -> None:
    """Create ``path`` holding ``key_b64`` with mode 0600; never overwrite an existing file.

    The key is written to a private temporary file first and then linked into place, so a
    process racing to read ``path`` (several containers starting together) sees either no file or
    the whole key, never an empty one.

    Raises:
        FileExistsError: ``path`` exists already (another process created it first).
    """
    tmp = _private_temp(path, (key_b64 + "\n").encode("ascii"))
    try:
        os.link(tmp, path)  # atomic, and fails when path exists
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def replace_key_file(path: Path, key_b64: str) -> None:
    """Atomically replace (or create) ``path`` with ``key_b64``; mode 0600 at every moment.

    The new content is written to a private temporary file (created 0600, fsynced) and renamed
    over ``path``, so ``path`` always holds either the old key or the whole new one.
    """
    tmp = _private_temp(path, (key_b64.strip() + "\n").encode("ascii"))
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def key_id(key: bytes) -> str:
    """A short, non-secret identifier of ``key``."""
    return hashlib.sha256(key).hexdigest()[:8]


@dataclass(frozen=True)
class KeySource:
    """Where the active key was found: ``env`` (a key value) or ``file`` (with its path)."""

    kind: str
    path: Path | None = None

    def describe(self) -> str:
        """``WATCH_SECRET_KEY`` or ``key file <path>``, for messages."""
        return "WATCH_SECRET_KEY" if self.kind == "env" else f"key file {self.path}"


@dataclass(frozen=True)
class KeyConfig:
    """Where to find the secret key, as handed in by the caller.

    Attributes:
        secret_key: The key itself (base64 of 32 bytes), e.g. ``WATCH_SECRET_KEY``; wins when
            set. Never shown in ``repr``.
        key_file: The key file otherwise (``WATCH_SECRET_KEY_FILE`` or
            ``$DAGSTER_HOME/watch_pipeline.key``).
    """

    secret_key: str | None = field(default=None, repr=False)
    key_file: Path | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> KeyConfig:
        """Map ``WATCH_SECRET_KEY``, ``WATCH_SECRET_KEY_FILE`` and ``DAGSTER_HOME`` of ``environ``.

        The caller passes the environment (``os.environ`` at its entry); nothing here reads it.
        """
        value = environ.get("WATCH_SECRET_KEY", "").strip() or None
        named = environ.get("WATCH_SECRET_KEY_FILE", "").strip()
        home = environ.get("DAGSTER_HOME", "").strip()
        if named:
            path: Path | None = Path(named).expanduser()
        elif home:
            path = Path(home).expanduser() / KEY_FILENAME
        else:
            path = None
        return cls(secret_key=value, key_file=path)


def load_key(config: KeyConfig, *, create: bool = True) -> tuple[bytes, KeySource]:
    """Find the active key: ``config.secret_key``, else the key file (created when allowed).

    Args:
        config: Where the key is.
        create: Create the key file (mode 0600) when it does not exist yet. Callers decide:
            :func:`watch_pipeline.catalog.keys.open_box` allows it only while the catalog holds
            no secret.

    Raises:
        SecretKeyError: No key configured, the file is missing (and ``create`` is off),
            unreadable, malformed, or readable by group or others.
    """
    if config.secret_key and config.secret_key.strip():
        return parse_key(config.secret_key, origin="WATCH_SECRET_KEY"), KeySource("env")
    path = config.key_file
    if path is None:
        raise SecretKeyError(
            "no secret key: set WATCH_SECRET_KEY (base64 of 32 bytes), WATCH_SECRET_KEY_FILE or "
            f"DAGSTER_HOME (the embedded default keeps its key in $DAGSTER_HOME/{KEY_FILENAME})"
        )
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


def public_repr(obj: object, **fields: object) -> str:
    """``Type(name=value, ...)`` showing only ``fields``, for an object that holds a secret.

    Spelled out field by field so that no default repr can ever show the secret.
    """
    shown = ", ".join(f"{name}={value!r}" for name, value in fields.items())
    return f"{type(obj).__name__}({shown})"
