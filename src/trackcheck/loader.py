"""Loading a plan: YAML → ``${ENV}`` expansion → model validation → backend checks, with errors a user can act on.

Every problem becomes one PlanError that names the plan, the stage and the key at fault, e.g.
``plan 'checkout-events', stage 'warehouse', field 'compare.with': 'bi' is a later stage``. Nothing is opened
or connected while loading: a plan can be validated on a laptop that cannot reach the warehouse. Text, YAML
structure, names and settings are held to ``PlanLimits`` (``plan/limits.py``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from trackcheck.errors import ParamError, PlanError
from trackcheck.plan.limits import DEFAULT_LIMITS, PlanLimits
from trackcheck.plan.model import EXPECT, Plan
from trackcheck.plan.names import check_plan_name
from trackcheck.plan.safe_yaml import parse_yaml
from trackcheck.plan.templates import env_references, expand_env, param_names, printable
from trackcheck.plan.trust import TRUSTED, Trust

_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
}


def load_plan(
    path: str | Path,
    *,
    connections: Mapping[str, Mapping[str, Any]] | None = None,
    trust: Trust = TRUSTED,
    limits: PlanLimits = DEFAULT_LIMITS,
) -> Plan:
    """Read, expand and validate the plan file at ``path``; relative files in it are relative to it."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise PlanError(f"cannot read plan file: {exc.strerror or exc}", plan=str(path)) from exc
    except UnicodeDecodeError as exc:
        raise PlanError(f"the plan file is not UTF-8 text (byte {exc.start})", plan=str(path)) from exc
    return load_plan_text(
        text, origin=str(path), base_dir=file.resolve().parent, connections=connections, trust=trust, limits=limits
    )


def load_plan_text(
    text: str,
    *,
    origin: str = "<plan>",
    base_dir: Path | None = None,
    connections: Mapping[str, Mapping[str, Any]] | None = None,
    trust: Trust = TRUSTED,
    limits: PlanLimits = DEFAULT_LIMITS,
) -> Plan:
    """Validate plan YAML given as text (the API stores plans this way); ``origin`` names it in errors.

    ``connections`` are the systems a source may name with ``connection:``; ``trust`` says whether the plan
    is the operator's own (``${ENV}`` expanded, anything inline) or was uploaded (see ``plan/trust.py``);
    ``limits`` bound its size, YAML structure, names and settings (see ``plan/limits.py``).
    """
    raw = parse_yaml(text, limits=limits, origin=origin)
    if not isinstance(raw, dict):
        raise PlanError("a plan is a YAML mapping with name, key, sources and stages", plan=origin)
    name = _display_name(raw.get("name"), origin, limits)
    if trust.uploaded:
        references = env_references(raw)
        if references:
            where, variable = references[0]
            raise PlanError(
                f"${{{variable}}} is not expanded in a plan sent to the service (the service's environment is "
                "not the plan's to read): name a connection, which the operator defines with its secrets",
                plan=name,
                field=where or None,
            )
    else:
        raw = expand_env(raw, plan=name)
    linked = _use_connections(raw, name, connections or {}, trust)
    _resolve_files(raw, base_dir or Path.cwd(), linked, trust, name)
    try:
        plan = Plan.model_validate(raw, context={"limits": limits})
    except ValidationError as exc:
        raise _plan_error(exc, raw, name) from None
    _check_backends(plan, limits)
    if trust.uploaded:
        _check_reach(plan, trust)
    _check_schemas(plan)
    return plan


