"""Plans: the YAML format (model), loading it with clear errors (loader), durations and templates."""

from trackcheck.plan.loader import load_plan, load_plan_text, resolve_params
from trackcheck.plan.model import Plan, StageSpec

__all__ = ["Plan", "StageSpec", "load_plan", "load_plan_text", "resolve_params"]
