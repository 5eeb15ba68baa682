"""Which notifications to send after scans and imports, and sending them through linked configs.

Per source, everything that happened since the last notification (files imported, stitched or
failed; a failed scan) becomes one message per linked email configuration; a period in which
nothing was imported, stitched or failed sends nothing. Delivery problems are recorded on the
configuration and never touch an import.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa

from watch_pipeline.catalog import email as email_svc
from watch_pipeline.catalog.db import Catalog
from watch_pipeline.catalog.models import (
    EmailNotificationConfig,
    FileStatus,
    MediaFile,
    ScanStatus,
    WatchSource,
    WatchSourceEmail,
    WatchSourceFile,
)
from watch_pipeline.catalog.secrets import SecretKeyError
from watch_pipeline.mail.base import EmailMessage, Mailer, MailError
from watch_pipeline.mail.render import recipients, render_summary

log = logging.getLogger(__name__)

SEND_ATTEMPTS = 3


@dataclass
class SourceActivity:
    """What happened in one source since the last notification."""

    source_id: int
    source_name: str
    files_found: int = 0
    imported: list[tuple[str, str | None]] = field(default_factory=list)
    stitched: list[str] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    errors: list[tuple[str, str]] = field(default_factory=list)

    @property
    def noteworthy(self) -> bool:
        """Something was imported, stitched or failed (skips alone are not news)."""
        return bool(self.imported or self.stitched or self.errors)


HOLD_LIMIT_SECONDS = 1800.0


def _busy_sources(session, source_ids: list[int]) -> set[int]:  # type: ignore[no-untyped-def]
    f = WatchSourceFile
    return set(session.scalars(
        sa.select(f.watch_source_id).distinct().where(
            f.watch_source_id.in_(source_ids),
            f.status.in_((FileStatus.PENDING, FileStatus.IMPORTING, FileStatus.DOWNLOADING,
                         FileStatus.WAITING_FOR_PARTS)))))


def collect_activity(catalog: Catalog, cursors: dict[int, datetime], until: datetime, *,
                     default_since: datetime,
                     run_url: Callable[[str], str | None] = lambda _key: None,
                     ) -> tuple[list[SourceActivity], dict[int, datetime]]:
    """Activity per linked source since its cursor, and the cursors to store afterwards.

    A source with files still on their way (waiting to be stable, queued, importing, or parts
    waiting for their group) is held back (its cursor stays), so one message covers a scan and
    the imports it started — unless it has been held for
    ``HOLD_LIMIT_SECONDS``.
    """
    f = WatchSourceFile
    by_source: dict[int, SourceActivity] = {}
    new_cursors: dict[int, datetime] = {}
    with catalog.session() as session:
        linked = sorted(set(session.scalars(
            sa.select(WatchSourceEmail.watch_source_id).distinct())))
        if not linked:
            return [], {}
        sources = {s.id: s for s in session.scalars(
            sa.select(WatchSource).where(WatchSource.id.in_(linked)))}
        busy = _busy_sources(session, linked)
        for source in sources.values():
            since = cursors.get(source.id, default_since)
            held = source.id in busy and (until - since).total_seconds() < HOLD_LIMIT_SECONDS
            if held:
                new_cursors[source.id] = since
                continue
            new_cursors[source.id] = until
            act = SourceActivity(source.id, source.name,
                                 files_found=source.last_scan_files_found or 0)
            rows = session.execute(
                sa.select(f.remote_path, f.status, f.skip_reason, f.error_message, f.imohash,
                          f.partition_key, f.part_group, MediaFile.title)
                .outerjoin(MediaFile, MediaFile.id == f.media_file_id)
                .where(f.watch_source_id == source.id, f.processed_at > since,
                       f.processed_at <= until)
                .order_by(f.processed_at)
            ).all()
            for r in rows:
                if r.status == FileStatus.IMPORTED:
                    act.imported.append((r.title or r.remote_path, run_url(
                        r.partition_key or r.imohash or "")))  # the media partition
                elif r.status == FileStatus.STITCHED_PART:
                    group = r.part_group or r.remote_path
                    if group not in act.stitched:
                        act.stitched.append(group)
                elif r.status == FileStatus.ERROR:
                    act.errors.append((r.remote_path, r.error_message or "unknown error"))
                elif r.skip_reason:
                    act.skipped[r.skip_reason] += 1
            if (source.last_scan_status == ScanStatus.ERROR and source.last_scan_at is not None
                    and since < source.last_scan_at <= until):
                act.errors.append(("(scan)", source.last_scan_message or "scan failed"))
            by_source[source.id] = act
    return [a for a in by_source.values() if a.noteworthy], new_cursors


@dataclass(frozen=True)
class Delivery:
    """The outcome of one message to one configuration."""

    source_name: str
    config_name: str
    sent: bool
    detail: str


def _send_with_retries(mailer: Mailer, message: EmailMessage,
                       sleep: Callable[[float], None]) -> None:
    for attempt in range(1, SEND_ATTEMPTS + 1):
        try:
            mailer.send(message)
            return
        except MailError:
            if attempt == SEND_ATTEMPTS:
                raise
            sleep(2.0 * attempt)


def deliver(catalog: Catalog, activity: SourceActivity, *,
            mailer_for: Callable[[EmailNotificationConfig], Mailer],
            dagster_url: str | None = None,
            sleep: Callable[[float], None] = time.sleep) -> list[Delivery]:
    """Send ``activity`` to every configuration linked to its source, per the link's rules."""
    results: list[Delivery] = []
    subject, text, html = render_summary(
        activity.source_name, files_found=activity.files_found, imported=activity.imported,
        skipped=dict(activity.skipped), stitched=activity.stitched, errors=activity.errors,
        dagster_url=dagster_url)
    with catalog.session() as session:
        links = email_svc.links_for_source(session, activity.source_id)
        plans = [(link.email_config, link) for link in links]
        for config, link in plans:
            wanted = ((activity.errors and link.notify_on_error)
                      or ((activity.imported or activity.stitched) and link.notify_on_success))
            if not wanted:
                continue
            if not config.is_enabled:
                log.warning("email config %r is disabled: no mail for source %r",
                            config.name, activity.source_name)
                results.append(Delivery(activity.source_name, config.name, False, "disabled"))
                continue
            to = recipients(config.default_recipients, link.additional_recipients)
            if not to:
                log.warning("email config %r has no recipients for source %r: nothing sent",
                            config.name, activity.source_name)
                results.append(Delivery(activity.source_name, config.name, False,
                                        "no recipients"))
                continue
            message = EmailMessage(subject=subject, text=text, html=html, to=tuple(to),
                                   from_address=config.from_address)
            try:
                _send_with_retries(mailer_for(config), message, sleep)
            except (MailError, SecretKeyError) as exc:
                log.warning("email config %r failed for source %r: %s", config.name,
                            activity.source_name, exc)
                email_svc.record_send_failure(session, config, str(exc))
                results.append(Delivery(activity.source_name, config.name, False, str(exc)))
                continue
            email_svc.record_send_success(session, config,
                                          f"sent to {len(to)} recipient(s): {subject}")
            results.append(Delivery(activity.source_name, config.name, True, ", ".join(to)))
    return results
