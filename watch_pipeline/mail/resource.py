"""Email delivery as a Dagster resource: a thin factory over :mod:`watch_pipeline.mail.connect`."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from watch_pipeline.catalog.keys import active_box
from watch_pipeline.catalog.models import EmailNotificationConfig
from watch_pipeline.catalog.secrets import SecretBox
from watch_pipeline.mail.base import Mailer
from watch_pipeline.mail.connect import MailSettings, mailer_for_config
from watch_pipeline.mail.graph import DEFAULT_AUTHORITY_BASE, DEFAULT_GRAPH_BASE


class MailerResource(dg.ConfigurableResource):
    """Builds the mailer (SMTP, Exchange or Microsoft 365) for a catalog email configuration."""

    graph_base: str = Field(default=DEFAULT_GRAPH_BASE,
                            description="Microsoft Graph root including the version.")
    authority_base: str = Field(default=DEFAULT_AUTHORITY_BASE,
                                description="Microsoft 365 login root, without the tenant.")
    smtp_ca_file: str | None = Field(
        default=None, description="PEM file of extra CAs trusted for SMTP/Exchange TLS.")
    timeout_seconds: float = Field(default=30, description="Seconds per connection or request.")
    max_retries: int = Field(default=3, description="Graph retries after 429/5xx.")

    def settings(self) -> MailSettings:
        """This resource's process-wide delivery settings."""
        return MailSettings(graph_base=self.graph_base, authority_base=self.authority_base,
                            smtp_ca_file=self.smtp_ca_file, timeout=self.timeout_seconds,
                            max_retries=self.max_retries)

    def mailer_for(self, config: EmailNotificationConfig, box: SecretBox | None = None) -> Mailer:
        """An unconnected mailer for ``config``; its secret is decrypted only here.

        Args:
            config: The catalog row.
            box: The secret box; ``None`` uses the active key (``WATCH_SECRET_KEY`` or the key
                file), loaded only when the row holds a secret.

        Raises:
            MailError: The row cannot be used.
            SecretKeyError: The stored secret does not decrypt with the key.
        """
        return mailer_for_config(config, box=(lambda: box) if box is not None
                                 else (lambda: active_box()[0]), settings=self.settings())
