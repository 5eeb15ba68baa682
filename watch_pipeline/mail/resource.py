"""Email delivery as a Dagster resource: a thin factory over :mod:`watch_pipeline.mail.connect`.

Every send path (the notification sensor, the source health sensor, anything asking for
``mailer``) builds its mailer through :meth:`MailerResource.mailer_for`, so the typed fields here
(the SMTP CA file, the timeouts, the key location) reach all of them. Nothing here reads the
environment: ``defs/resources.py`` maps ``WATCH_SMTP_CA_FILE``, ``WATCH_SECRET_KEY`` (an
``EnvVar``) and the key file onto the fields.
"""

from __future__ import annotations

from pydantic import Field

from watch_pipeline.catalog.email import SECRET_COLUMN
from watch_pipeline.catalog.models import EmailNotificationConfig
from watch_pipeline.catalog.resource import SecretKeyResource
from watch_pipeline.catalog.secrets import SecretBox
from watch_pipeline.mail.base import Mailer
from watch_pipeline.mail.connect import MailSettings, mailer_for_config
from watch_pipeline.mail.graph import DEFAULT_AUTHORITY_BASE, DEFAULT_GRAPH_BASE


class MailerResource(SecretKeyResource):
    """Builds the mailer (SMTP, Exchange or Microsoft 365) for a catalog email configuration."""

    graph_base: str = Field(default=DEFAULT_GRAPH_BASE,
                            description="Microsoft Graph root including the version.")
    authority_base: str = Field(default=DEFAULT_AUTHORITY_BASE,
                                description="Microsoft 365 login root, without the tenant.")
    smtp_ca_file: str | None = Field(
        default=None, description="PEM file of extra CAs trusted for SMTP/Exchange TLS "
                                  "(WATCH_SMTP_CA_FILE).")
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
            box: The secret box; ``None`` opens the configured key, only when the row holds a
                secret. A missing key file is never created here: the row's secret needs the
                key it was encrypted with, and the error names that key's id.

        Raises:
            MailError: The row cannot be used.
            SecretKeyError: No key, or not the key the stored secret was encrypted with.
        """
        if box is not None:
            return mailer_for_config(config, box=lambda: box, settings=self.settings())

        def row_box() -> SecretBox:
            return self.box_for(getattr(config, SECRET_COLUMN.get(config.provider, ""), None))

        return mailer_for_config(config, box=row_box, settings=self.settings())
