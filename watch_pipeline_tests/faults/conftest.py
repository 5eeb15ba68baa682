"""Fault tests share the in-process pipeline fixture of the defs tests."""

from watch_pipeline_tests.defs.harness import env  # noqa: F401
