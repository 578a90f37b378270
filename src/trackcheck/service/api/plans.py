"""Plans: listing, reading a version (its YAML masked), storing a new version, retiring a plan."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from flask import Request, Response, jsonify
from flask_openapi3 import Tag

from trackcheck.engine.core import store_plan
from trackcheck.errors import ConfigError, PlanError
from trackcheck.loader import load_plan_text
from trackcheck.plan.masking import mask_plan_text
from trackcheck.plan.safe_yaml import parse_yaml
from trackcheck.service.api.blueprint import PREFIX, answers, bp, iso, log
from trackcheck.service.api.errors import fail
from trackcheck.service.api.models import Plan, PlanList, PlanPath, PlanQuery, PlanSaved, PlanYaml
from trackcheck.service.app import current_service
from trackcheck.store.models import PlanVersion

YAML_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml", "text/plain"})

TAGS = [Tag(name="plans", description="Plans and their versions (YAML)")]


def _plan_outline(text: str) -> dict[str, Any]:
    """Description and stage names, read from the stored YAML without expanding ``${ENV}``: listing plans
    must not depend on this process's environment."""
    try:
        raw = parse_yaml(text)
    except PlanError:
        raw = None
    raw = raw if isinstance(raw, dict) else {}
    stages = raw.get("stages")
    stages = stages if isinstance(stages, list) else []
    description = raw.get("description")
    return {
        "description": description if isinstance(description, str) else None,
        "stages": [str(s["name"]) for s in stages if isinstance(s, dict) and "name" in s],
    }


def _plan_summary(version: PlanVersion) -> dict[str, Any]:
    return {
        "name": version.name,
        "version": version.version,
        **_plan_outline(version.text),
        "created_at": iso(version.created_at),
    }


def latest_plan(name: str) -> PlanVersion:
    version = current_service().engine.store.latest_plan(name)
    if version is None:
        fail(404, "not_found", f"no plan named {name!r} (GET /api/plans lists them; PUT /api/plans/<name> adds one)")
    return version


@bp.get("/plans", tags=TAGS, summary="The latest version of every plan", responses=answers({200: PlanList}))
def list_plans() -> Any:
    return jsonify({"plans": [_plan_summary(v) for v in current_service().engine.store.latest_plans()]})


@bp.get(
    "/plans/<name>",
    tags=TAGS,
    summary="A plan's YAML (latest or ?version=N) and its version list",
    responses=answers({200: Plan}, 404),
)
def get_plan(path: PlanPath, query: PlanQuery) -> Any:
    """The latest version (or ``?version=N``) with its YAML, secrets masked, and every version's number."""
    name = path.name
    store = current_service().engine.store
    latest = latest_plan(name)
    history = store.plan_history(name)
    wanted = query.version or latest.version
    version = next((v for v in history if v.version == wanted), None)
    if version is None:
        fail(404, "not_found", f"plan {name!r} has no version {wanted} (latest: {latest.version})")
    return jsonify(
        _plan_summary(version)
        | {
            "text": mask_plan_text(version.text),
            "versions": [{"version": v.version, "created_at": iso(v.created_at)} for v in history],
        }
    )


def _plans_base_dir() -> str | None:
    """Relative paths of an uploaded plan resolve like those of the plans folder (same base: same version)."""
    folder = current_service().config.plans
    return str(folder.resolve()) if folder is not None else None


def _yaml_body(request: Request) -> str:
    if request.mimetype not in YAML_TYPES:
        fail(415, "unsupported_media_type", "send the plan YAML with 'Content-Type: application/yaml'")
    raw = request.get_data(cache=True)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        fail(400, "bad_request", "the plan is not UTF-8 text")
    if not text.strip():
        fail(400, "invalid_plan", "the body is empty: send the plan YAML")
    return text


@bp.put(
    "/plans/<name>",
    tags=TAGS,
    summary="Store a plan version (validated; the YAML's name must equal the URL's)",
    responses=answers({201: PlanSaved, 200: PlanSaved}, 409, 413, 415),
)
def put_plan(path: PlanPath, raw: PlanYaml) -> Any:
    """Validate and store a plan version: 201 when it is new, 200 when the text is unchanged."""
    name = path.name
    text, base_dir = _yaml_body(raw), _plans_base_dir()
    engine = current_service().engine
    # a plan sent over the API is data: loaded under the rules for uploads (no ${ENV}, connections only)
    plan = load_plan_text(
        text,
        origin=name,
        base_dir=None if base_dir is None else Path(base_dir),
        connections=engine.connections,
        trust=engine.setup.uploads,
        limits=engine.setup.limits,
    )
    if plan.name != name:
        fail(400, "invalid_plan", f"the plan is named {plan.name!r} but the URL says {name!r}: they must match")
    before = engine.store.latest_plan(name)
    try:
        version_id, _ = store_plan(engine, text, origin=name, base_dir=base_dir, trusted=False)
    except ConfigError as exc:  # literal secrets, and no key to encrypt them with
        fail(409, "secret_key_required", f"{exc.message}; or move the secrets into a connection")
    version = engine.store.plan_version(version_id)
    created = before is None or before.id != version_id
    if created:
        log.info("plan %s version %d stored through the API", name, version.version)
    response = jsonify(_plan_summary(version) | {"created": created})
    response.status_code = 201 if created else 200
    response.headers["Location"] = f"{PREFIX}/plans/{quote(name, safe='')}?version={version.version}"
    return response


@bp.delete(
    "/plans/<name>", tags=TAGS, summary="Delete a plan (runs keep their version)", responses=answers({204: None}, 404)
)
def delete_plan(path: PlanPath) -> Any:
    """Retire the plan: no new runs or reruns; runs keep the version they started with."""
    name = path.name
    if not current_service().engine.store.delete_plan(name):
        fail(404, "not_found", f"no plan named {name!r}")
    log.info("plan %s deleted through the API", name)
    return Response(status=204)
