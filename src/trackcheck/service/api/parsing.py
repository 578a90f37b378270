"""Reading a request: a JSON body with only the allowed keys, its typed fields, integer query arguments.
Each helper rejects bad input with an error whose detail names the key or parameter; what every request
must satisfy (depth, text, numbers) is ``trackcheck.service.validation``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import request

from trackcheck.plan.templates import env_references
from trackcheck.service.api.errors import fail
from trackcheck.service.validation import MAX_OFFSET, InputError, parse_json


def json_body(allowed: tuple[str, ...]) -> dict[str, Any]:
    """The body as a JSON object with only ``allowed`` keys; 415/413/400 otherwise."""
    if not request.is_json:
        fail(415, "unsupported_media_type", "send the body as JSON with 'Content-Type: application/json'")
    raw = request.get_data(cache=True)  # 413 here when longer than max_body_bytes
    try:
        body = parse_json(raw.decode("utf-8"))
    except InputError as exc:
        fail(400, "bad_request", str(exc))
    except ValueError as exc:  # UnicodeDecodeError too
        fail(400, "bad_request", f"the body is not valid JSON: {exc}")
    if not isinstance(body, dict):
        fail(400, "bad_request", f"the body must be a JSON object with the keys {', '.join(allowed)}")
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        fail(400, "bad_request", f"unknown key {unknown[0]!r} in the body (allowed: {', '.join(allowed)})")
    return body


def string_field(body: Mapping[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value.strip():
        fail(400, "bad_request", f"{key!r} is required and must be a non-empty string")
    return value


def object_field(body: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = body.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        fail(400, "invalid_params", f"{key!r} must be a JSON object of name: value")
    _no_env(value, key)
    return value


def _no_env(value: Any, key: str) -> None:
    """A run request is data: ``${NAME}`` in it is refused rather than silently kept or ever expanded."""
    references = env_references(value, key)
    if references:
        where, name = references[0]
        fail(400, "invalid_params", f"{where}: ${{{name}}} is not expanded in a run request; send the value itself")


def expect_field(body: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    value = body.get("expect")
    if value is None:
        return None
    if not isinstance(value, list):
        fail(400, "invalid_params", "'expect' must be a list of event objects")
    for index, event in enumerate(value):
        if not isinstance(event, dict):
            fail(400, "invalid_params", f"expect[{index}] is not an object")
    _no_env(value, "expect")
    return value


def int_arg(name: str, default: int, low: int, high: int = MAX_OFFSET) -> int:
    """Query parameter ``name`` as an integer between ``low`` and ``high`` (``default`` when absent)."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    shown = raw if len(raw) <= 40 else f"{raw[:40]}..."
    try:
        value = int(raw)
    except ValueError:
        fail(400, "bad_request", f"query parameter {name!r} must be an integer, got {shown!r}")
    if not low <= value <= high:
        fail(400, "bad_request", f"query parameter {name!r} must be between {low} and {high}, got {shown}")
    return value
