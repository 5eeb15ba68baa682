"""``watch-pipeline events``: the long-running file-system events watcher for local sources."""

from __future__ import annotations

import logging
import signal
import threading

import click

from watch_pipeline.cli.context import CliContext, pass_cli
from watch_pipeline.sources.events import EventWatcher


@click.command("events")
@click.option("--refresh-seconds", type=click.FloatRange(min=0.5), default=5.0, show_default=True,
              help="How often the source list is read again (config changes apply then).")
@click.option("--max-watches", type=click.IntRange(min=1), default=None,
              envvar="WATCH_EVENTS_MAX_WATCHES",
              help="Most folders watched per source; a source with more is polled "
                   "(default: as many as the kernel's fs.inotify.max_user_watches allows).")
@pass_cli
def events(obj: CliContext, refresh_seconds: float, max_watches: int | None) -> None:
    """Watch local sources' folders (inotify) and record their events in the catalog.

    Runs until SIGINT or SIGTERM. Watches the enabled local sources with use_fs_events while
    the setting watch.fs_events_enabled is true; a closed or moved-in file is then imported
    after watch.fs_events_quiet_seconds instead of the stability window, and a source with new
    events is scanned on the next tick. Network and FUSE file systems, and sources beyond the
    inotify watch limit, stay polled: `source show` prints each source's fs_events_mode and
    the reason.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    watcher = EventWatcher(obj.catalog, obj.watch_root(), max_watches=max_watches,
                           refresh_seconds=refresh_seconds)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    click.echo("[events] watching local sources; SIGINT or SIGTERM stops", err=True)
    watcher.run(stop)
    click.echo("[events] stopped", err=True)
