"""Source health: which enabled sources need an operator's attention, and why."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from watch_pipeline.catalog.db import Catalog
from watch_pipeline.catalog.models import WatchSource

FAILED_SCANS_LIMIT = 3
OVERDUE_FACTOR = 3


@dataclass(frozen=True)
class Problem:
    """One unhealthy source."""

    source_id: int
    source_name: str
    kind: str  # "failing" or "overdue"
    message: str


def find_problems(catalog: Catalog, now: datetime, *,
                  sensor_started_at: datetime | None = None) -> list[Problem]:
    """Enabled sources whose last 3 scans failed, or not scanned for 3 x their interval.

    ``sensor_started_at`` keeps a source created (or a system started) moments ago from being
    called overdue before it ever had the chance to be scanned.
    """
    problems: list[Problem] = []
    with catalog.session() as session:
        sources = session.scalars(sa.select(WatchSource).where(
            WatchSource.is_enabled.is_(True), WatchSource.is_manual.is_(False))  # never scanned
            .order_by(WatchSource.id)).all()
        for s in sources:
            if (s.consecutive_scan_failures or 0) >= FAILED_SCANS_LIMIT:
                problems.append(Problem(s.id, s.name, "failing",
                                        f"source {s.name!r}: the last "
                                        f"{s.consecutive_scan_failures} scans failed; last: "
                                        f"{s.last_scan_message or 'no message'}"))
                continue
            window = timedelta(minutes=s.polling_interval_minutes * OVERDUE_FACTOR)
            reference = s.last_scan_at or max(s.created_at, sensor_started_at or s.created_at)
            if now - reference > window:
                seen = (f"last scanned {s.last_scan_at:%Y-%m-%d %H:%M} UTC" if s.last_scan_at
                        else "never scanned")
                problems.append(Problem(s.id, s.name, "overdue",
                                        f"source {s.name!r}: {seen}, more than "
                                        f"{OVERDUE_FACTOR} x its {s.polling_interval_minutes}-"
                                        "minute interval ago"))
    return problems
