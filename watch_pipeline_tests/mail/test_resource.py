"""MailerResource builds the right provider from a catalog row (and it really sends)."""

from __future__ import annotations

import dagster as dg
import pytest

from watch_pipeline.catalog.email import create_email_config
from watch_pipeline.mail.base import EmailMessage, MailError
from watch_pipeline.mail.graph import GraphMailer
from watch_pipeline.mail.resource import MailerResource
from watch_pipeline.mail.smtp import ExchangeMailer, SmtpMailer
from watch_pipeline_tests.fixtures.graph_server import (
    M365_CLIENT_ID,
    M365_CLIENT_SECRET,
    M365_TENANT,
)
from watch_pipeline_tests.fixtures.smtp_server import SMTP_PASSWORD, SMTP_USER


def _row(catalog, box, secret, **fields):
    with catalog.session() as s:
        return create_email_config(s, box, fields=fields, secret=secret)


def _message(to="ops@example.test") -> EmailMessage:
    return EmailMessage(subject="s", text="t", html="<p>t</p>", to=(to,),
                        from_address="watch@example.test")


def test_smtp_row_sends_through_starttls_and_auth(sqlite_catalog, box, smtp_starttls_server,
                                                  tls_files):
    row = _row(sqlite_catalog, box, SMTP_PASSWORD, name="relay", provider="smtp",
               from_address="watch@example.test", smtp_host=smtp_starttls_server.host,
               smtp_port=smtp_starttls_server.port, smtp_username=SMTP_USER)
    resource = MailerResource(smtp_ca_file=tls_files.ca_file, timeout_seconds=10)
    mailer = resource.mailer_for(row, box)
    assert isinstance(mailer, SmtpMailer) and not isinstance(mailer, ExchangeMailer)
    assert SMTP_PASSWORD not in repr(mailer)
    mailer.send(_message())
    [mail] = smtp_starttls_server.messages
    assert mail.login == SMTP_USER and mail.tls


def test_exchange_row(sqlite_catalog, box):
    row = _row(sqlite_catalog, box, "pw", name="exch", provider="exchange",
               from_address="watch@corp.test", exchange_server="exch.corp.test",
               exchange_username="svc", exchange_domain="CORP", smtp_port=2587)
    mailer = MailerResource().mailer_for(row, box)
    assert isinstance(mailer, ExchangeMailer)
    assert (mailer.host, mailer.port, mailer.use_tls) == ("exch.corp.test", 2587, True)
    assert mailer.login_user == "CORP\\svc"


def test_m365_row_uses_the_configured_base_urls(sqlite_catalog, box, fake_m365):
    row = _row(sqlite_catalog, box, M365_CLIENT_SECRET, name="cloud", provider="m365",
               from_address="alerts@contoso.test", m365_tenant_id=M365_TENANT,
               m365_client_id=M365_CLIENT_ID)
    resource = MailerResource(graph_base=fake_m365.graph_base,
                              authority_base=fake_m365.authority_base)
    mailer = resource.mailer_for(row, box)
    assert isinstance(mailer, GraphMailer)
    mailer.verify = fake_m365.ca_file  # the fake's CA; production uses the system store
    mailer.send(_message("ops@contoso.test"))
    assert len(fake_m365.send_requests) == 1


def test_m365_row_without_secret_is_a_mail_error(sqlite_catalog, box):
    row = _row(sqlite_catalog, box, "x", name="cloud", provider="m365",
               from_address="alerts@contoso.test", m365_tenant_id=M365_TENANT,
               m365_client_id=M365_CLIENT_ID)
    row.encrypted_m365_client_secret = None
    with pytest.raises(MailError, match="no client secret"):
        MailerResource().mailer_for(row, box)


def test_resource_sends_from_a_dagster_run(sqlite_catalog, box, smtp_server):
    row = _row(sqlite_catalog, box, None, name="relay", provider="smtp",
               from_address="watch@example.test", smtp_host=smtp_server.host,
               smtp_port=smtp_server.port, smtp_use_tls=False)

    @dg.asset
    def notified(mailer: MailerResource) -> None:
        mailer.mailer_for(row, box).send(_message())

    result = dg.materialize([notified], resources={"mailer": MailerResource(timeout_seconds=5)})
    assert result.success
    assert [m.rcpt_tos for m in smtp_server.messages] == [("ops@example.test",)]
