"""The JSON API under ``/api``: runs, plans, schedules and connections, typed by ``models`` and described
by the OpenAPI document generated from them (``/api/openapi.json``, browsable at ``/api/docs``: ``docs``).

Conventions, so that clients can rely on them:

- Accepting a run only writes rows (the poller picks it up): ``POST /api/runs`` answers 202 at once.
- Every error is ``{"error": <short code>, "detail": <what is wrong, naming the key/plan/stage>}``:
  400 invalid input (malformed body, unknown key, wrong parameter, bad plan, bad cron), 401 missing/wrong
  token, 403 the token's role may not, 404 unknown run/plan/stage/schedule/route, 405, 409 state conflict
  (or a secret and no secret key to encrypt it), 413 body too large, 415 wrong Content-Type, 429 too many
  failed authentications, 502 a source could not be opened, 503 the state database is unreachable or the
  service is misconfigured. Invalid input is rejected before anything is stored.
- JSON bodies must be sent as ``application/json``: a cross-site page cannot send that without a CORS
  preflight (which this API never grants), so a token-less deployment on 127.0.0.1 is not open to CSRF.
- With tokens configured (``api_token``, ``[[tokens]]``), every route except ``/api/openapi.json`` and
  ``/api/docs`` needs
  ``Authorization: Bearer <token>``, and the token's role decides what it may do (``auth.required_role``).
- Plans and run requests that arrive here are data (``trackcheck.plan.trust``): no ``${ENV}`` expansion,
  systems read only through the operator's connections.
- Nothing returned holds a credential: plan text has URL passwords and literal secrets masked, error
  details are TrackcheckError messages (masked where raised) masked once more.

One blueprint, ``bp`` (``blueprint.py``, a flask-openapi3 ``APIBlueprint``), gets its routes from the
resource modules ``runs``, ``plans``, ``schedules`` and ``connections``, each view declaring its request
and answer models; ``auth`` guards it, ``bodies`` holds a JSON body to the service's limits before its
model reads it, ``errors`` maps every exception and refused model to the error shape
(``trackcheck.plan.masking`` hides secrets in plan text).
"""

from __future__ import annotations

from trackcheck.plan.masking import mask_plan_text
from trackcheck.service.api import (  # noqa: F401 - each fills in bp
    auth,
    bodies,
    connections,
    docs,
    errors,
    plans,
    runs,
    schedules,
)
from trackcheck.service.api.auth import OPEN_ENDPOINTS, check_token
from trackcheck.service.api.blueprint import PREFIX, bp
from trackcheck.service.api.errors import ApiError, is_api_request
from trackcheck.service.api.models import DEFAULT_LIMIT, MAX_LIMIT
from trackcheck.service.api.plans import YAML_TYPES
from trackcheck.service.api.runs import run_document

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "OPEN_ENDPOINTS",
    "PREFIX",
    "YAML_TYPES",
    "ApiError",
    "bp",
    "check_token",
    "is_api_request",
    "mask_plan_text",
    "run_document",
]
