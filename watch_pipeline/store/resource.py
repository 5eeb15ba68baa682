"""The Dagster resource that hands assets an :class:`ObjectStore` (local directory or S3)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import dagster as dg
from pydantic import Field, PrivateAttr

from watch_pipeline.store.base import ObjectStore, ObjectStoreError
from watch_pipeline.store.local import LocalObjectStore
from watch_pipeline.store.s3 import S3ObjectStore


class ObjectStoreResource(dg.ConfigurableResource):
    """Where imported media and transcripts are stored.

    ``backend="local"`` keeps objects in the directory ``local_root`` (``defs/resources.py``
    sets it at launch: ``WATCH_OBJECT_STORE_ROOT``, else ``$DAGSTER_HOME/object_store``);
    ``backend="s3"`` uses a bucket on AWS, MinIO or any S3-compatible server. Assets call
    :meth:`get_store` and use only the :class:`ObjectStore` contract.
    """

    backend: Literal["local", "s3"] = Field(
        default="local", description="Where objects live: a local directory or an S3 bucket."
    )
    local_root: str | None = Field(
        default=None,
        description="Directory for the local backend (set at launch from WATCH_OBJECT_STORE_ROOT, "
        "else $DAGSTER_HOME/object_store).",
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="S3 endpoint such as http://minio:9000; empty for AWS."
    )
    s3_bucket: str | None = Field(default=None, description="Bucket name (must exist).")
    s3_region: str | None = Field(default=None, description="Region name, e.g. us-east-1.")
    s3_access_key_id: str | None = Field(
        default=None, description="Access key id; empty for boto3's default credential chain."
    )
    s3_secret_access_key: str | None = Field(
        default=None, description="Secret access key; pass it with dg.EnvVar."
    )
    s3_use_ssl: bool = Field(
        default=True, description="Use TLS when the endpoint URL has no scheme."
    )
    s3_prefix: str = Field(default="", description="Key prefix inside the bucket.")

    _store: ObjectStore | None = PrivateAttr(default=None)

    def get_store(self) -> ObjectStore:
        """Return the configured store, built on the first call and reused afterwards.

        Raises:
            ObjectStoreError: The configuration is incomplete (no local root; no S3 bucket).
        """
        if self._store is None:
            self._store = self._build_store()
        return self._store

    def _build_store(self) -> ObjectStore:
        if self.backend == "s3":
            if not self.s3_bucket:
                raise ObjectStoreError("object_store: backend 's3' needs s3_bucket")
            return S3ObjectStore(
                self.s3_bucket,
                endpoint_url=self.s3_endpoint_url,
                region=self.s3_region,
                access_key_id=self.s3_access_key_id,
                secret_access_key=self.s3_secret_access_key,
                use_ssl=self.s3_use_ssl,
                prefix=self.s3_prefix,
            )
        if not self.local_root:
            raise ObjectStoreError(
                "object_store: backend 'local' needs local_root (set WATCH_OBJECT_STORE_ROOT or "
                "DAGSTER_HOME before launch)"
            )
        return LocalObjectStore(Path(self.local_root))
