"""The in-process pipeline fixture (``env``) of ``defs/harness.py``."""

from watch_pipeline_tests.defs.harness import env  # noqa: F401
