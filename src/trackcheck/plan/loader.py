"""Loading a plan: YAML → ``${ENV}`` expansion → model validation → backend checks, with errors a user can act on.

Every problem becomes one PlanError that names the plan, the stage and the key at fault, e.g.
``plan 'checkout-events', stage 'warehouse', field 'compare.with': 'bi' is a later stage``. Nothing is opened
or connected while loading: a plan can be validated on a laptop that cannot reach the warehouse.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from trackcheck.errors import ParamError, PlanError
from trackcheck.plan.model import EXPECT, Plan
from trackcheck.plan.templates import expand_env

_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
}


def load_plan(path: str | Path) -> Plan:
    """Read, expand and validate the plan file at ``path``; relative files in it are relative to it."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise PlanError(f"cannot read plan file: {exc.strerror or exc}", plan=str(path)) from exc
    return load_plan_text(text, origin=str(path), base_dir=file.resolve().parent)


def load_plan_text(text: str, *, origin: str = "<plan>", base_dir: Path | None = None) -> Plan:
    """Validate plan YAML given as text (the API stores plans this way); ``origin`` names it in errors."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        raise PlanError(f"not valid YAML{line}: {getattr(exc, 'problem', exc)}", plan=origin) from exc
    if not isinstance(raw, dict):
        raise PlanError("a plan is a YAML mapping with name, key, sources and stages", plan=origin)
    name = str(raw.get("name") or origin)
    raw = expand_env(raw, plan=name)
    _resolve_files(raw, base_dir or Path.cwd())
    try:
        plan = Plan.model_validate(raw)
    except ValidationError as exc:
        raise _plan_error(exc, raw, name) from None
    _check_backends(plan)
    _check_schemas(plan)
    return plan


def resolve_params(plan: Plan, given: Mapping[str, Any]) -> dict[str, Any]:
    """Check run parameters against ``params:`` and convert them to their declared types.

    Strings (from the CLI's ``-p k=v``) are converted; JSON values (from the API) must already be of the
    type. Unknown, missing or ill-typed parameters raise a ParamError naming the parameter.
    """
    unknown = sorted(set(given) - set(plan.params))
    if unknown:
        declared = ", ".join(sorted(plan.params)) or "none"
        raise ParamError(f"unknown run parameter (declared: {declared})", plan=plan.name, parameter=unknown[0])
    resolved: dict[str, Any] = {}
    for name, spec in plan.params.items():
        if name in given and given[name] is not None:
            resolved[name] = _convert(plan.name, name, spec.type, given[name])
        elif spec.default is not None:
            resolved[name] = spec.default
        elif spec.required:
            raise ParamError("required run parameter is missing", plan=plan.name, parameter=name)
    return resolved


def check_expect(plan: Plan, expect: list[dict[str, Any]]) -> None:
    """A run whose stages compare with ``expect`` needs expected events, each carrying the key fields."""
    if any(stage.reference == EXPECT for stage in plan.stages) and not expect:
        raise ParamError(
            "a stage compares with 'expect', but neither the plan nor the run gives any events",
            plan=plan.name,
            parameter="expect",
        )
    for index, event in enumerate(expect):
        if not isinstance(event, dict):
            raise ParamError(f"expect[{index}] is not an object", plan=plan.name, parameter="expect")
        missing = [k for k in plan.key if event.get(k) is None]
        if missing:
            raise ParamError(
                f"expect[{index}] has no value for key field {missing[0]!r}",
                plan=plan.name,
                parameter="expect",
            )


def _convert(plan: str, name: str, kind: str, value: Any) -> Any:
    if isinstance(value, str) and kind != "string":
        try:
            if kind == "integer":
                return int(value)
            if kind == "number":
                return float(value)
            if value.lower() in {"true", "false", "1", "0", "yes", "no"}:
                return value.lower() in {"true", "1", "yes"}
        except ValueError:
            pass
        raise ParamError(f"{value!r} is not a{'n' if kind == 'integer' else ''} {kind}", plan=plan, parameter=name)
    if kind == "string" and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, _TYPES[kind]) or (kind != "boolean" and isinstance(value, bool)):
        raise ParamError(f"expected a {kind}, got {type(value).__name__}", plan=plan, parameter=name)
    return value


def _resolve_files(raw: dict[str, Any], base: Path) -> None:
    """Make the plan's relative file paths (file sources, schemas) relative to the plan's folder."""

    def absolute(value: Any) -> Any:
        if not isinstance(value, str):
            return value
        path = Path(value).expanduser()  # ~/logs/... means the home folder, not <plan folder>/~/logs
        return str(path if path.is_absolute() else base / path)

    for spec in (raw.get("sources") or {}).values():
        if isinstance(spec, dict) and spec.get("type") == "file" and "path" in spec:
            spec["path"] = absolute(spec["path"])
    for stage in raw.get("stages") or []:
        if not isinstance(stage, dict):
            continue
        schema = stage.get("schema")
        if isinstance(schema, str):
            stage["schema"] = absolute(schema)
        elif isinstance(schema, dict) and isinstance(schema.get("files"), dict):
            schema["files"] = {k: absolute(v) for k, v in schema["files"].items()}
        if isinstance(stage.get("path"), str):
            stage["path"] = absolute(stage["path"])


def _plan_error(exc: ValidationError, raw: dict[str, Any], name: str) -> PlanError:
    lines = []
    stage_name: str | None = None
    for issue in exc.errors():
        loc = list(issue["loc"])
        message = issue["msg"].removeprefix("Value error, ")
        if issue["type"] == "extra_forbidden":
            message = "unknown key (check the spelling; see docs/plans.md)"
        elif issue["type"] == "missing":
            message = "this key is required"
        if len(loc) >= 2 and loc[0] == "stages" and isinstance(loc[1], int):
            stages = raw.get("stages") or []
            entry = stages[loc[1]] if loc[1] < len(stages) else None
            stage_name = entry.get("name") if isinstance(entry, dict) else None
            head = f"stages[{loc[1]}]" + (f" ({stage_name})" if stage_name else "")
            path = ".".join([head, *(str(p) for p in loc[2:])])
        else:
            path = ".".join(str(p) for p in loc)
        lines.append(f"{path}: {message}" if path else message)
    single = len(lines) == 1
    return PlanError(
        lines[0] if single else "\n  " + "\n  ".join(lines), plan=name, stage=stage_name if single else None
    )


def _check_backends(plan: Plan) -> None:
    from trackcheck.sources import build_source

    built = {name: build_source(name, spec, plan=plan.name) for name, spec in plan.sources.items()}
    for stage in plan.stages:
        source = built[stage.source]
        problem = source.check_stage(stage) or source.check_read(stage)
        if problem:
            raise PlanError(problem, plan=plan.name, stage=stage.name)


def _check_schemas(plan: Plan) -> None:
    from jsonschema import SchemaError, validators

    for stage in plan.stages:
        spec = stage.schema_
        files = [spec] if isinstance(spec, str) else list(spec.files.values()) if spec else []
        for file in files:
            try:
                schema = json.loads(Path(file).read_text(encoding="utf-8"))
                validators.validator_for(schema).check_schema(schema)
            except OSError as exc:
                raise PlanError(
                    f"cannot read schema file {file}: {exc.strerror}",
                    plan=plan.name,
                    stage=stage.name,
                    field="schema",
                ) from exc
            except (ValueError, SchemaError) as exc:
                message = getattr(exc, "message", str(exc))
                raise PlanError(
                    f"{file} is not a JSON Schema: {message}",
                    plan=plan.name,
                    stage=stage.name,
                    field="schema",
                ) from exc
