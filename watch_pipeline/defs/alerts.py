"""Notifications: mails about what sources did, and alerts about sources in trouble.

Both sensors are built at launch by :func:`build_alert_sensors` with the interval and the UI's
address that ``defs/resources.py`` read from the environment.
"""

import functools
import json
from collections.abc import Callable
from datetime import UTC, datetime

import dagster as dg

from watch_pipeline.catalog.resource import CatalogResource
from watch_pipeline.defs.background import background_sensor
from watch_pipeline.mail.resource import MailerResource
from watch_pipeline.ops import health, notify


def build_alert_sensors(*, interval_seconds: int = 60,
                        dagster_url: str | None = None) -> list[dg.SensorDefinition]:
    """The notification and source health sensors, ticking every ``interval_seconds``."""
    return [build_notification_sensor(interval_seconds=interval_seconds, dagster_url=dagster_url),
            build_source_health_sensor(interval_seconds=interval_seconds)]


def build_notification_sensor(*, interval_seconds: int = 60,
                              dagster_url: str | None = None) -> dg.SensorDefinition:
    """The sensor that mails what sources did; ``dagster_url`` adds links to the UI."""
    return _alert_sensor(
        "notification_sensor", interval_seconds,
        "Mails each source's linked email configurations once its scan and the imports it "
        "started are done, when something was imported, stitched or failed.",
        functools.partial(_notify, base_url=dagster_url))


def _alert_sensor(name: str, interval_seconds: int, description: str,
                  evaluate: Callable[..., dg.SkipReason]) -> dg.SensorDefinition:
    @background_sensor(name, interval_seconds=interval_seconds, description=description)
    def alert_sensor(context: dg.SensorEvaluationContext, catalog: CatalogResource,
                     mailer: MailerResource) -> dg.SkipReason:
        return evaluate(context, catalog, mailer)

    return alert_sensor


def _notify(context: dg.SensorEvaluationContext, catalog: CatalogResource,
            mailer: MailerResource, *, base_url: str | None) -> dg.SkipReason:
    # Everything up to now: a source is only reported once none of its files is on its way, and
    # a file being imported is still "importing" until the transaction that records its outcome
    # commits, so nothing reported can change after this tick (no settle window is needed, and
    # one would split a scan's files across two messages).
    until = datetime.now(UTC)
    state = json.loads(context.cursor) if context.cursor else {}
    if "start" not in state:  # first tick: report only what happens from now on
        context.update_cursor(json.dumps({"start": until.isoformat(), "sources": {}}))
        return dg.SkipReason("notifications start now")
    start = datetime.fromisoformat(state["start"])
    cursors = {int(k): datetime.fromisoformat(v) for k, v in state.get("sources", {}).items()}

    def run_url(fingerprint: str) -> str | None:
        if not base_url or not fingerprint:
            return None
        return f"{base_url}/assets/transcript?partition={fingerprint}"

    activities, new_cursors = notify.collect_activity(
        catalog.get(), cursors, until, default_since=start, run_url=run_url)
    sent = failed = 0
    for activity in activities:
        for d in notify.deliver(catalog.get(), activity, mailer_for=mailer.mailer_for,
                                dagster_url=base_url):
            if d.sent:
                sent += 1
                context.log.info(f"mailed {d.config_name} about {d.source_name}: {d.detail}")
            else:
                failed += 1
                context.log.warning(f"no mail via {d.config_name} about {d.source_name}: "
                                    f"{d.detail}")
    context.update_cursor(json.dumps({
        "start": state["start"],
        "sources": {str(k): v.isoformat() for k, v in new_cursors.items()}}))
    if not activities:
        return dg.SkipReason("nothing imported, stitched or failed since the last notification")
    return dg.SkipReason(f"{sent} message(s) sent, {failed} not sent, for "
                         f"{len(activities)} source(s)")


def build_source_health_sensor(*, interval_seconds: int = 60) -> dg.SensorDefinition:
    """The sensor that alerts about sources in trouble."""
    return _alert_sensor(
        "source_health_sensor", interval_seconds,
        "Raises an alert for a source whose last 3 scans failed or that has not been scanned "
        "for 3 x its interval; mails its linked configurations once per incident, not once "
        "per tick.",
        _check_health)


def _check_health(context: dg.SensorEvaluationContext, catalog: CatalogResource,
                  mailer: MailerResource) -> dg.SkipReason:
    now = datetime.now(UTC)
    state = json.loads(context.cursor) if context.cursor else {}
    started = datetime.fromisoformat(state["started"]) if "started" in state else now
    alerted: dict[str, str] = state.get("alerted", {})
    problems = health.find_problems(catalog.get(), now, sensor_started_at=started)
    for problem in problems:
        context.log.warning(problem.message)
        if alerted.get(str(problem.source_id)) == problem.kind:
            continue  # this incident was already announced
        activity = notify.SourceActivity(problem.source_id, problem.source_name,
                                         errors=[(f"(health: {problem.kind})", problem.message)])
        for d in notify.deliver(catalog.get(), activity, mailer_for=mailer.mailer_for):
            log = context.log.info if d.sent else context.log.warning
            log(f"health alert via {d.config_name}: {'sent' if d.sent else d.detail}")
    context.update_cursor(json.dumps({
        "started": started.isoformat(),
        "alerted": {str(p.source_id): p.kind for p in problems}}))
    if problems:
        return dg.SkipReason("ALERT: " + "; ".join(p.message for p in problems))
    return dg.SkipReason("every enabled source is healthy")
