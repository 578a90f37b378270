"""The polling engine: groups of runs, one query per stage per tick, stage outcomes, run results."""

from trackcheck.engine.core import Engine, store_plan
from trackcheck.engine.result import RunResult, StageResult

__all__ = ["Engine", "RunResult", "StageResult", "store_plan"]
