"""The connections page: every connection with its secrets masked, and a form for an admin to add one.

Options are typed as YAML (JSON is YAML too), validated exactly as ``POST /api/connections`` validates
them; a connection holding a secret is stored only when the service has a secret key to encrypt it with.
"""

from __future__ import annotations

from typing import Any

import yaml
from flask import redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from trackcheck.connections import mask_options
from trackcheck.errors import ConfigError, PlanError
from trackcheck.plan.safe_yaml import parse_yaml
from trackcheck.service.app import current_service
from trackcheck.service.dashboard.blueprint import bp
from trackcheck.service.validation import InputError, check_value, text_problem
from trackcheck.sources import known_types


def _page(values: dict[str, str], errors: dict[str, str], status: int = 200) -> ResponseReturnValue:
    service = current_service()
    return (
        render_template(
            "dashboard/connections.html",
            connections=service.engine.connections.describe(),
            types=[t for t in known_types() if t != "memory"],
            values=values,
            errors=errors,
            can_seal=service.engine.keyring is not None,
        ),
        status,
    )


@bp.get("/connections")
def connections() -> ResponseReturnValue:
    return _page({}, {})


@bp.post("/connections")
def add_connection() -> ResponseReturnValue:
    values = {k: request.form.get(k, "").strip() for k in ("name", "type", "options")}
    errors: dict[str, str] = {}
    options: Any = {}
    if values["options"]:
        try:
            options = parse_yaml(values["options"], origin="options")
            check_value(options, "options")
        except PlanError as exc:  # not YAML, or an alias bomb, or too deep: the message names the line
            options, errors["options"] = {}, exc.message
        except InputError as exc:
            options, errors["options"] = {}, str(exc)
        else:
            if not isinstance(options, dict):
                errors["options"] = "write the options as a mapping, e.g. url: postgresql://reader@db/warehouse"
    name_problem = text_problem(values["name"], controls=True)
    if not values["name"]:
        errors["name"] = "Give the connection a name."
    elif name_problem is not None:
        errors["name"] = f"The name {name_problem}."
    engine = current_service().engine
    if not errors and engine.connections.info(values["name"]) is not None:
        errors["name"] = f"A connection named {values['name']!r} exists."
    if not errors:
        try:
            engine.connections.save(values["name"], {"type": values["type"], **options})
        except PlanError as exc:
            key = (exc.context.get("field") or "").rpartition(".")[2]
            errors["name" if key == values["name"] else "options"] = exc.message
        except ConfigError as exc:
            errors["options"] = exc.message
    if errors:
        # a secret typed into the form is never sent back: the options come back masked, or not at all
        shown = yaml.safe_dump(mask_options(options), sort_keys=False) if isinstance(options, dict) and options else ""
        return _page(values | {"options": shown}, errors, 422)
    return redirect(url_for("dashboard.connections"), code=303)