def resolve_params(plan: Plan, given: Mapping[str, Any]) -> dict[str, Any]:
    """Check run parameters against ``params:`` and convert them to their declared types.

    Strings (from the CLI's ``-p k=v``) are converted; JSON values (from the API) must already be of the
    type. Unknown, missing or ill-typed parameters raise a ParamError naming the parameter, and so does an
    optional parameter without a value that a stage renders (``missing_params``), naming that stage too:
    the run is refused now rather than failing when it reaches that stage.
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
    missing = missing_params(plan, resolved)
    if missing:
        stage, parameter = missing[0]
        key = next(k for k, v in plan.templates(plan.stage(stage)).items() if parameter in param_names(v))
        raise ParamError(
            f"run parameter {{{parameter}}} has no value, and this stage uses it in {key}: "
            "give it a value (or the parameter a default)",
            plan=plan.name,
            stage=stage,
            parameter=parameter,
        )
    return resolved


def missing_params(plan: Plan, resolved: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(stage name, parameter) for every ``{parameter}`` a stage renders that ``resolved`` gives no value,
    in stage order: such a run would pass its first stages and then fail when it reaches that one."""
    return [(stage, parameter) for stage, parameter in plan.rendered_params() if parameter not in resolved]


def check_expect(plan: Plan, expect: list[dict[str, Any]]) -> None:
    """A run whose stages compare with ``expect``, or that emits, needs expected events, each carrying the
    key fields (or getting them from ``emit.stamp``)."""
    if any(stage.reference == EXPECT for stage in plan.stages) and not expect:
        raise ParamError(
            "a stage compares with 'expect', but neither the plan nor the run gives any events",
            plan=plan.name,
            parameter="expect",
        )
    if plan.emit is not None and not expect:
        raise ParamError(
            "emit: sends the run's expect events, but neither the plan nor the run gives any",
            plan=plan.name,
            parameter="expect",
        )
    stamped = set(plan.emit.stamp) if plan.emit is not None else set()
    for index, event in enumerate(expect):
        if not isinstance(event, dict):
            raise ParamError(f"expect[{index}] is not an object", plan=plan.name, parameter="expect")
        missing = [k for k in plan.key if event.get(k) is None and k not in stamped]
        if missing:
            raise ParamError(
                f"expect[{index}] has no value for key field {missing[0]!r}",
                plan=plan.name,
                parameter="expect",
            )
        for field, value in event.items():
            if not _finite(value):
                raise ParamError(
                    f"expect[{index}].{printable(field)}: NaN and Infinity are not JSON numbers, and no state "
                    "database stores them",
                    plan=plan.name,
                    parameter="expect",
                )


def _finite(value: Any) -> bool:
    """No NaN or Infinity anywhere in ``value``: JSON has neither (PostgreSQL and MariaDB refuse them)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return True


def _display_name(value: Any, origin: str, limits: PlanLimits) -> str:
    """The plan's name for error messages: as written when it is a valid name, else shortened and with
    its control characters escaped (the model then says what is wrong with it)."""
    if not isinstance(value, str) or not value:
        return origin
    try:
        return check_plan_name(value, limits)
    except ValueError:
        return printable(value)


def _convert(plan: str, name: str, kind: str, value: Any) -> Any:
    if isinstance(value, str) and kind != "string":
        try:
            if kind == "integer":
                return int(value)
            if kind == "number" and math.isfinite(float(value)):
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
    if not _finite(value):
        raise ParamError(f"{value!r} is not a JSON number (no NaN or Infinity)", plan=plan, parameter=name)
    return value


def _use_connections(
    raw: dict[str, Any], plan: str, connections: Mapping[str, Mapping[str, Any]], trust: Trust
) -> set[str]:
    """Replace each ``{connection: NAME}`` source by the connection's type and options; the names of the
    sources that use one. An uploaded plan's other sources are refused unless inline sources are allowed."""
    sources = raw.get("sources")
    if not isinstance(sources, dict):
        return set()
    linked: set[str] = set()
    for name, spec in sources.items():
        field = f"sources.{name}"
        if isinstance(spec, dict) and "connection" in spec:
            connection = spec["connection"]
            if set(spec) != {"connection"}:
                extra = sorted(set(spec) - {"connection"})[0]
                raise PlanError(
                    f"a source that names a connection has no other keys ({extra!r} belongs in the connection)",
                    plan=plan,
                    field=f"{field}.{extra}",
                )
            # one lookup (a connection defined over the API is a read of the state database)
            options = connections.get(connection) if isinstance(connection, str) else None
            if options is None:
                known = ", ".join(sorted(connections)) or "none defined"
                raise PlanError(f"unknown connection {connection!r} (connections: {known})", plan=plan, field=field)
            sources[name] = {**options, "connection": connection}
            linked.add(str(name))
        elif trust.uploaded and not trust.allow_inline_sources:
            known = ", ".join(sorted(connections)) or "none defined yet"
            raise PlanError(
                "a plan sent to the service reads systems through connections: write 'connection: NAME' "
                f"(connections: {known}); the operator can allow inline sources with allow_inline_sources",
                plan=plan,
                field=field,
            )
    return linked


