"""The ``watch_imports`` concurrency pool, whose limit follows ``watch.max_concurrent_imports``.

Every step that imports media (``raw_file``, ``stitched_media``, ``media_object``, ``transcript``
and the ``import_batch`` op) is in this pool. The instance runs pools at run granularity
(``concurrency: pools: granularity: run`` in both dagster.yaml files): the run queue starts a run
that uses the pool only while the pool has a free slot, so at most ``limit`` such runs are in
progress at once, whoever asked for them (a watch sensor, a backfill, the UI). The limit is kept
by the Dagster instance, not the catalog; :func:`sync_import_pool` copies the setting there. The
watch sensors call it on every tick and ``watch-pipeline settings set`` calls it at once.
"""

from dataclasses import dataclass

import dagster as dg

IMPORT_POOL = "watch_imports"


class PoolSyncError(Exception):
    """The instance cannot hold the pool's limit (its storage has no concurrency tables)."""


@dataclass(frozen=True)
class PoolSync:
    """What :func:`sync_import_pool` found and did.

    Attributes:
        pool: The pool's name.
        limit: The pool's limit now.
        previous: The limit it had before, or ``None`` when it had no limit of its own.
        was_default: The previous limit was the instance's ``pools: default_limit``, not one set
            for this pool.
    """

    pool: str
    limit: int
    previous: int | None
    was_default: bool = False

    @property
    def changed(self) -> bool:
        """The limit was written."""
        return self.previous != self.limit or self.was_default

    def describe(self) -> str:
        """One line for a log or the CLI."""
        if not self.changed:
            return f"concurrency pool {self.pool}: limit {self.limit} (unchanged)"
        if self.previous is None:
            return f"concurrency pool {self.pool}: limit set to {self.limit} (had none)"
        if self.was_default:
            return (f"concurrency pool {self.pool}: limit set to {self.limit} (was the instance "
                    f"default {self.previous})")
        return f"concurrency pool {self.pool}: limit {self.previous} -> {self.limit}"


def sync_import_pool(instance: dg.DagsterInstance, limit: int) -> PoolSync:
    """Make ``limit`` the import pool's limit in ``instance``, writing only when it differs.

    One read of the instance's pool limits; a write only after a change (or when the pool still
    runs on the instance default, so that a later change of the default cannot move it).

    Raises:
        PoolSyncError: The instance's storage has no concurrency pools (an old schema:
            ``dagster instance migrate`` adds them).
    """
    # The public surface for pool limits is the event log storage: `dagster instance
    # concurrency set` and the UI's concurrency page use these same two calls.
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        raise PoolSyncError(f"the Dagster instance's storage ({type(storage).__name__}) has no "
                            "concurrency pools; run `dagster instance migrate`")
    current = next((p for p in storage.get_pool_limits() if p.name == IMPORT_POOL), None)
    sync = PoolSync(IMPORT_POOL, limit, current.limit if current else None,
                    was_default=bool(current and current.from_default))
    if sync.changed:
        storage.set_concurrency_slots(IMPORT_POOL, limit)
    return sync


def sync_current_instance(limit: int) -> PoolSync:
    """:func:`sync_import_pool` on the instance ``DAGSTER_HOME`` names (for the CLI).

    Raises:
        PoolSyncError: The instance's storage has no concurrency pools.
        Exception: The instance cannot be opened.
    """
    with dg.DagsterInstance.get() as instance:
        return sync_import_pool(instance, limit)
