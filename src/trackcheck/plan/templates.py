"""``{name}`` run parameters and ``${NAME}`` environment variables inside plan values.

``${NAME}`` is expanded once, when the plan loads. ``{name}`` is a run parameter: it is rendered into
values that are handed to a source as data (a filter value, an HTTP query parameter, a Redis key), never
into SQL text. A value that is exactly ``"{name}"`` keeps the parameter's type (an integer stays an integer).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from trackcheck.errors import ParamError, PlanError

if TYPE_CHECKING:
    from trackcheck.plan.model import StageSpec

#: the keys of an ``emit:`` that say where a bus publishes, each of which may hold ``{param}``
BUS_KEYS = ("topic", "stream", "subject", "exchange", "routing_key")
#: the run's own placeholders an ``emit.stamp`` may use besides its parameters: an id per event, the run's id
EMIT_PLACEHOLDERS = ("uuid", "run_id")
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


def stage_templates(stage: StageSpec, *, where: bool = True) -> dict[str, Any]:
    """The values of ``stage``'s own plan keys rendered with a run's parameters, by the key they are at.

    With its backend's (``ReadSpec.templates``: a file ``path``, an HTTP ``request``, a Redis ``key``, a bus
    ``topic``...; ``Plan.templates`` joins the two), this is the one list of what may hold ``{param}``: the
    loader (undeclared parameters), run submission (parameters without a value) and batching (runs sharing
    one fetch) all read it:

    - ``where``: rendered when the stage becomes active (left out with ``where=False``: batching keeps
      runs with different ``where`` values together);
    - ``emit.path``, ``emit.<bus key>`` and ``emit.stamp`` (less its own ``{uuid}`` and ``{run_id}``) of the
      stage a plan's ``emit:`` adds.

    Keys a stage leaves unset are absent.
    """
    found: dict[str, Any] = {}
    if where and stage.where:
        found["where"] = stage.where
    if stage.emit is not None:
        for name in ("path", *BUS_KEYS):
            if getattr(stage.emit, name) is not None:
                found[f"emit.{name}"] = getattr(stage.emit, name)
        # {uuid} and {run_id} are the emit's own, filled per event and run, never run parameters
        found["emit.stamp"] = _without(stage.emit.stamp, EMIT_PLACEHOLDERS)
    return found


def _without(value: Any, names: tuple[str, ...]) -> Any:
    """``value`` with the ``{name}`` placeholders of ``names`` taken out of every string."""
    if isinstance(value, str):
        for name in names:
            value = value.replace("{" + name + "}", "")
        return value
    if isinstance(value, dict):
        return {k: _without(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [_without(v, names) for v in value]
    return value


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


def printable(value: object, limit: int = 80) -> str:
    """Plan text (a name, a key) as it may appear in a message: control characters escaped, so that it
    cannot forge a log line, and cut after ``limit`` characters."""
    text = str(value)
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[:limit])
    return shown + ("…" if len(text) > limit else "")


def _join(path: str, key: str) -> str:
    return f"{path}.{printable(key)}" if path else printable(key)


def _item(path: str, index: int, value: Any) -> str:
    """``stages[1] (warehouse)``: a stage is named as in every other plan error, not by its index only."""
    name = value.get("name") if path == "stages" and isinstance(value, dict) else None
    return f"{path}[{index}]" + (f" ({printable(name)})" if isinstance(name, str) else "")