def _resolve_files(raw: dict[str, Any], base: Path, linked: set[str], trust: Trust, plan: str) -> None:
    """Make the plan's relative file paths (file sources, schemas) relative to the plan's folder.

    Paths of a source that uses a connection stay as written: they are relative to the connection's root.
    An uploaded plan's schema files must be inside the service's plans folder."""

    def absolute(value: Any) -> Any:
        if not isinstance(value, str) or (value.startswith("{") and not value.startswith("{{")):
            return value  # "{data_dir}/x.jsonl": the run parameter says where; it is no path of the plan's folder
        path = Path(value).expanduser()  # ~/logs/... means the home folder, not <plan folder>/~/logs
        return str(path if path.is_absolute() else base / path)

    def schema_file(value: Any, field: str) -> Any:
        if not isinstance(value, str) or not trust.uploaded:
            return absolute(value)
        root = trust.files_root
        if root is None:
            raise PlanError(
                "a plan sent to the service can only name schema files of the service's plans folder, and it "
                "has none (serve --plans)",
                plan=plan,
                field=field,
            )
        path = Path(value)
        inside = os.path.realpath(root / path)
        if path.is_absolute() or ".." in path.parts or not inside.startswith(os.path.realpath(root) + os.sep):
            raise PlanError(
                f"{value!r} is not inside the plans folder: name schema files relative to it", plan=plan, field=field
            )
        return inside

    sources = raw.get("sources") or {}
    # a source with a root (every connection of files has one) keeps its paths relative to that root
    rooted = {str(n) for n, spec in sources.items() if n in linked or (isinstance(spec, dict) and "root" in spec)}
    for name, spec in sources.items():
        if isinstance(spec, dict) and spec.get("type") == "file" and "path" in spec and name not in rooted:
            spec["path"] = absolute(spec["path"])
    for index, stage in enumerate(raw.get("stages") or []):
        if not isinstance(stage, dict):
            continue
        where = f"stages[{index}]" + (f" ({printable(stage['name'])})" if isinstance(stage.get("name"), str) else "")
        schema = stage.get("schema")
        if isinstance(schema, str):
            stage["schema"] = schema_file(schema, f"{where}.schema")
        elif isinstance(schema, dict) and isinstance(schema.get("files"), dict):
            schema["files"] = {k: schema_file(v, f"{where}.schema.files.{k}") for k, v in schema["files"].items()}
        if isinstance(stage.get("path"), str) and stage.get("source") not in rooted:
            stage["path"] = absolute(stage["path"])


