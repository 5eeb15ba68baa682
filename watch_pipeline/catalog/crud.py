"""The rules every operator-configured row shares: watch sources and email configurations.

Both tables hold a named row of one fixed *kind* (``source_type`` / ``provider``) whose fields
depend on the kind, with at most one encrypted secret per kind. :class:`RowKind` describes one
such table; the functions here find, list, build, change, check and show its rows, so
:mod:`watch_pipeline.catalog.sources` and :mod:`watch_pipeline.catalog.email` only state their
own field rules.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from watch_pipeline.catalog import validation as v
from watch_pipeline.catalog.models import Base
from watch_pipeline.catalog.secrets import SecretBox


class NotFoundError(LookupError):
    """No row matches the given name or id."""


@dataclass(frozen=True)
class RowKind:
    """How the rows of one configuration table are checked, stored and shown.

    Attributes:
        model: The ORM class (it has ``id``, ``name``, ``is_enabled`` and the kind column).
        noun: What a row is called in messages, e.g. ``"watch source"``.
        kind_column: The immutable column naming the row's kind.
        common_fields: Fields every kind accepts.
        kind_fields: Fields only one kind accepts, per kind.
        secret_column: The encrypted column of each kind that has a secret.
        defaults: Values a new row takes for the fields it is not given.
        owner_word: How a kind is named in "only applies to ... {owner_word}".
        children: The foreign-key column of the rows deleted with a row (counted on delete).
    """

    model: type[Base]
    noun: str
    kind_column: str
    common_fields: frozenset[str]
    kind_fields: Mapping[str, frozenset[str]]
    secret_column: Mapping[str, str]
    defaults: Mapping[str, Any]
    owner_word: str
    children: Any

    def kind_of(self, row: Any) -> str:
        """The row's kind (``source_type`` or ``provider``)."""
        return getattr(row, self.kind_column)

    def allowed(self, kind: str) -> frozenset[str]:
        """The fields a row of ``kind`` accepts (its kind column aside)."""
        return self.common_fields | self.kind_fields[kind]

    def delete(self, session: Session, row: Any) -> int:
        """Delete ``row`` and its children; returns how many children went with it."""
        return delete(session, row, self.children)

    def read_secret(self, box: SecretBox, row: Any) -> str | None:
        """Decrypt the row's secret, ``None`` when unset."""
        return read_secret(self, box, row)

    def to_dict(self, row: Any) -> dict[str, Any]:
        """The row as JSON-ready data: column names, the secret only as ``has_secret``."""
        return to_dict(self, row)


def find(session: Session, kind: RowKind, ref: str | int) -> Any:
    """Find a row by exact name, else by id (digits).

    Raises:
        NotFoundError: Nothing matches.
    """
    text = str(ref).strip()
    model: Any = kind.model
    row = session.scalar(sa.select(model).where(model.name == text))
    if row is None and text.isdigit():
        row = session.get(model, int(text))
    if row is None:
        raise NotFoundError(f"no {kind.noun} named or numbered {text!r}")
    return row


def list_rows(session: Session, kind: RowKind, *, enabled_only: bool = False,
              of_kind: str | None = None) -> list[Any]:
    """Every row ordered by id, optionally the enabled ones or those of one kind only."""
    model: Any = kind.model
    query = sa.select(model).order_by(model.id)
    if of_kind:
        query = query.where(getattr(model, kind.kind_column) == of_kind)
    if enabled_only:
        query = query.where(model.is_enabled.is_(True))
    return list(session.scalars(query))


def check_fields(kind: RowKind, row_kind: str, fields: Mapping[str, Any]) -> None:
    """Refuse a field that belongs to another kind, or to no kind at all."""
    allowed = kind.allowed(row_kind)
    for key in fields:
        if key == kind.kind_column or key in allowed:
            continue
        owners = [str(k) for k, names in kind.kind_fields.items() if key in names]
        rule = (f"only applies to {' and '.join(owners)} {kind.owner_word}, not {row_kind}"
                if owners else f"is not {_article(kind.noun)} {kind.noun} field")
        raise v.ValidationError(key, rule)


def _article(noun: str) -> str:
    return "an" if noun[:1] in "aeiou" else "a"


