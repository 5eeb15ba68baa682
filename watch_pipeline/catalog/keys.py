"""The active secret key, checked against the catalog, and key rotation.

Rules (issue 13, finding 3):

* **A key is created only while the catalog holds no secret.** When any stored secret (a source
  password or S3 secret key, an email password or client secret) exists and no key that can
  decrypt it is available, :func:`open_box` raises :class:`SecretKeyError` naming the key id(s)
  the catalog needs (ids are not secret; see :mod:`watch_pipeline.catalog.secrets`). It never
  creates a second key then, so new secrets are never encrypted under a key the old ones do not
  share.
* **Key files must be private:** a key file readable by group or others is refused (not
  tightened), see :func:`watch_pipeline.catalog.secrets.read_key_file`.
* **Rotation never leaves a key on disk with permissions wider than 0600**: every file written
  here is created 0600 (``O_CREAT | O_EXCL``), fsynced and then linked or renamed into place.

The key's location is a :class:`KeyConfig` passed in by the caller (``defs/resources.py`` for
Dagster's resources, the CLI's entry for the CLI); nothing here reads the environment.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.orm import Session

from watch_pipeline.catalog.models import ENCRYPTED_COLUMNS
from watch_pipeline.catalog.secrets import (
    KeyConfig,
    KeySource,
    SecretBox,
    SecretKeyError,
    generate_key,
    load_key,
    read_key_file,
    replace_key_file,
    stored_key_id,
    write_key_file,
)

if TYPE_CHECKING:
    from watch_pipeline.catalog.db import Catalog


def catalog_key_ids(session: Session) -> set[str]:
    """The ids of every key the catalog's stored secrets are encrypted with (empty: none)."""
    ids: set[str] = set()
    for model, columns in ENCRYPTED_COLUMNS.items():
        for column in columns:
            attr = getattr(model, column)
            for stored in session.scalars(sa.select(attr).where(attr.is_not(None)).distinct()):
                kid = stored_key_id(stored)
                if kid:
                    ids.add(kid)
    return ids


def _names(ids: Collection[str]) -> str:
    ordered = sorted(ids)
    return ("key " if len(ordered) == 1 else "keys ") + ", ".join(ordered)


def open_box(config: KeyConfig, *,
             needed_key_ids: Callable[[], Collection[str]] | None = None) -> tuple[
                 SecretBox, KeySource]:
    """The secret box for the configured key, checked against what the catalog needs.

    Args:
        config: Where the key is (a value, or a key file).
        needed_key_ids: Returns the key ids of the secrets the caller will decrypt, or of every
            secret in the catalog (:func:`catalog_key_ids`); called at most once. A missing key
            file is created only when this returns an empty collection, so ``None`` (the caller
            cannot tell) never creates one.

    Raises:
        SecretKeyError: No usable key. When secrets exist, the message names the key id(s)
            they need and where the key was looked for; never the key itself.
    """
    cache: list[Collection[str]] = []

    def needed() -> Collection[str] | None:
        if needed_key_ids is None:
            return None
        if not cache:
            cache.append(set(needed_key_ids()))
        return cache[0]

    no_key = not (config.secret_key or "").strip() and (
        config.key_file is None or not config.key_file.exists())
    if no_key:
        ids = needed()
        if ids:
            looked = (f"key file {config.key_file} does not exist" if config.key_file
                      else "neither WATCH_SECRET_KEY_FILE nor DAGSTER_HOME is set")
            raise SecretKeyError(
                f"the catalog holds secrets encrypted with {_names(ids)}, but no key is "
                f"available: WATCH_SECRET_KEY is not set and {looked}. Restore that key "
                "(WATCH_SECRET_KEY or the key file); a new key is never created while the "
                "catalog holds secrets")
        key, source = load_key(config, create=ids is not None)
    else:
        key, source = load_key(config, create=False)
    box = SecretBox(key)
    ids = needed()
    if ids and box.key_id not in ids:
        raise SecretKeyError(
            f"the catalog's secrets are encrypted with {_names(ids)}, but the active key "
            f"({source.describe()}) is key {box.key_id}: set WATCH_SECRET_KEY or the key file "
            "to the key the catalog needs")
    return box, source


def active_box(config: KeyConfig, *, catalog: Catalog | None = None,
               create: bool = True) -> tuple[SecretBox, KeySource]:
    """The secret box for the active key.

    Args:
        config: Where the key is (``KeyConfig.from_environ`` of the caller's environment).
        catalog: When given, the key is checked against the catalog's stored secrets
            (:func:`open_box`): a key is created only while the catalog holds none, and a key
            that cannot decrypt them is refused with the id(s) they need.
        create: Without ``catalog``: create a missing key file (the embedded default's first
            use). Callers that can should pass ``catalog`` instead.

    Raises:
        SecretKeyError: No usable key (see :func:`open_box`).
    """
    if catalog is not None:
        def needed() -> set[str]:
            with catalog.session() as session:
                return catalog_key_ids(session)

        return open_box(config, needed_key_ids=needed)
    key, source = load_key(config, create=create)
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
    """Read the new key from ``path``, creating the file (mode 0600) with a fresh key if absent.

    Raises:
        SecretKeyError: An existing file is not a key or is readable by group or others.
    """
    if not path.exists():
        try:
            write_key_file(path, generate_key())
        except FileExistsError:
            pass
    return read_key_file(path)


def install_key_file(new_key_file: Path, active: KeySource) -> Path | None:
    """After a committed rotation, make ``new_key_file`` the default key file.

    Only when the active key came from a key file; the old key is kept beside it as
    ``<name>.old-<key id>``. Every file written is 0600 from its creation: the backup is a hard
    link to the old file (or a private copy where links are not supported), and the new key is
    written to a private temporary file and renamed over the old name. Returns the backup path,
    or ``None`` when nothing was swapped.
    """
    if active.kind != "file" or active.path is None:
        return None
    old_key = read_key_file(active.path)
    backup = active.path.with_name(f"{active.path.name}.old-{SecretBox(old_key).key_id}")
    if not backup.exists():
        try:
            os.link(active.path, backup)
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links
            write_key_file(backup, base64_text(old_key))
    new_key = read_key_file(new_key_file)
    replace_key_file(active.path, base64_text(new_key))
    return backup


def base64_text(key: bytes) -> str:
    """``key`` as the base64 text stored in key files."""
    return base64.b64encode(key).decode("ascii")


__all__ = ["KeyConfig", "RotationResult", "SecretKeyError", "active_box", "catalog_key_ids",
           "install_key_file", "open_box", "prepare_new_key",
           "rotate_values"]
