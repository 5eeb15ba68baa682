"""The ``media`` partition set: one partition per media content.

A key reads ``<slug of the first file name>-<fingerprint>`` (``reading-a4b6094a…``), so the UI's
partition filter finds a file by its name; media imported before readable keys keep their bare
fingerprint. The fingerprint (imohash) is the identity; the key is opaque
(``watch_pipeline/pipeline/keys.py``).
"""

from __future__ import annotations

import dagster as dg

media = dg.DynamicPartitionsDefinition(name="media")
