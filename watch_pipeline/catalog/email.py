"""Email configurations and their links to sources, with every rule enforced here.

Like :mod:`watch_pipeline.catalog.sources`: the CLI (and the notify sensor) call these functions;
they validate the whole resulting row, keep ``provider`` immutable, and encrypt the provider's
secret bound to its row (the SMTP or Exchange password, or the Microsoft 365 client secret).

The schema has one port column, ``smtp_port``: Exchange submission is SMTP, so ``exchange``
configurations keep their port there too (default 587 for both).
"""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, joinedload

from watch_pipeline.catalog import crud
from watch_pipeline.catalog import validation as v
from watch_pipeline.catalog.crud import NotFoundError
from watch_pipeline.catalog.models import (
    EmailNotificationConfig,
    EmailProvider,
    WatchSource,
    WatchSourceEmail,
    utcnow,
)
from watch_pipeline.catalog.secrets import SecretBox
from watch_pipeline.catalog.validation import recipients

DEFAULT_PORT = 587
TEST_OK = "ok"
TEST_ERROR = "error"
_MESSAGE_LIMIT = 2000

# Fields that belong to one provider only; the rest apply to every provider.
PROVIDER_FIELDS: dict[str, frozenset[str]] = {
    EmailProvider.SMTP: frozenset({
        "smtp_host", "smtp_port", "smtp_use_tls", "smtp_username", "smtp_insecure_skip_verify",
        "smtp_allow_insecure_auth",
    }),
    EmailProvider.EXCHANGE: frozenset({
        "exchange_server", "exchange_domain", "exchange_username", "smtp_port",
    }),
    EmailProvider.M365: frozenset({"m365_tenant_id", "m365_client_id"}),
}
SECRET_COLUMN: dict[str, str] = {
    EmailProvider.SMTP: "encrypted_smtp_password",
    EmailProvider.EXCHANGE: "encrypted_exchange_password",
    EmailProvider.M365: "encrypted_m365_client_secret",
}
SECRET_NAME: dict[str, str] = {
    EmailProvider.SMTP: "password",
    EmailProvider.EXCHANGE: "password",
    EmailProvider.M365: "client-secret",
}
COMMON_FIELDS = frozenset({"name", "is_enabled", "from_address", "default_recipients"})
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")


_DEFAULTS: dict[str, Any] = {"is_enabled": True, "default_recipients": [], "smtp_use_tls": True,
                             "smtp_insecure_skip_verify": False,
                             "smtp_allow_insecure_auth": False}
KIND = crud.RowKind(
    model=EmailNotificationConfig, noun="email configuration", kind_column="provider",
    common_fields=COMMON_FIELDS, kind_fields=PROVIDER_FIELDS, secret_column=SECRET_COLUMN,
    defaults=_DEFAULTS, owner_word="configurations", children=WatchSourceEmail.email_config_id)


def find_email_config(session: Session, ref: str | int) -> EmailNotificationConfig:
    """Find an email configuration by exact name, else by id (digits).

    Raises:
        NotFoundError: Nothing matches.
    """
    return crud.find(session, KIND, ref)


def list_email_configs(session: Session, *,
                       enabled_only: bool = False) -> list[EmailNotificationConfig]:
    """Every email configuration ordered by id, optionally the enabled ones only."""
    return crud.list_rows(session, KIND, enabled_only=enabled_only)


def _identifier(value: str | None, field: str) -> str:
    text = (value or "").strip()
    if not text:
        raise v.ValidationError(field, "is required for m365 configurations")
    if not _ID.match(text):
        raise v.ValidationError(field, "must be a GUID or a domain name")
    return text


