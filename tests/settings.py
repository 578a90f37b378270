"""Settings the tests share: a lower poll-interval floor.

Plans in these tests poll local, in-memory or tmp-folder sources every 100-200 ms so that a run passes
within a second; a deployment's floor is 1 s (``min_interval``). ``tests/conftest.py`` exports
``TRACKCHECK_MIN_INTERVAL`` for subprocesses (``trackcheck run``, ``trackcheck serve``); engines and apps
built in-process are given the same floor explicitly.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from trackcheck.engine.core import PlanSetup
from trackcheck.plan.limits import DEFAULT_LIMITS

MIN_INTERVAL = "100ms"
#: the plan limits of in-process engines of the tests
FAST = replace(DEFAULT_LIMITS, min_interval=timedelta(milliseconds=100))
FAST_SETUP = PlanSetup(limits=FAST)
