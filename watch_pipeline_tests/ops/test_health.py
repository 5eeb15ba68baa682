"""The source health sensor: failing and overdue sources raise one alert (and one mail)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
import sqlalchemy as sa

from watch_pipeline.catalog import email as email_svc
from watch_pipeline.catalog.models import WatchSource
from watch_pipeline.catalog.resource import CatalogResource
from watch_pipeline.catalog.sources import create_source
from watch_pipeline.defs.alerts import build_source_health_sensor
from watch_pipeline.mail.resource import MailerResource
from watch_pipeline.ops.health import find_problems

source_health_sensor = build_source_health_sensor()


def _source(catalog, name, **values):
    with catalog.session() as s:
        src = create_source(s, None, fields={"name": name, "source_type": "local",
                                             "local_path": "."})
        for k, v in values.items():
            setattr(src, k, v)
        return src.id


def test_failing_and_overdue_sources_are_found(sqlite_catalog):
    now = datetime.now(UTC)
    _source(sqlite_catalog, "ok", last_scan_at=now, last_scan_status="success")
    _source(sqlite_catalog, "failing", consecutive_scan_failures=3, last_scan_at=now,
            last_scan_message="scan failed: SMB login refused")
    _source(sqlite_catalog, "slow", last_scan_at=now - timedelta(minutes=46),
            polling_interval_minutes=15)
    _source(sqlite_catalog, "two-fails", consecutive_scan_failures=2, last_scan_at=now)
    problems = {p.source_name: p for p in find_problems(sqlite_catalog, now)}
    assert set(problems) == {"failing", "slow"}
    assert problems["failing"].kind == "failing" and "login refused" in problems[
        "failing"].message
    assert problems["slow"].kind == "overdue"


def test_alert_is_visible_in_the_tick_and_mailed_once(sqlite_catalog, smtp_server):
    sid = _source(sqlite_catalog, "nas", consecutive_scan_failures=3,
                  last_scan_at=datetime.now(UTC), last_scan_message="unreachable")
    with sqlite_catalog.session() as s:
        cfg = email_svc.create_email_config(s, None, fields={
            "name": "ops", "provider": "smtp", "from_address": "w@example.com",
            "default_recipients": ["ops@example.com"], "smtp_host": "127.0.0.1",
            "smtp_port": smtp_server.port, "smtp_use_tls": False}, secret=None)
        email_svc.link_source(s, cfg, s.get(WatchSource, sid), additional_recipients=[],
                              notify_on_success=True, notify_on_error=True)
    resources = {"catalog": CatalogResource(url=sqlite_catalog.url), "mailer": MailerResource()}
    with dg.instance_for_test() as instance:
        cursor = None
        for _ in range(3):
            ctx = dg.build_sensor_context(instance=instance, resources=resources, cursor=cursor)
            message = source_health_sensor(ctx).skip_message
            cursor = ctx.cursor
            assert message.startswith("ALERT") and "nas" in message
        assert len(smtp_server.messages) == 1  # one mail per incident, not per tick
        with sqlite_catalog.session() as s:
            s.execute(sa.update(WatchSource).values(consecutive_scan_failures=0))
        ctx = dg.build_sensor_context(instance=instance, resources=resources, cursor=cursor)
        assert "healthy" in source_health_sensor(ctx).skip_message
