"""``{name}`` run parameters and ``${NAME}`` environment variables inside plan values.

``${NAME}`` is expanded once, when the plan loads. ``{name}`` is a run parameter: it is rendered into
values that are handed to a source as data (a filter value, an HTTP query parameter, a Redis key), never
into SQL text. A value that is exactly ``"{name}"`` keeps the parameter's type (an integer stays an integer).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from trackcheck.errors import ParamError, PlanError

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_PARAM = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")
_WHOLE_PARAM = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")


def expand_env(value: Any, *, plan: str, path: str = "", environ: Mapping[str, str] | None = None) -> Any:
    """Replace ``${NAME}`` (or ``${NAME:-default}``) in every string of a YAML tree.

    A variable that is unset and has no default is a PlanError naming the variable and where it is used.
    """
    env = os.environ if environ is None else environ
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            raise PlanError(f"environment variable ${{{name}}} is not set", plan=plan, field=path or None)

        return _ENV.sub(substitute, value)
    if isinstance(value, dict):
        return {k: expand_env(v, plan=plan, path=_join(path, str(k)), environ=env) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, plan=plan, path=_item(path, i, v), environ=env) for i, v in enumerate(value)]
    return value


def env_references(value: Any, path: str = "") -> list[tuple[str, str]]:
    """Every ``${NAME}`` in a YAML tree as (where, name): uploaded plans must not hold any."""
    if isinstance(value, str):
        return [(path, m.group(1)) for m in _ENV.finditer(value)]
    if isinstance(value, dict):
        return [ref for k, v in value.items() for ref in env_references(v, _join(path, str(k)))]
    if isinstance(value, list):
        return [ref for i, v in enumerate(value) for ref in env_references(v, _item(path, i, v))]
    return []


def param_names(value: Any) -> set[str]:
    """Every ``{name}`` used anywhere inside a value (strings, lists, dicts)."""
    if isinstance(value, str):
        return {m.group(1) for m in _PARAM.finditer(value) if m.group(1)}
    if isinstance(value, dict):
        return set().union(*(param_names(v) for v in value.values()), *(param_names(k) for k in value))
    if isinstance(value, list):
        return set().union(*(param_names(v) for v in value))
    return set()


def render(value: Any, params: Mapping[str, Any]) -> Any:
    """Fill ``{name}`` placeholders from run parameters; ``{{`` and ``}}`` are literal braces."""
    if isinstance(value, str):
        whole = _WHOLE_PARAM.match(value)
        if whole:
            return _lookup(params, whole.group(1))

        def substitute(match: re.Match[str]) -> str:
            if match.group(0) == "{{":
                return "{"
            if match.group(0) == "}}":
                return "}"
            return str(_lookup(params, match.group(1)))

        return _PARAM.sub(substitute, value)
    if isinstance(value, dict):
        return {render(k, params): render(v, params) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, params) for v in value]
    return value


def _lookup(params: Mapping[str, Any], name: str) -> Any:
    if name not in params:
        raise ParamError(f"run parameter {{{name}}} has no value", parameter=name)
    return params[name]


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _item(path: str, index: int, value: Any) -> str:
    """``stages[1] (warehouse)``: a stage is named as in every other plan error, not by its index only."""
    name = value.get("name") if path == "stages" and isinstance(value, dict) else None
    return f"{path}[{index}]" + (f" ({name})" if isinstance(name, str) else "")
