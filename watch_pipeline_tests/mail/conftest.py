"""Mail test fixtures: a wiretap between the mailer and the loopback SMTP server."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from watch_pipeline_tests.mail.wiretap import Wiretap


@pytest.fixture
def wiretap() -> Iterator[Callable[[str, int], Wiretap]]:
    """``wiretap(host, port)`` taps a server; every tap is closed after the test."""
    taps: list[Wiretap] = []

    def tap(host: str, port: int) -> Wiretap:
        made = Wiretap((host, port))
        taps.append(made)
        return made

    yield tap
    for made in taps:
        made.close()