def _normalise_fields(config: EmailNotificationConfig) -> None:
    """The configuration's own rules (the name and the column limits are :mod:`crud`'s)."""
    if not (config.from_address or "").strip():
        raise v.ValidationError("from_address", "is required")
    config.from_address = v.email_address("from_address", config.from_address)
    config.default_recipients = list(recipients(config.default_recipients,
                                                field="default_recipients"))
    if config.provider in (EmailProvider.SMTP, EmailProvider.EXCHANGE):
        port = DEFAULT_PORT if config.smtp_port is None else config.smtp_port
        config.smtp_port = v.int_range("smtp_port", port, 1, 65_535)
    if config.provider == EmailProvider.SMTP:
        config.smtp_host = v.hostname("smtp_host", config.smtp_host)
        config.smtp_username = v.optional_text("smtp_username", config.smtp_username)
    elif config.provider == EmailProvider.EXCHANGE:
        config.exchange_server = v.hostname("exchange_server", config.exchange_server)
        config.exchange_username = v.optional_text("exchange_username", config.exchange_username)
        config.exchange_domain = v.optional_text("exchange_domain", config.exchange_domain)
        if config.exchange_domain and not config.exchange_username:
            raise v.ValidationError("exchange_domain", "needs exchange_username (the login is "
                                    "DOMAIN\\username)")
        config.smtp_use_tls = True  # Exchange submission always uses TLS
    elif config.provider == EmailProvider.M365:
        config.m365_tenant_id = _identifier(config.m365_tenant_id, "m365_tenant_id")
        config.m365_client_id = _identifier(config.m365_client_id, "m365_client_id")


def needs_secret(config: EmailNotificationConfig) -> bool:
    """Whether the configuration cannot work without its secret (a login, or any m365 app)."""
    if config.provider == EmailProvider.SMTP:
        return bool(config.smtp_username)
    if config.provider == EmailProvider.EXCHANGE:
        return bool(config.exchange_username)
    return True


def _require_secret(config: EmailNotificationConfig, secret: str | None) -> None:
    stored = getattr(config, SECRET_COLUMN[config.provider])
    if needs_secret(config) and not (secret or (secret is None and stored)):
        rule = ("is required for m365 configurations" if config.provider == EmailProvider.M365
                else "is required when a username is set")
        raise v.ValidationError(SECRET_NAME[config.provider], rule)


def create_email_config(session: Session, box: SecretBox | None, *, fields: dict[str, Any],
                        secret: str | None = None) -> EmailNotificationConfig:
    """Validate and insert an email configuration.

    Args:
        session: The catalog session (the caller's transaction).
        box: Encrypts ``secret``; may be ``None`` when there is no secret.
        fields: Column values, ``provider`` included.
        secret: The SMTP/Exchange password or the Microsoft 365 client secret.

    Raises:
        ValidationError: A field breaks a rule.
    """
    config = crud.new_row(KIND, fields)
    crud.normalise(session, KIND, config, _normalise_fields)
    _require_secret(config, secret)
    if secret and box is None:
        raise v.ValidationError(SECRET_NAME[config.provider], "no encryption key available")
    session.add(config)
    session.flush()  # the row id is part of the secret's associated data
    if secret:
        crud.set_secret(KIND, box, config, secret, field=SECRET_NAME[config.provider])
        session.flush()
    return config


def update_email_config(session: Session, box: SecretBox | None,
                        config: EmailNotificationConfig, *, fields: dict[str, Any],
                        secret: str | None = None) -> EmailNotificationConfig:
    """Validate and apply changed fields (``provider`` is immutable); ``secret`` replaces it."""
    crud.apply_fields(KIND, config, fields)
    crud.normalise(session, KIND, config, _normalise_fields)
    _require_secret(config, secret)
    crud.set_secret(KIND, box, config, secret, field=SECRET_NAME[config.provider])
    session.flush()
    return config


delete_email_config = KIND.delete
"""Delete a configuration and its source links; returns how many links went with it."""
email_config_secret = KIND.read_secret
"""Decrypt the configuration's secret, ``None`` when unset."""
email_config_to_dict = KIND.to_dict
"""The configuration as JSON-ready data: column names, the secret only as ``has_secret``."""


# -- links to sources ----------------------------------------------------------------------------

