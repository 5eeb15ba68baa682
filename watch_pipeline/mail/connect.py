"""Build a :class:`Mailer` for a catalog ``email_notification_config`` row.

The notify sensor (through ``MailerResource``) and the CLI's ``email test`` build mailers the
same way here; the secret is decrypted only at this point and only kept by the mailer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from watch_pipeline.catalog.email import SECRET_COLUMN, email_config_secret
from watch_pipeline.catalog.models import EmailNotificationConfig, EmailProvider
from watch_pipeline.catalog.secrets import SecretBox
from watch_pipeline.mail.base import Mailer, MailError
from watch_pipeline.mail.graph import DEFAULT_AUTHORITY_BASE, DEFAULT_GRAPH_BASE, GraphMailer
from watch_pipeline.mail.smtp import DEFAULT_SUBMISSION_PORT, ExchangeMailer, SmtpMailer


@dataclass(frozen=True)
class MailSettings:
    """Process-wide delivery settings (not per configuration).

    Attributes:
        graph_base: Microsoft Graph root, e.g. ``https://graph.microsoft.com/v1.0``.
        authority_base: Microsoft 365 login root, without the tenant.
        smtp_ca_file: A PEM file of extra CAs to trust for SMTP/Exchange TLS (an internal CA).
        timeout: Seconds per connection or request.
        max_retries: Graph retries after 429, 5xx or a dropped connection.
    """

    graph_base: str = DEFAULT_GRAPH_BASE
    authority_base: str = DEFAULT_AUTHORITY_BASE
    smtp_ca_file: str | None = None
    timeout: float = 30
    max_retries: int = 3


def mailer_for_config(config: EmailNotificationConfig, *, box: Callable[[], SecretBox],
                      settings: MailSettings | None = None) -> Mailer:
    """A mailer for ``config`` (no connection is made here).

    Args:
        config: The catalog row.
        box: Returns the secret box; called only when the row holds a secret.
        settings: Base URLs, CA file and timeouts; defaults are Microsoft's public cloud.

    Raises:
        MailError: The row cannot be used (e.g. an m365 configuration without its secret).
        SecretKeyError: The stored secret does not decrypt with the active key.
    """
    settings = settings or MailSettings()
    column = SECRET_COLUMN.get(config.provider)
    if column is None:
        raise MailError(f"email configuration {config.name!r} has unknown provider "
                        f"{config.provider!r}")
    secret = email_config_secret(box(), config) if getattr(config, column) else None
    if config.provider == EmailProvider.SMTP:
        return SmtpMailer(config.smtp_host or "", config.smtp_port or DEFAULT_SUBMISSION_PORT,
                          use_tls=config.smtp_use_tls, username=config.smtp_username,
                          password=secret, timeout=settings.timeout,
                          insecure_skip_verify=config.smtp_insecure_skip_verify,
                          ca_file=settings.smtp_ca_file,
                          allow_insecure_auth=bool(config.smtp_allow_insecure_auth))
    if config.provider == EmailProvider.EXCHANGE:
        return ExchangeMailer(config.exchange_server or "",
                              config.smtp_port or DEFAULT_SUBMISSION_PORT,
                              username=config.exchange_username, password=secret,
                              domain=config.exchange_domain, timeout=settings.timeout,
                              ca_file=settings.smtp_ca_file)
    if not secret:
        raise MailError(f"email configuration {config.name!r} has no client secret")
    return GraphMailer(config.m365_tenant_id or "", config.m365_client_id or "", secret,
                       config.from_address, authority_base=settings.authority_base,
                       graph_base=settings.graph_base, timeout=settings.timeout,
                       max_retries=settings.max_retries)