def new_row(kind: RowKind, fields: Mapping[str, Any]) -> Any:
    """An unsaved row of the kind named in ``fields``, with defaults for the rest.

    Raises:
        ValidationError: The kind is missing or unknown, or a field belongs to another kind.
    """
    row_kind = fields.get(kind.kind_column)
    if row_kind not in kind.kind_fields:
        choices = ", ".join(str(k) for k in kind.kind_fields)
        raise v.ValidationError(kind.kind_column, f"must be one of {choices}")
    check_fields(kind, row_kind, fields)
    # A default of another kind's field is dropped; one of no kind's (a counter) is kept.
    other_kinds = frozenset().union(*kind.kind_fields.values()) - kind.kind_fields[row_kind]
    keep = (kind.allowed(row_kind) | {kind.kind_column} | set(kind.defaults)) - other_kinds
    values = {k: val for k, val in {**kind.defaults, **fields}.items() if k in keep}
    return kind.model(**values)


def apply_fields(kind: RowKind, row: Any, fields: Mapping[str, Any]) -> None:
    """Set changed fields on ``row``; its kind is immutable.

    Raises:
        ValidationError: The kind would change, or a field belongs to another kind.
    """
    current = kind.kind_of(row)
    if kind.kind_column in fields and fields[kind.kind_column] != current:
        raise v.ValidationError(kind.kind_column, "cannot be changed after creation")
    check_fields(kind, current, fields)
    for key, value in fields.items():
        setattr(row, key, value)


def normalise(session: Session, kind: RowKind, row: Any, rules: Callable[[Any], None]) -> None:
    """Apply the table's own ``rules`` to the whole row, then the rules every row shares.

    Shared rules: the name is unique, and every text column holds one printable line that fits
    the column (so nothing fails later in the database or garbles a terminal).
    """
    with session.no_autoflush:
        row.name = v.name(row.name)
        model: Any = kind.model
        clash = session.scalar(sa.select(model.id).where(
            model.name == row.name, model.id != (row.id or -1)))
        if clash is not None:
            raise v.ValidationError("name", f"must be unique; {kind.noun} {clash} has it")
        rules(row)
        fits_columns(row)


def fits_columns(row: Any) -> None:
    """Every string column of ``row`` holds control-character-free text no longer than it.

    Raises:
        ValidationError: Naming the first column at fault.
    """
    for column in row.__table__.columns:
        length = getattr(column.type, "length", None)
        value = getattr(row, column.key)
        if length is None or not isinstance(value, str):
            continue
        v.printable_text(column.key, value)
        if len(value) > length:
            raise v.ValidationError(column.key, f"must be at most {length} characters "
                                    f"(got {len(value)})")


def set_secret(kind: RowKind, box: SecretBox | None, row: Any, secret: str | None, *,
               field: str = "secret") -> None:
    """Encrypt ``secret`` into the row's secret column, bound to the row; ``""`` clears it.

    ``None`` leaves the stored secret alone. The row must have its id (flush first).

    Raises:
        ValidationError: The row's kind takes no secret, or there is no key to encrypt with.
    """
    if secret is None:
        return
    row_kind = kind.kind_of(row)
    column = kind.secret_column.get(row_kind)
    if column is None:
        raise v.ValidationError(field, f"{row_kind} {kind.owner_word} take no secret")
    if secret and box is None:
        raise v.ValidationError(field, "no encryption key available")
    value = box.encrypt(secret, table=row.__tablename__, row_id=row.id,
                        column=column) if secret and box is not None else None
    setattr(row, column, value)


def stored_secret(kind: RowKind, row: Any) -> str | None:
    """The row's ciphertext, ``None`` when its kind has no secret or none is stored."""
    column = kind.secret_column.get(kind.kind_of(row))
    return (getattr(row, column) or None) if column else None


def read_secret(kind: RowKind, box: SecretBox, row: Any) -> str | None:
    """Decrypt the row's secret, ``None`` when unset."""
    stored = stored_secret(kind, row)
    if stored is None:
        return None
    return box.decrypt(stored, table=row.__tablename__, row_id=row.id,
                       column=kind.secret_column[kind.kind_of(row)])


def delete(session: Session, row: Any, children: Any) -> int:
    """Delete ``row``; returns how many rows of ``children`` (a foreign-key column) went too."""
    count = session.scalar(sa.select(sa.func.count()).where(children == row.id)) or 0
    session.delete(row)
    session.flush()
    return count


def to_dict(kind: RowKind, row: Any) -> dict[str, Any]:
    """The row as JSON-ready data: column names, the secret only as ``has_secret``."""
    data: dict[str, Any] = {}
    for column in row.__table__.columns:
        if column.name.startswith("encrypted_"):
            continue
        value = getattr(row, column.key)
        data[column.name] = value.isoformat() if hasattr(value, "isoformat") else value
    data["has_secret"] = stored_secret(kind, row) is not None
    return data
