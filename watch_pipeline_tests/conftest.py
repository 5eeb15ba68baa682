"""Shared pytest configuration: loopback-server fixtures live in ``fixtures/`` modules."""

import os

# Nothing may download at run time: faster-whisper and huggingface_hub must use bundled files.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

pytest_plugins = [
    "watch_pipeline_tests.fixtures.catalog",
    "watch_pipeline_tests.fixtures.postgres",
    "watch_pipeline_tests.fixtures.s3_server",
    "watch_pipeline_tests.fixtures.smb_server",
    "watch_pipeline_tests.fixtures.smtp_server",
    "watch_pipeline_tests.fixtures.graph_server",
    "watch_pipeline_tests.fixtures.riva_server",
    "watch_pipeline_tests.fixtures.speech",
    "watch_pipeline_tests.fixtures.docker_stack",
    "watch_pipeline_tests.fixtures.http_server",
]
