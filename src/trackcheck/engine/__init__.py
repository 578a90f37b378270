"""The verifier: submits runs, polls one stage group at a time, decides each run's stages, builds results.

When to poll is not its business: that is ``trackcheck.scheduling.Poller``'s.
"""

from trackcheck.engine.core import Engine, PollSummary, RunRequest, store_plan
from trackcheck.engine.result import RunResult, StageResult

__all__ = ["Engine", "PollSummary", "RunRequest", "RunResult", "StageResult", "store_plan"]
