"""The in-process pipeline fixture lives in harness.py beside its helpers."""

from watch_pipeline_tests.defs.harness import env  # noqa: F401
