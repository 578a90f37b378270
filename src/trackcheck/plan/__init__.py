"""Plans: the YAML format (model), its limits, durations, templates and masking. Loading plan text into a
checked ``Plan`` is ``trackcheck.loader``'s: it checks each source with its backend, which sits above this layer."""

from trackcheck.plan.limits import DEFAULT_LIMITS, PlanLimits
from trackcheck.plan.model import Plan, StageSpec

__all__ = ["DEFAULT_LIMITS", "Plan", "PlanLimits", "StageSpec"]
