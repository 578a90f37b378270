"""trackcheck: prove that tracking events arrive, complete and unchanged, in every system of a pipeline.

The public surface is what ``__all__`` lists; everything else is internal and may change. The engine and
plan names are imported on first use, so importing a light module (``trackcheck.errors``) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from trackcheck.errors import (
    ParamError,
    PlanError,
    RunNotFound,
    SourceConnectError,
    SourceError,
    SourceQueryError,
    SourceTimeoutError,
    StoreError,
    TrackcheckError,
)

if TYPE_CHECKING:
    from trackcheck.engine.result import RunResult, StageResult
    from trackcheck.foreground import verify
    from trackcheck.loader import load_plan
    from trackcheck.plan.model import Plan

_LAZY = {
    "RunResult": "trackcheck.engine.result",
    "StageResult": "trackcheck.engine.result",
    "load_plan": "trackcheck.loader",
    "Plan": "trackcheck.plan.model",
    "verify": "trackcheck.foreground",
}

__all__ = [
    "ParamError",
    "Plan",
    "PlanError",
    "RunNotFound",
    "RunResult",
    "SourceConnectError",
    "SourceError",
    "SourceQueryError",
    "SourceTimeoutError",
    "StageResult",
    "StoreError",
    "TrackcheckError",
    "load_plan",
    "verify",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'trackcheck' has no attribute {name!r}")
