"""The ``media`` partition set: one partition per media fingerprint (imohash)."""

from __future__ import annotations

import dagster as dg

media = dg.DynamicPartitionsDefinition(name="media")
