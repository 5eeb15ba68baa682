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


# -- issue 13, finding 9: the CA file and the key reach every send path -------------------------


def _linked_tls_config(catalog, server, key_file, **source_values):
    """A source in trouble linked to an SMTP config (STARTTLS + AUTH) whose password is encrypted
    under the key in ``key_file``."""
    from datetime import UTC, datetime

    from watch_pipeline.catalog import email as email_svc
    from watch_pipeline.catalog.keys import active_box
    from watch_pipeline.catalog.secrets import KeyConfig
    from watch_pipeline.catalog.sources import create_source

    box, _ = active_box(KeyConfig(key_file=key_file), catalog=catalog)
    with catalog.session() as s:
        src = create_source(s, None, fields={"name": "nas", "source_type": "local",
                                             "local_path": "."})
        src.consecutive_scan_failures = 3
        src.last_scan_at = datetime.now(UTC)
        src.last_scan_message = "unreachable"
        for k, v in source_values.items():
            setattr(src, k, v)
        cfg = email_svc.create_email_config(s, box, secret=SMTP_PASSWORD, fields={
            "name": "ops", "provider": "smtp", "from_address": "w@example.com",
            "default_recipients": ["ops@example.com"], "smtp_host": server.host,
            "smtp_port": server.port, "smtp_username": SMTP_USER})
        email_svc.link_source(s, cfg, src, additional_recipients=[], notify_on_success=True,
                              notify_on_error=True)
        return src.id


def test_health_sensor_mails_through_tls_with_the_launched_ca_file(dagster_home, sqlite_catalog,
                                                                  smtp_starttls_server,
                                                                  tls_files, tmp_path):
    """WATCH_SMTP_CA_FILE reaches the health sensor's mailer, not only ``email test``."""
    import sqlalchemy as sa

    from watch_pipeline.catalog.models import EmailNotificationConfig
    from watch_pipeline.defs.alerts import build_source_health_sensor
    from watch_pipeline.defs.resources import launch

    key_file = tmp_path / "keys" / "watch.key"
    _linked_tls_config(sqlite_catalog, smtp_starttls_server, key_file)
    environ = {"DAGSTER_HOME": dagster_home, "WATCH_SECRET_KEY_FILE": str(key_file)}
    without_ca = launch(environ).mailer
    with sqlite_catalog.session() as s:
        row = s.scalar(sa.select(EmailNotificationConfig))
    with pytest.raises(MailError, match="not trusted"):  # the test CA is not in the system store
        without_ca.mailer_for(row).test()

    launched = launch({**environ, "WATCH_SMTP_CA_FILE": tls_files.ca_file})
    assert launched.mailer.smtp_ca_file == tls_files.ca_file
    sensor = build_source_health_sensor()
    with dg.instance_for_test() as instance:
        ctx = dg.build_sensor_context(instance=instance, resources=launched.resources())
        assert sensor(ctx).skip_message.startswith("ALERT")
    [mail] = smtp_starttls_server.messages
    assert mail.tls and mail.login == SMTP_USER and "nas" in mail.part("plain")


def test_notification_sensor_mails_through_tls_with_the_resources_ca_file(
        sqlite_catalog, smtp_starttls_server, tls_files, tmp_path):
    import json
    from datetime import UTC, datetime, timedelta

    import sqlalchemy as sa

    from watch_pipeline.catalog.models import WatchSource, WatchSourceFile
    from watch_pipeline.catalog.resource import CatalogResource
    from watch_pipeline.defs.alerts import build_notification_sensor

    notification_sensor = build_notification_sensor()
    key_file = tmp_path / "keys" / "watch.key"
    sid = _linked_tls_config(sqlite_catalog, smtp_starttls_server, key_file,
                             consecutive_scan_failures=0)
    resources = {"catalog": CatalogResource(url=sqlite_catalog.url),
                 "mailer": MailerResource(secret_key_file=str(key_file), timeout_seconds=10,
                                          smtp_ca_file=tls_files.ca_file)}
    with dg.instance_for_test() as instance:
        ctx = dg.build_sensor_context(instance=instance, resources=resources)
        assert "start now" in notification_sensor(ctx).skip_message
        start = datetime.fromisoformat(json.loads(ctx.cursor)["start"])
        with sqlite_catalog.session() as s:
            s.add(WatchSourceFile(watch_source_id=sid, remote_path="talk.wav",
                                  filename="talk.wav", status="imported",
                                  processed_at=start + timedelta(milliseconds=1)))
            s.execute(sa.update(WatchSource).values(last_scan_files_found=1))
        assert datetime.now(UTC) > start
        ctx2 = dg.build_sensor_context(instance=instance, resources=resources,
                                       cursor=ctx.cursor)
        assert "1 message(s) sent" in notification_sensor(ctx2).skip_message
    [mail] = smtp_starttls_server.messages
    assert mail.tls and mail.login == SMTP_USER and "talk.wav" in mail.part("plain")
