"""The active secret key and key rotation across every encrypted catalog column."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.orm import Session

from watch_pipeline.catalog.models import ENCRYPTED_COLUMNS
from watch_pipeline.catalog.secrets import (
    KeySource,
    SecretBox,
    SecretKeyError,
    generate_key,
    load_key,
    read_key_file,
    write_key_file,
)


def active_box(*, create: bool = True) -> tuple[SecretBox, KeySource]:
    """The secret box for the active key (``WATCH_SECRET_KEY`` or the default key file)."""
    key, source = load_key(create=create)
    return SecretBox(key), source


@dataclass(frozen=True)
class RotationResult:
    """What ``secrets rotate`` did."""

    values: int
    old_key_id: str
    new_key_id: str


def rotate_values(session: Session, old: SecretBox, new: SecretBox) -> int:
    """Re-encrypt every stored secret from ``old`` to ``new`` inside the caller's transaction.

    Every value is decrypted first; one failure raises before anything is written, so a wrong
    active key never leaves the catalog half rotated.
    """
    updates: list[tuple[object, str, str]] = []
    for model, columns in ENCRYPTED_COLUMNS.items():
        table = model.__tablename__
        for row in session.scalars(sa.select(model)):
            for column in columns:
                stored = getattr(row, column)
                if not stored:
                    continue
                plain = old.decrypt(stored, table=table, row_id=row.id, column=column)
                updates.append((row, column,
                                new.encrypt(plain, table=table, row_id=row.id, column=column)))
    for row, column, value in updates:
        setattr(row, column, value)
    session.flush()
    return len(updates)


def prepare_new_key(path: Path) -> bytes:
    """Read the new key from ``path``, creating the file (mode 0600) with a fresh key if absent."""
    if not path.exists():
        write_key_file(path, generate_key())
    return read_key_file(path)


def install_key_file(new_key_file: Path, active: KeySource) -> Path | None:
    """After a committed rotation, make ``new_key_file`` the default key file.

    Only when the active key came from the default key file; the old file is kept beside it as
    ``<name>.old-<key id>``. Returns the backup path, or ``None`` when nothing was swapped.
    """
    if active.kind != "file" or active.path is None:
        return None
    old_kid = SecretBox(read_key_file(active.path)).key_id
    backup = active.path.with_name(f"{active.path.name}.old-{old_kid}")
    shutil.copy2(active.path, backup)
    os.chmod(backup, 0o600)
    tmp = active.path.with_name(active.path.name + ".tmp")
    shutil.copyfile(new_key_file, tmp)
    os.chmod(tmp, 0o600)
    os.replace(tmp, active.path)
    return backup


__all__ = ["RotationResult", "SecretKeyError", "active_box", "install_key_file",
           "prepare_new_key", "rotate_values"]
