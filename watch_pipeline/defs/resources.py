"""The one place where environment variables become resource instances."""

from __future__ import annotations

from typing import Any


def build_resources() -> dict[str, Any]:
    """The resources every asset, sensor and job may ask for, keyed by parameter name."""
    return {}
