"""Waiting in tests for what a background thread (a poller, a capture loop) does, with a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable


def eventually(condition: Callable[[], bool], failure: str, timeout: float = 5.0) -> None:
    """Return once ``condition()`` holds; fail with ``failure`` if it does not within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, failure
        time.sleep(0.02)