def link_source(session: Session, config: EmailNotificationConfig, source: WatchSource, *,
                additional_recipients: list[str] | str | None = None,
                notify_on_success: bool = True,
                notify_on_error: bool = True) -> WatchSourceEmail:
    """Link ``config`` to ``source``, or replace the existing link's settings.

    Args:
        session: The catalog session.
        config: The email configuration.
        source: The watch source whose scans it reports.
        additional_recipients: Addresses added to the configuration's defaults for this source.
        notify_on_success: Mail when a scan imported or stitched something.
        notify_on_error: Mail when a scan or an import failed.

    Raises:
        ValidationError: An additional recipient is not an email address.
    """
    extra = list(recipients(None, additional_recipients, field="additional_recipients"))
    link = session.scalar(sa.select(WatchSourceEmail).where(
        WatchSourceEmail.watch_source_id == source.id,
        WatchSourceEmail.email_config_id == config.id))
    if link is None:
        link = WatchSourceEmail(watch_source_id=source.id, email_config_id=config.id)
        session.add(link)
    link.additional_recipients = extra
    link.notify_on_success = bool(notify_on_success)
    link.notify_on_error = bool(notify_on_error)
    session.flush()
    return link


def unlink_source(session: Session, config: EmailNotificationConfig,
                  source: WatchSource) -> None:
    """Remove the link between ``config`` and ``source``.

    Raises:
        NotFoundError: They are not linked.
    """
    link = session.scalar(sa.select(WatchSourceEmail).where(
        WatchSourceEmail.watch_source_id == source.id,
        WatchSourceEmail.email_config_id == config.id))
    if link is None:
        raise NotFoundError(
            f"email configuration {config.name!r} is not linked to source {source.name!r}")
    session.delete(link)
    session.flush()


def links_for_source(session: Session, source_id: int) -> list[WatchSourceEmail]:
    """The source's links in id order, each with its ``email_config`` loaded."""
    return list(session.scalars(
        sa.select(WatchSourceEmail).options(joinedload(WatchSourceEmail.email_config))
        .where(WatchSourceEmail.watch_source_id == source_id).order_by(WatchSourceEmail.id)))


def links_for_config(session: Session, config_id: int) -> list[WatchSourceEmail]:
    """The configuration's links in id order, each with its ``source`` loaded."""
    return list(session.scalars(
        sa.select(WatchSourceEmail).options(joinedload(WatchSourceEmail.source))
        .where(WatchSourceEmail.email_config_id == config_id).order_by(WatchSourceEmail.id)))


def link_to_dict(link: WatchSourceEmail) -> dict[str, Any]:
    """A link as JSON-ready data (names resolved through the loaded relationships)."""
    return {
        "watch_source_id": link.watch_source_id,
        "source_name": link.source.name,
        "email_config_id": link.email_config_id,
        "email_config_name": link.email_config.name,
        "additional_recipients": list(link.additional_recipients or []),
        "notify_on_success": link.notify_on_success,
        "notify_on_error": link.notify_on_error,
    }


# -- delivery status -------------------------------------------------------------------------

def _clip(message: str) -> str:
    text = message.strip()
    return text if len(text) <= _MESSAGE_LIMIT else text[:_MESSAGE_LIMIT - 1] + "…"


def record_test_result(session: Session, config: EmailNotificationConfig, ok: bool,
                       message: str) -> None:
    """Record the outcome of ``email test``: ``test_status`` ok/error, message, time."""
    config.last_tested_at = utcnow()
    config.test_status = TEST_OK if ok else TEST_ERROR
    config.test_message = _clip(message)
    session.flush()


def record_send_success(session: Session, config: EmailNotificationConfig,
                        message: str) -> None:
    """Record a delivered notification: the configuration works (``test_status`` ok)."""
    record_test_result(session, config, True, message)


def record_send_failure(session: Session, config: EmailNotificationConfig,
                        message: str) -> None:
    """Record a failed notification: ``send_failures`` + 1, ``last_send_error``, status error.

    The counter is incremented in SQL, so concurrent failures are all counted.
    """
    clipped = _clip(message)
    config.send_failures = EmailNotificationConfig.send_failures + 1  # type: ignore[assignment]
    config.last_send_error = clipped
    record_test_result(session, config, False, clipped)
