"""Connections over the API (admin only): the systems plans may name, with write-only secrets.

Answers show each connection's options with its secrets masked (``***``); a client may send a document it
read back unchanged (``PUT`` after ``GET``): every ``***`` keeps the stored secret. Connections of
trackcheck.toml are listed (``origin: config``) but changed only in that file.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from flask import Response, jsonify
from flask_openapi3 import Tag

from trackcheck.errors import ConfigError, PlanError
from trackcheck.plan.safe_yaml import parse_yaml
from trackcheck.service.api.blueprint import PREFIX, answers, bp, log
from trackcheck.service.api.errors import fail
from trackcheck.service.api.models import (
    Connection,
    ConnectionList,
    ConnectionPath,
    ConnectionRequest,
    ForceQuery,
    NewConnection,
)
from trackcheck.service.app import current_service

TAGS = [Tag(name="connections", description="The systems plans may name (admin only; secrets write-only)")]


def _document(name: str) -> dict[str, Any]:
    info = current_service().engine.connections.info(name)
    if info is None:
        fail(404, "not_found", f"no connection named {name!r} (GET /api/connections lists them)")
    return info.to_dict()


def _spec(body: ConnectionRequest) -> dict[str, Any]:
    options = body.options or {}
    if "type" in options:
        fail(400, "invalid_connection", "options.type: give the type once, as 'type' beside 'options'")
    return {"type": body.type, **options}


def _save(name: str, body: ConnectionRequest) -> bool:
    try:
        return current_service().engine.connections.save(name, _spec(body))
    except PlanError as exc:
        fail(400, "invalid_connection", str(exc))
    except ConfigError as exc:
        code = "secret_key_required" if exc.context.get("field") == "secret_key" else "conflict"
        fail(409, code, exc.message)


@bp.get(
    "/connections",
    tags=TAGS,
    summary="Every connection, secrets masked (admin)",
    responses=answers({200: ConnectionList}),
)
def list_connections() -> Any:
    shown = current_service().engine.connections.describe()
    return jsonify({"connections": [c.to_dict() for c in shown]})


@bp.post(
    "/connections",
    tags=TAGS,
    summary="Define a connection (admin); secrets are stored encrypted and never shown again",
    responses=answers({201: Connection}, 409, 413, 415),
)
def create_connection(body: NewConnection) -> Any:
    name = body.name
    if current_service().engine.connections.info(name) is not None:
        fail(409, "conflict", f"connection {name!r} exists: PUT {PREFIX}/connections/{name} replaces it")
    _save(name, body)
    log.info("connection %s created through the API", name)
    response = jsonify(_document(name))
    response.status_code = 201
    response.headers["Location"] = f"{PREFIX}/connections/{quote(name, safe='')}"
    return response


@bp.get(
    "/connections/<name>",
    tags=TAGS,
    summary="A connection, secrets masked (admin)",
    responses=answers({200: Connection}, 404),
)
def get_connection(path: ConnectionPath) -> Any:
    return jsonify(_document(path.name))


@bp.put(
    "/connections/<name>",
    tags=TAGS,
    summary="Create or replace a connection (admin); '***' keeps the stored secret at that place",
    responses=answers({201: Connection, 200: Connection}, 409, 413, 415),
)
def put_connection(path: ConnectionPath, body: ConnectionRequest) -> Any:
    name = path.name
    if body.name not in (None, name):
        fail(400, "invalid_connection", f"the body names {body.name!r} but the URL says {name!r}")
    created = _save(name, body)
    log.info("connection %s %s through the API", name, "created" if created else "replaced")
    response = jsonify(_document(name))
    response.status_code = 201 if created else 200
    return response


@bp.delete(
    "/connections/<name>",
    tags=TAGS,
    summary="Delete a connection (admin); 409 while a plan uses it, unless ?force=true",
    responses=answers({204: None}, 404, 409),
)
def delete_connection(path: ConnectionPath, query: ForceQuery) -> Any:
    """Remove a connection; 409 while a plan's latest version uses it, unless ``?force=true``."""
    name = path.name
    _document(name)
    users = plans_using(name)
    if users and not query.force:
        fail(409, "conflict", f"plans {', '.join(users)} use connection {name!r}: change them or add ?force=true")
    try:
        current_service().engine.connections.delete(name)
    except ConfigError as exc:
        fail(409, "conflict", exc.message)
    log.info("connection %s deleted through the API", name)
    return Response(status=204)


def plans_using(name: str) -> list[str]:
    """The plans whose latest version names connection ``name`` in a source."""
    users = []
    for version in current_service().engine.store.latest_plans():
        try:
            raw = parse_yaml(version.text)
        except PlanError:
            continue
        sources = raw.get("sources") if isinstance(raw, dict) else None
        if isinstance(sources, dict) and any(
            isinstance(s, dict) and s.get("connection") == name for s in sources.values()
        ):
            users.append(version.name)
    return users
