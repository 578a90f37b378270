"""What every test shares: the lower poll-interval floor of ``tests/settings.py``, also for subprocesses."""

from __future__ import annotations

import os

from tests.settings import MIN_INTERVAL

os.environ["TRACKCHECK_MIN_INTERVAL"] = MIN_INTERVAL
