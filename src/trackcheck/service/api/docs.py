"""The API's description, generated from its models: ``/api/openapi.json`` and Swagger UI at ``/api/docs``,
both open without a token (they describe routes, not data).

Why flask-openapi3: of the libraries that build an OpenAPI document and the request checks from types,
it is the one that is pydantic-v2-first and writes OpenAPI 3.1 (schemas are JSON Schema 2020-12, which
schemathesis and the tests validate answers with), and its ``APIBlueprint`` is a Flask blueprint, so the
existing app, the dashboard, the token guard (``auth``) and the one error shape (``errors``) stay as they
are. Its validation errors go through one callback (``errors.validation_failed``). spectree validates as
well, but its UI pages load Swagger UI from a CDN; APIFlask is built on marshmallow schemas. Swagger UI's
assets come from the ``flask-openapi3-swagger`` wheel, served from this host; the library's own doc pages
are off (``doc_ui=False``) because their templates hold inline script and style, which the CSP forbids.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, cast

import flask_openapi3_swagger
from flask import Blueprint, Response, current_app, jsonify, send_from_directory, url_for
from flask_openapi3 import Info, OpenAPI, Server, Tag

from trackcheck.service.api.blueprint import JSON, bp
from trackcheck.service.api.models import Error

#: the Swagger UI release the plugin wheel bundles (js/, css/)
SWAGGER_ASSETS = Path(flask_openapi3_swagger.__file__).parent / "templates" / "swagger"
#: what starts Swagger UI on the page (``swagger-init.js``)
STATIC = Path(__file__).parent / "static"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; object-src 'none'; form-action 'self'"
)
PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>trackcheck API</title>
<link rel="icon" href="{icon}">
<link rel="stylesheet" href="{css}">
</head>
<body data-spec="{spec}">
<div id="swagger-ui"></div>
<script src="{bundle}"></script>
<script src="{init}"></script>
</body>
</html>
"""

docs = Blueprint(
    "api_docs",
    __name__,
    static_folder=str(SWAGGER_ASSETS),
    static_url_path="/api/docs/swagger",
)


def app_options() -> dict[str, Any]:
    """What ``create_app`` gives ``OpenAPI(...)``: the document's header, the bearer scheme, and
    validation errors in the API's own shape (400, ``errors.validation_failed``)."""
    from trackcheck.service.api.errors import validation_failed

    try:
        release = version("trackcheck")
    except PackageNotFoundError:
        release = "0"
    return {
        "info": Info(
            title="trackcheck",
            version=release,
            description="Verify that tracking events arrive complete and unchanged in every system of a "
            "pipeline. Errors are always {error, detail}; 400 means invalid input and nothing was stored.",
        ),
        "servers": [Server(url="/")],
        "security_schemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "Required on every route but this document when the service has an api_token",
            }
        },
        "validation_error_status": 400,
        "validation_error_model": Error,
        "validation_error_callback": validation_failed,
        "doc_ui": False,
    }


def document() -> dict[str, Any]:
    """The OpenAPI document of the current app (built once per app; callers must not modify it)."""
    doc: dict[str, Any] = cast(OpenAPI, current_app).api_doc
    # flask-openapi3 leaves out an empty security list; this one document needs no token
    doc["paths"]["/api/openapi.json"]["get"]["security"] = []
    return doc


@bp.get(
    "/openapi.json",
    tags=[Tag(name="documentation", description="This document; Swagger UI shows it at /api/docs")],
    summary="This document (no token needed)",
    responses={200: {"description": "OpenAPI 3.1", "content": {JSON: {"schema": {"type": "object"}}}}},
)
def openapi() -> Any:
    return jsonify(document())


@docs.get("/api/docs")
def swagger_ui() -> Response:
    page = PAGE.format(
        icon=url_for("api_docs.static", filename="images/swagger.svg"),
        css=url_for("api_docs.static", filename="css/swagger-ui.css"),
        bundle=url_for("api_docs.static", filename="js/swagger-ui-bundle.js"),
        init=url_for("api_docs.init_script"),
        spec=url_for("api.openapi"),
    )
    return Response(page, mimetype="text/html")


@docs.get("/api/docs/swagger-init.js")
def init_script() -> Response:
    return send_from_directory(STATIC, "swagger-init.js", mimetype="text/javascript")


@docs.after_request
def _headers(response: Response) -> Response:
    """The page runs only scripts from this host: the assets and the init file, no inline script."""
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response
