"""Notifications: who gets mail when, delivered to a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import dagster as dg
import sqlalchemy as sa

from watch_pipeline.catalog import email as email_svc
from watch_pipeline.catalog.models import EmailNotificationConfig, WatchSource, WatchSourceFile
from watch_pipeline.catalog.resource import CatalogResource
from watch_pipeline.catalog.sources import create_source
from watch_pipeline.defs.alerts import build_notification_sensor
from watch_pipeline.mail.resource import MailerResource
from watch_pipeline.mail.smtp import SmtpMailer
from watch_pipeline.ops import notify

notification_sensor = build_notification_sensor()

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def _setup(catalog, smtp, *, source_name="cams", on_error=True, on_success=True,
           enabled=True, defaults=("ops@example.com",), extra=("boss@example.com",)):
    with catalog.session() as s:
        src = create_source(s, None, fields={"name": source_name, "source_type": "local",
                                             "local_path": "."})
        cfg = email_svc.create_email_config(s, None, fields={
            "name": "ops", "provider": "smtp", "from_address": "watch@example.com",
            "default_recipients": list(defaults), "smtp_host": "127.0.0.1",
            "smtp_port": smtp.port, "smtp_use_tls": False, "is_enabled": enabled}, secret=None)
        email_svc.link_source(s, cfg, src, additional_recipients=list(extra),
                              notify_on_success=on_success, notify_on_error=on_error)
        return src.id


def _file(catalog, source_id, path, status, *, reason=None, at=T0 + timedelta(minutes=1)):
    with catalog.session() as s:
        s.add(WatchSourceFile(watch_source_id=source_id, remote_path=path, filename=path,
                              status=status, skip_reason=reason, processed_at=at,
                              error_message="boom: corrupt" if status == "error" else None))


def _mailer_for(config: EmailNotificationConfig) -> SmtpMailer:
    return SmtpMailer(config.smtp_host, config.smtp_port, use_tls=False, timeout=5)


def _run(catalog, until=T0 + timedelta(minutes=5)):
    acts, _ = notify.collect_activity(catalog, {}, until, default_since=T0)
    return [d for a in acts for d in notify.deliver(catalog, a, mailer_for=_mailer_for,
                                                    sleep=lambda _s: None)]


def test_nothing_happened_no_mail(sqlite_catalog, smtp_server):
    sid = _setup(sqlite_catalog, smtp_server)
    _file(sqlite_catalog, sid, "dup.wav", "skipped_duplicate", reason="duplicate_same_source")
    assert _run(sqlite_catalog) == [] and smtp_server.messages == []


def test_import_and_error_make_one_escaped_message_to_merged_recipients(sqlite_catalog,
                                                                      smtp_server):
    sid = _setup(sqlite_catalog, smtp_server, source_name="<script>alert(1)</script>",
                 extra=("boss@example.com", "OPS@example.com"))
    _file(sqlite_catalog, sid, "a.wav", "imported")
    _file(sqlite_catalog, sid, "b.wav", "error")
    _file(sqlite_catalog, sid, "c.wav", "skipped_old", reason="too_old")
    (delivery,) = _run(sqlite_catalog)
    assert delivery.sent
    (mail,) = smtp_server.messages
    assert sorted(mail.rcpt_tos) == ["boss@example.com", "ops@example.com"]
    html = mail.part("html")
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;" in html
    text = mail.part("plain")
    assert "a.wav" in text and "boom: corrupt" in text and "too_old" in text
    with sqlite_catalog.session() as s:
        cfg = s.scalar(sa.select(EmailNotificationConfig))
        assert cfg.test_status == "ok"


def test_error_with_notify_on_error_off_sends_nothing(sqlite_catalog, smtp_server):
    sid = _setup(sqlite_catalog, smtp_server, on_error=False)
    _file(sqlite_catalog, sid, "b.wav", "error")
    assert _run(sqlite_catalog) == [] and smtp_server.messages == []


def test_disabled_config_warns_and_sends_nothing(sqlite_catalog, smtp_server, caplog):
    sid = _setup(sqlite_catalog, smtp_server, enabled=False)
    _file(sqlite_catalog, sid, "a.wav", "imported")
    (d,) = _run(sqlite_catalog)
    assert not d.sent and d.detail == "disabled" and smtp_server.messages == []
    assert "disabled" in caplog.text and "ops" in caplog.text


def test_provider_failure_is_recorded_not_raised(sqlite_catalog, smtp_server):
    sid = _setup(sqlite_catalog, smtp_server)
    _file(sqlite_catalog, sid, "a.wav", "imported")
    smtp_server.port = 1  # nothing listens there
    with sqlite_catalog.session() as s:
        s.execute(sa.update(EmailNotificationConfig).values(smtp_port=1))
    (d,) = _run(sqlite_catalog)
    assert not d.sent and "cannot reach" in d.detail
    with sqlite_catalog.session() as s:
        cfg = s.scalar(sa.select(EmailNotificationConfig))
        assert cfg.send_failures == 1 and cfg.test_status == "error"


def test_source_with_imports_in_flight_is_held_for_one_message(sqlite_catalog, smtp_server):
    sid = _setup(sqlite_catalog, smtp_server)
    _file(sqlite_catalog, sid, "a.wav", "imported")
    with sqlite_catalog.session() as s:
        s.add(WatchSourceFile(watch_source_id=sid, remote_path="b.wav", filename="b.wav",
                              status="importing"))
    acts, cursors = notify.collect_activity(sqlite_catalog, {}, T0 + timedelta(minutes=5),
                                            default_since=T0)
    assert acts == [] and cursors[sid] == T0  # held; the cursor did not move


def test_notification_sensor_mails_once(sqlite_catalog, smtp_server):
    sid = _setup(sqlite_catalog, smtp_server)
    resources = {"catalog": CatalogResource(url=sqlite_catalog.url), "mailer": MailerResource()}
    with dg.instance_for_test() as instance:
        ctx = dg.build_sensor_context(instance=instance, resources=resources)
        assert "start now" in notification_sensor(ctx).skip_message
        cursor = ctx.cursor
        _file(sqlite_catalog, sid, "talk.wav", "imported", at=datetime.now(UTC) - timedelta(
            seconds=30))
        with sqlite_catalog.session() as s:  # make it after the sensor's start
            start = datetime.fromisoformat(json.loads(cursor)["start"])
            s.execute(sa.update(WatchSourceFile).values(processed_at=start + timedelta(
                milliseconds=1)))
            s.execute(sa.update(WatchSource).values(last_scan_files_found=1))
        ctx2 = dg.build_sensor_context(instance=instance, resources=resources, cursor=cursor)
        assert "1 message(s) sent" in notification_sensor(ctx2).skip_message
        ctx3 = dg.build_sensor_context(instance=instance, resources=resources,
                                       cursor=ctx2.cursor)
        assert "nothing imported" in notification_sensor(ctx3).skip_message
    assert len(smtp_server.messages) == 1
    assert "talk.wav" in smtp_server.messages[0].part("plain")
