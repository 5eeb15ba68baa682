"""Which unfinished import runs were stranded by a crash, and why.

After a power cut or an OOM kill takes the daemon, the code server and the run workers down
together, Dagster still shows the runs that were in flight as ``STARTING`` or ``STARTED``: its
default run launcher has no worker health check, and run monitoring only times out runs that
never started. Their files keep their run keys, so nothing would ask for them again for hours.
The stranded-run sensor (``defs/recovery.py``) looks at each in-flight import run with the rules
below and marks the stranded ones failed; the import failure path then retries their files with
new run keys.

A run is stranded when:

1. Its run worker ran on this host (Dagster's default launcher: workers are children of the code
   server that evaluates the sensor) and the process that reported "Started process for run
   (pid: N)" is gone: no process N, a zombie, or a process N that started after that report (the
   pid was reused after a restart).
2. Its launcher has a worker health check (Docker, Kubernetes, ECS) and the check says the worker
   failed or cannot be found.
3. It was created but never submitted, or (default launcher) launched, and no run worker reported
   in within :data:`LOST_LAUNCH_SECONDS`: the launch died with the daemon or the code server.
4. With any other launcher, nothing was written to the run's event log for
   :data:`SILENT_RUN_SECONDS`: a worker that is alive reports at least every step's start and end.

A run whose worker is alive is never touched. Once the failure path has marked a stranded
run's files ``error``, :func:`release_files` makes them retryable at once and gives back the
retry the crash cost them: a crash is not the file's fault, and its retry must not wait for the
backoff (two minutes by the second crash) or use up the automatic retries.
Nothing here imports Dagster.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from pathlib import Path

from watch_pipeline.catalog import queries
from watch_pipeline.catalog.db import Catalog

# A live launch reports its worker's pid within seconds; a minute covers a loaded machine.
LOST_LAUNCH_SECONDS = 60.0
# Only for launchers with neither a local worker nor a health check: longer than any import step
# (a long recording's transcription on a CPU) may run without writing an event.
SILENT_RUN_SECONDS = 6 * 3600.0
# The worker's start time (from /proc, in clock ticks) and the report's time may differ by this.
CLOCK_SLACK_SECONDS = 2.0

_PID_MESSAGE = re.compile(r"^Started process for (?:run|resuming job) \(pid: (\d+)\)")


class WorkerCheck(Enum):
    """How a run's worker can be checked, decided by the instance's run launcher."""

    LOCAL_PROCESS = "local_process"  # Dagster's default launcher: a process on this host
    HEALTH_CHECK = "health_check"  # the launcher can say whether its worker still runs
    EVENTS_ONLY = "events_only"  # only the run's event log tells


@dataclass(frozen=True)
class InFlightRun:
    """What the event log says about one import run that has not finished.

    Attributes:
        run_id: Dagster's run id.
        status: ``NOT_STARTED``, ``STARTING`` or ``STARTED``.
        worker_pid: The pid in the run's last "Started process for run" report, if any.
        worker_reported_at: When that report was written (epoch seconds).
        last_event_at: When the run's latest event was written (or the run created).
        worker_failed: For a :attr:`WorkerCheck.HEALTH_CHECK` launcher: True when the check
            says the worker failed or is not found, False when it runs, None when unknown.
    """

    run_id: str
    status: str
    worker_pid: int | None
    worker_reported_at: float | None
    last_event_at: float
    worker_failed: bool | None = None


def worker_pid(message: str | None) -> int | None:
    """The pid in Dagster's "Started process for run (pid: N)." engine event, else None."""
    match = _PID_MESSAGE.match(message or "")
    return int(match.group(1)) if match else None


def _boot_time() -> float | None:
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except OSError:
        return None
    return None


def process_started_at(pid: int) -> tuple[float | None, bool]:
    """When process ``pid`` started (epoch seconds, None when unknown) and whether it lives.

    Reads ``/proc`` where there is one (Linux); elsewhere only asks whether the pid exists.
    A zombie counts as dead.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None, False
    except OSError:
        return None, _pid_exists(pid)
    # pid (comm) state ppid ... starttime is field 22; comm may hold spaces and parentheses.
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):
        return None, False
    boot = _boot_time()
    if boot is None:
        return None, True
    return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK"), True


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def local_worker_alive(pid: int, reported_at: float | None) -> bool:
    """Whether the process that reported ``pid`` at ``reported_at`` still runs on this host."""
    started, alive = process_started_at(pid)
    if not alive:
        return False
    # A process that started after the worker reported in is another one with a reused pid.
    return not (started is not None and reported_at is not None
                and started > reported_at + CLOCK_SLACK_SECONDS)


def stranded_reason(run: InFlightRun, check: WorkerCheck, *, now: float,
                    alive: Callable[[int, float | None], bool] = local_worker_alive,
                    ) -> str | None:
    """Why ``run`` cannot finish any more, or None while it may (see the module docstring)."""
    if run.worker_pid is not None and check is WorkerCheck.LOCAL_PROCESS:
        if alive(run.worker_pid, run.worker_reported_at):
            return None
        return f"its run worker (pid {run.worker_pid}) is gone: the process died or was killed"
    if check is WorkerCheck.HEALTH_CHECK and run.status == "STARTED":
        if run.worker_failed:
            return "the run launcher reports its worker failed or gone"
        return None
    silent = now - run.last_event_at
    # A remote launcher's worker may take longer to come up (an image pull): run monitoring's
    # start timeout covers its STARTING runs.
    never_came_up = run.status == "NOT_STARTED" or (
        run.status == "STARTING" and check is WorkerCheck.LOCAL_PROCESS)
    if run.worker_pid is None and never_came_up and silent > LOST_LAUNCH_SECONDS:
        return (f"no run worker came up {silent:.0f}s after it was "
                f"{'created' if run.status == 'NOT_STARTED' else 'launched'}")
    if check is WorkerCheck.EVENTS_ONLY and silent > SILENT_RUN_SECONDS:
        return f"its event log has been silent for {silent / 3600:.1f}h"
    return None


def release_files(catalog: Catalog, run_id: str, run_key: str | None,
                  failed_at: datetime) -> int:
    """Retry now, uncounted, the files stranded run ``run_id`` left in ``error``.

    Only rows the failure path marked after ``failed_at`` (when the run was marked failed) are
    released, so the failure path can no longer overwrite them, and a row is released once.
    """
    return queries.release_stranded(catalog, run_id, run_key, failed_at)
