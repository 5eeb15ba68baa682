"""``watch-pipeline store check``: reach the configured object store (and create its bucket)."""

from __future__ import annotations

import os

import click

from watch_pipeline.cli.context import CliContext, emit_json, fail, pass_cli


@click.group()
def store() -> None:
    """The object store configured by WATCH_OBJECT_STORE (defs/resources.py)."""


@store.command("check")
@click.option("--create-bucket", is_flag=True,
              help="Create the S3 bucket when it does not exist (the production stack's setup).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_cli
def check(cli: CliContext, create_bucket: bool, as_json: bool) -> None:
    """Check that the object store is usable: the bucket exists (or is created) and answers."""
    from watch_pipeline.defs.resources import build_object_store
    from watch_pipeline.store.base import ObjectStoreError
    from watch_pipeline.store.local import LocalObjectStore
    from watch_pipeline.store.s3 import S3ObjectStore

    try:
        # Resolves EnvVar fields (the secret key) as a run would.
        resource = build_object_store(cli.environ).process_config_and_initialize()
        target = resource.get_store()
        created = False
        if isinstance(target, S3ObjectStore):
            created = target.ensure_bucket(create=create_bucket)
            where = target.url("x").removesuffix("x")  # s3://bucket/<prefix>
        else:
            assert isinstance(target, LocalObjectStore)
            where = str(target.root)
            try:
                target.root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ObjectStoreError(f"object store {where} cannot be created: "
                                       f"{exc.strerror}") from None
            if not os.access(target.root, os.W_OK | os.X_OK):
                raise ObjectStoreError(f"object store {where} is not writable by this user")
    except (ObjectStoreError, ValueError) as exc:
        fail(str(exc))
        return
    if as_json:
        emit_json({"backend": resource.backend, "location": where, "created": created})
        return
    click.echo(f"object store ({resource.backend}) {where}: "
               f"{'bucket created' if created else 'ready'}")