def _plan_error(exc: ValidationError, raw: dict[str, Any], name: str) -> PlanError:
    lines = []
    stage_name: str | None = None
    # a top-level emit: is validated as itself and as the first stage it adds (Plan._emit_stage): said once,
    # and the stages the user wrote keep their numbers
    added = 1 if isinstance(raw.get("emit"), dict) and isinstance(raw.get("stages"), list) else 0
    for issue in exc.errors():
        loc = list(issue["loc"])
        if added and len(loc) >= 2 and loc[0] == "stages" and isinstance(loc[1], int):
            if loc[1] == 0:
                continue
            loc[1] -= 1
        message = issue["msg"].removeprefix("Value error, ")
        if issue["type"] == "extra_forbidden":
            message = "unknown key (check the spelling; see docs/plans.md)"
        elif issue["type"] == "missing":
            message = "this key is required"
        if len(loc) >= 2 and loc[0] == "stages" and isinstance(loc[1], int):
            stages = raw.get("stages") or []
            entry = stages[loc[1]] if loc[1] < len(stages) else None
            written = entry.get("name") if isinstance(entry, dict) else None
            stage_name = printable(written) if isinstance(written, str) and written else None
            head = f"stages[{loc[1]}]" + (f" ({stage_name})" if stage_name else "")
            path = ".".join([head, *(printable(p) for p in loc[2:])])
        else:
            path = ".".join(printable(p) for p in loc)
        lines.append(f"{path}: {message}" if path else message)
    single = len(lines) == 1
    return PlanError(
        lines[0] if single else "\n  " + "\n  ".join(lines), plan=name, stage=stage_name if single else None
    )


def _check_backends(plan: Plan, limits: PlanLimits) -> None:
    """Each source's options and each stage's keys, validated by the backend that reads them."""
    from trackcheck.sources import build_source
    from trackcheck.sources.emitting import emit_problem

    built = {name: build_source(name, spec, plan=plan.name) for name, spec in plan.sources.items()}
    plan.bind_reads(lambda name: built[name].read_model, limits)
    for stage in plan.stages:
        source = built[stage.source]
        problem = source.check_stage(stage) or source.check_read(stage)
        if stage.emit is not None:
            problem = emit_problem(source, stage.emit)
        if problem:
            raise PlanError(problem, plan=plan.name, stage=stage.name)


def _check_reach(plan: Plan, trust: Trust) -> None:
    """What an uploaded plan defines inline (when allowed) must not reach inside: no loopback, link-local or
    private host unless the operator allows it, and never the service's own state database."""
    from trackcheck.sources import build_source
    from trackcheck.sources.network import check_hosts, refusal

    for name, spec in plan.sources.items():
        if spec.connection is not None:
            continue
        source = build_source(name, spec, plan=plan.name)
        if "connect_args" in spec.options:  # driver flags could turn the read-only layers off
            raise PlanError(
                "connect_args is for the operator's connections, not for a plan sent to the service",
                plan=plan.name,
                field=f"sources.{name}.connect_args",
            )
        if trust.state_db is not None and _same_database(spec.options.get("url"), trust.state_db):
            raise PlanError("this is the service's own state database", plan=plan.name, field=f"sources.{name}.url")
        if not trust.allow_private_networks:
            problem = check_hosts(source, allow_private=False)
            if problem:
                raise PlanError(problem, plan=plan.name, field=f"sources.{name}")
    if plan.notify is not None and not trust.allow_private_networks:
        host = urlsplit(plan.notify.webhook).hostname or ""
        problem = refusal(host, allow_private=False)
        if problem:
            raise PlanError(problem, plan=plan.name, field="notify.webhook")


def _same_database(url: Any, state_db: str) -> bool:
    """Whether a source URL names the state database (the same SQLite file, or server and database)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    if not isinstance(url, str):
        return False
    try:
        a, b = make_url(url), make_url(state_db)
    except (ArgumentError, ValueError):
        return False
    if a.get_backend_name() != b.get_backend_name():
        return False
    if a.get_backend_name() == "sqlite":
        return bool(a.database and b.database) and os.path.realpath(str(a.database).removeprefix("file:")) == (
            os.path.realpath(str(b.database))
        )
    return (a.host, a.port, a.database) == (b.host, b.port, b.database)


def _check_schemas(plan: Plan) -> None:
    for stage in plan.stages:
        spec = stage.schema_
        files = [spec] if isinstance(spec, str) else list(spec.files.values()) if spec else []
        if not files:
            continue
        # imported only for a plan with schemas: importing jsonschema takes ~0.8 CPU s, which every start of
        # a poller would otherwise pay for its first plan (benchmark B1 saw it as scheduler work)
        from jsonschema import SchemaError, validators

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
