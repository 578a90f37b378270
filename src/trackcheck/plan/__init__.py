"""Plans: the YAML format (model), loading it with clear errors (loader), its limits, durations and templates."""

from trackcheck.plan.limits import DEFAULT_LIMITS, PlanLimits
from trackcheck.plan.loader import load_plan, load_plan_text, missing_params, resolve_params
from trackcheck.plan.model import Plan, StageSpec

__all__ = [
    "DEFAULT_LIMITS",
    "Plan",
    "PlanLimits",
    "StageSpec",
    "load_plan",
    "load_plan_text",
    "missing_params",
    "resolve_params",
]
