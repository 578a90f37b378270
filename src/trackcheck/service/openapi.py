"""The OpenAPI 3.1 description of the JSON API, served at ``GET /api/openapi.json`` (no token needed: it
describes routes, not data).

Built in code next to the routes it describes; tests compare its paths and methods with the app's URL map
and validate real answers against its schemas (3.1 schemas are JSON Schema 2020-12), so it cannot drift.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from trackcheck.engine.result import EVIDENCE
from trackcheck.service.api.runs import MAX_BATCH
from trackcheck.service.validation import MAX_NAME, MAX_OFFSET
from trackcheck.states import RunStatus, StageStatus

JSON = "application/json"
RUN_STATUSES = [str(status) for status in RunStatus]
STAGE_STATUSES = [str(status) for status in StageStatus]
ERRORS = {
    400: "Invalid input: the detail names the key, parameter, plan, stage or field at fault; nothing was stored",
    401: "Missing or wrong API token (`Authorization: Bearer <token>`)",
    403: "The token's role may not do this (viewer: read; runner: runs too; admin: everything)",
    404: "No such run, plan, plan version, stage, schedule or route",
    405: "Method not allowed on this path",
    409: "The request conflicts with the current state (e.g. the run already ended)",
    413: "The body is larger than the service's max_body_bytes",
    415: "Wrong Content-Type",
    429: "Too many failed logins or unauthenticated requests from this address: wait Retry-After seconds",
    502: "A source of the plan could not be opened",
    503: "The state database is unreachable",
}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _obj(properties: dict[str, Any], required: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
        **extra,
    }


STRING: dict[str, Any] = {"type": "string"}
#: a required string: empty or blank ones are refused
NAME: dict[str, Any] = {"type": "string", "minLength": 1, "pattern": "\\S"}
INT: dict[str, Any] = {"type": "integer"}
TIME: dict[str, Any] = {"type": "string", "format": "date-time"}
NULL_TIME = _nullable(TIME)
NULL_INT = _nullable(INT)
NULL_STRING = _nullable(STRING)
ANY_OBJECT: dict[str, Any] = {"type": "object", "additionalProperties": True}


def _schemas() -> dict[str, Any]:
    stage_result = _obj(
        {
            "name": STRING,
            "status": {"enum": STAGE_STATUSES},
            "attempts": INT,
            "started_at": NULL_TIME,
            "finished_at": NULL_TIME,
            "expected": NULL_INT,
            "found": NULL_INT,
            **{name: {"type": "array"} for name in EVIDENCE},
            "latency": _nullable(
                {**ANY_OBJECT, "description": "how late the records arrived, in seconds: n, p50, p95, p99, max"}
            ),
            "error": NULL_STRING,
            "error_kind": _nullable(
                {"enum": ["permanent", "transient"], "description": "permanent: ended at once; transient: retried"}
            ),
            "reason": NULL_STRING,
        },
        description="A stage's verdict and its evidence (lists capped at 1000 items each)",
    )
    connection = {
        "name": {**NAME, "description": "required by POST; PUT takes it from the URL"},
        "type": {**NAME, "description": "sql, file, http, redis..."},
        "options": {
            **ANY_OBJECT,
            "description": "the type's options (url, root, headers...); '***' keeps a stored secret",
        },
    }
    run_fields: dict[str, Any] = {
        "params": {**ANY_OBJECT, "description": "run parameters as the plan's params declare them"},
        "expect": {"type": "array", "items": ANY_OBJECT, "description": "expected events (else the plan's)"},
        "interval": {
            "type": ["string", "number"],
            "exclusiveMinimum": 0,
            "description": "poll every stage this often (e.g. '2s'; a number is seconds)",
        },
        "timeout": {
            "type": ["string", "number"],
            "exclusiveMinimum": 0,
            "description": "every stage times out after this long (e.g. '90s')",
        },
    }
    return {
        "Error": _obj(
            {"error": {"type": "string", "description": "short code, e.g. invalid_params, not_found"}, "detail": {}},
            description="Every error of the API",
        ),
        "RunRequest": _obj(
            {"plan": {**NAME, "description": "plan name (its latest version is used)"}, **run_fields},
            required=["plan"],
            additionalProperties=False,
        ),
        "RunAccepted": _obj({"id": STRING, "status": {"const": "processing"}}),
        "BatchRunRequest": _obj(
            {
                "plan": {**NAME, "description": "plan name (its latest version is used for every run)"},
                "runs": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": MAX_BATCH,
                    "items": _obj(run_fields, required=[], additionalProperties=False),
                    "description": "the runs, each as POST /api/runs takes one without 'plan'",
                },
            },
            additionalProperties=False,
        ),
        "BatchAccepted": _obj(
            {
                "ids": {"type": "array", "items": STRING, "description": "the run ids, in the order of 'runs'"},
                "status": {"const": "processing"},
            }
        ),
        "StageResult": stage_result,
        "RunResult": _obj(
            {
                "run_id": STRING,
                "plan": STRING,
                "status": {"enum": RUN_STATUSES},
                "params": ANY_OBJECT,
                "stages": {"type": "array", "items": _ref("StageResult")},
                "notify": {
                    **_nullable(ANY_OBJECT),
                    "description": "webhook notification state: state (pending, retrying, delivered, failed, "
                    "skipped), attempts, error, delivered_at, next_attempt; null if the plan has no webhook",
                },
            },
            description="The same document as `trackcheck run --json`, plus `notify`",
        ),
        "RunSummary": _obj(
            {
                "id": STRING,
                "plan": STRING,
                "status": {"enum": RUN_STATUSES},
                "created_at": TIME,
                "finished_at": NULL_TIME,
                "stages": {
                    "type": "array",
                    "items": _obj({"name": STRING, "status": {"enum": STAGE_STATUSES}}),
                },
            }
        ),
        "RunList": _obj(
            {
                "runs": {"type": "array", "items": _ref("RunSummary")},
                "total": INT,
                "limit": INT,
                "offset": INT,
            }
        ),
        "Poll": _obj(
            {
                "stage": NULL_STRING,
                "polled_at": TIME,
                "outcome": STRING,
                "found": NULL_INT,
                "expected": NULL_INT,
                "duration_ms": {"type": "number"},
                "error": NULL_STRING,
            }
        ),
        "PollList": _obj({"run_id": STRING, "polls": {"type": "array", "items": _ref("Poll")}}),
        "Records": _obj(
            {
                "run_id": STRING,
                "stage": STRING,
                "records": {"type": "array", "items": ANY_OBJECT},
                "total": {**INT, "description": "how many records the stage read"},
                "truncated": {"type": "boolean", "description": "true if more were read than the snapshot keeps"},
                "taken_at": NULL_TIME,
            }
        ),
        "PlanSummary": _obj(
            {
                "name": STRING,
                "version": INT,
                "description": NULL_STRING,
                "stages": {"type": "array", "items": STRING},
                "created_at": TIME,
            }
        ),
        "PlanList": _obj({"plans": {"type": "array", "items": _ref("PlanSummary")}}),
        "Plan": {
            "allOf": [
                _ref("PlanSummary"),
                _obj(
                    {
                        "text": {"type": "string", "description": "the YAML; URL passwords and secrets shown as ***"},
                        "versions": {"type": "array", "items": _obj({"version": INT, "created_at": TIME})},
                    }
                ),
            ]
        },
        "PlanSaved": {
            "allOf": [
                _ref("PlanSummary"),
                _obj({"created": {"type": "boolean", "description": "false if the text equals the latest version"}}),
            ]
        },
        "ScheduleRequest": _obj(
            {
                "plan": NAME,
                "cron": {**NAME, "description": "five-field crontab expression in UTC, e.g. '10 2 * * *'"},
                "params": ANY_OBJECT,
            },
            required=["plan", "cron"],
            additionalProperties=False,
        ),
        "Schedule": _obj(
            {
                "id": STRING,
                "plan": STRING,
                "cron": STRING,
                "params": ANY_OBJECT,
                "created_at": TIME,
                "next_run_time": NULL_TIME,
                "last_run_id": NULL_STRING,
                "last_error": NULL_STRING,
            }
        ),
        "ScheduleList": _obj({"schedules": {"type": "array", "items": _ref("Schedule")}}),
        "ConnectionRequest": _obj(connection, required=["type"], additionalProperties=False),
        "NewConnection": _obj(connection, required=["name", "type"], additionalProperties=False),
        "Connection": _obj(
            {
                "name": STRING,
                "type": STRING,
                "options": {**ANY_OBJECT, "description": "secrets (passwords, header values, tokens) shown as ***"},
                "origin": {"enum": ["config", "api"], "description": "config: from trackcheck.toml, read-only"},
                "updated_at": NULL_TIME,
            }
        ),
        "ConnectionList": _obj({"connections": {"type": "array", "items": _ref("Connection")}}),
    }


def _json(schema: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": _ref(schema)}}}


#: answers any operation may give: a malformed URL (a name longer than any column, a control character in
#: it, a NUL in the query), the token's (when tokens are configured), the state database's
ANYWHERE = (400, 401, 403, 429, 503)


def _errors(*codes: int) -> dict[str, Any]:
    """Error answers of an operation: its own ``codes`` and those of ``ANYWHERE``."""
    return {str(code): {"$ref": f"#/components/responses/E{code}"} for code in sorted({*codes, *ANYWHERE})}


def _param(name: str, where: str = "path", schema: dict[str, Any] | None = None, text: str = "") -> dict[str, Any]:
    found = {"name": name, "in": where, "required": where == "path", "schema": schema or _default_schema(where)}
    return found | ({"description": text} if text else {})


def _default_schema(where: str) -> dict[str, Any]:
    return {"type": "string", "minLength": 1, "maxLength": MAX_NAME} if where == "path" else STRING


RUN_ID = _param("run_id", text="run id")
PLAN_NAME = _param("name", text="plan name")


def _op(summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"summary": summary, "responses": responses, **extra}


def _paths() -> dict[str, Any]:
    run_body = {"required": True, "content": {JSON: {"schema": _ref("RunRequest")}}}
    yaml_body = {
        "required": True,
        "content": {kind: {"schema": {"type": "string"}} for kind in ("application/yaml", "text/plain")},
    }
    return {
        "/api/runs": {
            "post": _op(
                "Start a run of a plan's latest version; answers at once, polling happens in the background",
                {"202": _json("RunAccepted", "Accepted: poll GET /api/runs/{run_id} until status is not running")}
                | _errors(400, 404, 413, 415, 502),
                requestBody=run_body,
            ),
            "get": _op(
                "Runs, newest first",
                {"200": _json("RunList", "A page of run summaries")} | _errors(400),
                parameters=[
                    _param("plan", "query"),
                    _param("status", "query", {"enum": RUN_STATUSES}),
                    _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}),
                    _param("offset", "query", {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET, "default": 0}),
                ],
            ),
        },
        "/api/runs/batch": {
            "post": _op(
                f"Start up to {MAX_BATCH} runs of a plan's latest version at once, all or nothing: one "
                "transaction, answered at once; an error names the run (runs[3].params.test_id) and stores none. "
                "The body must fit max_body_bytes (1 MiB by default: about 10,000 runs of ~100 bytes each)",
                {"202": _json("BatchAccepted", "Accepted: poll GET /api/runs/{run_id} for each id")}
                | _errors(400, 404, 413, 415, 502),
                requestBody={"required": True, "content": {JSON: {"schema": _ref("BatchRunRequest")}}},
            ),
        },
        "/api/runs/{run_id}": {
            "get": _op("A run's result", {"200": _json("RunResult", "The result")} | _errors(404)),
            "parameters": [RUN_ID],
        },
        "/api/runs/{run_id}/polls": {
            "get": _op("Every poll of a run, oldest first", {"200": _json("PollList", "The polls")} | _errors(404)),
            "parameters": [RUN_ID],
        },
        "/api/runs/{run_id}/records/{stage}": {
            "get": _op(
                "What a stage read for the run (its snapshot)",
                {"200": _json("Records", "The records; empty before the first poll")} | _errors(404),
            ),
            "parameters": [RUN_ID, _param("stage", text="stage name")],
        },
        "/api/runs/{run_id}/cancel": {
            "post": _op(
                "Cancel a running run (what was verified is kept)",
                {"200": _json("RunResult", "The cancelled run")} | _errors(404, 409),
            ),
            "parameters": [RUN_ID],
        },
        "/api/runs/{run_id}/rerun": {
            "post": _op(
                "A new run of the same plan version with the same params, expect and overrides",
                {"202": _json("RunAccepted", "Accepted")} | _errors(404, 409, 502),
            ),
            "parameters": [RUN_ID],
        },
        "/api/plans": {
            "get": _op("The latest version of every plan", {"200": _json("PlanList", "The plans")} | _errors()),
        },
        "/api/plans/{name}": {
            "get": _op(
                "A plan's YAML (latest or ?version=N) and its version list",
                {"200": _json("Plan", "The plan")} | _errors(400, 404),
                parameters=[_param("version", "query", {"type": "integer", "minimum": 1, "maximum": MAX_OFFSET})],
            ),
            "put": _op(
                "Store a plan version (validated; the YAML's name must equal the URL's)",
                {
                    "201": _json("PlanSaved", "A new version was stored"),
                    "200": _json("PlanSaved", "The text equals the latest version: nothing stored"),
                }
                | _errors(400, 409, 413, 415),
                requestBody=yaml_body,
            ),
            "delete": _op(
                "Delete a plan (runs keep their version)", {"204": {"description": "Deleted"}} | _errors(404)
            ),
            "parameters": [PLAN_NAME],
        },
        "/api/schedules": {
            "get": _op("Every schedule", {"200": _json("ScheduleList", "The schedules")} | _errors()),
            "post": _op(
                "Run a plan on a cron expression (UTC)",
                {"201": _json("Schedule", "Created")} | _errors(400, 404, 413, 415),
                requestBody={"required": True, "content": {JSON: {"schema": _ref("ScheduleRequest")}}},
            ),
        },
        "/api/schedules/{schedule_id}": {
            "get": _op("A schedule", {"200": _json("Schedule", "The schedule")} | _errors(404)),
            "delete": _op("Delete a schedule", {"204": {"description": "Deleted"}} | _errors(404)),
            "parameters": [_param("schedule_id", text="schedule id")],
        },
        "/api/connections": {
            "get": _op(
                "Every connection, secrets masked (admin)", {"200": _json("ConnectionList", "The list")} | _errors()
            ),
            "post": _op(
                "Define a connection (admin); secrets are stored encrypted and never shown again",
                {"201": _json("Connection", "Created")} | _errors(400, 409, 413, 415),
                requestBody={"required": True, "content": {JSON: {"schema": _ref("NewConnection")}}},
            ),
        },
        "/api/connections/{name}": {
            "get": _op("A connection, secrets masked (admin)", {"200": _json("Connection", "It")} | _errors(404)),
            "put": _op(
                "Create or replace a connection (admin); '***' keeps the stored secret at that place",
                {"201": _json("Connection", "Created"), "200": _json("Connection", "Replaced")}
                | _errors(400, 409, 413, 415),
                requestBody={"required": True, "content": {JSON: {"schema": _ref("ConnectionRequest")}}},
            ),
            "delete": _op(
                "Delete a connection (admin); 409 while a plan uses it, unless ?force=true",
                {"204": {"description": "Deleted"}} | _errors(404, 409),
                parameters=[_param("force", "query", {"type": "string", "enum": ["true", "false"]})],
            ),
            "parameters": [_param("name", text="connection name")],
        },
        "/api/openapi.json": {
            "get": _op(
                "This document (no token needed)",
                {"200": {"description": "OpenAPI 3.1", "content": {JSON: {"schema": ANY_OBJECT}}}},
                security=[],
            ),
        },
    }


@cache
def document() -> dict[str, Any]:
    """The OpenAPI document (built once per process; callers must not modify it)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        release = version("trackcheck")
    except PackageNotFoundError:
        release = "0"
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "trackcheck",
            "version": release,
            "description": "Verify that tracking events arrive complete and unchanged in every system of a "
            "pipeline. Errors are always {error, detail}; 400 means invalid input and nothing was stored.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": _paths(),
        "components": {
            "schemas": _schemas(),
            "responses": {
                f"E{code}": {"description": text, "content": {JSON: {"schema": _ref("Error")}}}
                for code, text in ERRORS.items()
            },
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "Required on every route but this document when the service has an api_token",
                }
            },
        },
    }
