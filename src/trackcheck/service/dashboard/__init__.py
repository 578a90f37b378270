"""The web dashboard: server-rendered pages over the Store and Engine, refreshed live by htmx polling.

Pages read the state database directly (no round trip through /api) so they show exactly what the poller
wrote. Parts that change while a run is polled are separate fragment endpoints that htmx re-fetches every
second or so; a fragment that has nothing running any more is returned without its polling trigger, which
stops the polling. Every value is autoescaped by Jinja; credentials (URL passwords, secret headers, the API
token) are masked or never rendered.

When the service has an API token the dashboard requires it too: a login form compares it in constant time
and sets a signed HttpOnly SameSite=Strict session cookie. The cookie is signed with a key derived from the
token, so every gunicorn worker agrees on it and rotating the token logs everyone out.

One blueprint, ``bp`` (``blueprint.py``, with the headers and error pages), gets its routes from ``login``
(the token login and the cross-site check), ``pages``, ``forms`` (the start-a-run form), ``schedules`` (the
schedules and their editor) and ``connections``;
``context`` builds what the run pages show, ``plan_runs`` what the plan page shows of the plan's runs (the
grid, failing since, the trends), ``charts`` lays out the charts, ``formatting`` has the Jinja filters.
"""

from __future__ import annotations

from trackcheck.service.dashboard import (  # noqa: F401 - each fills in bp
    connections,
    formatting,
    forms,
    login,
    pages,
    schedules,
)
from trackcheck.service.dashboard.blueprint import bp
from trackcheck.service.dashboard.login import session_authenticated
from trackcheck.service.dashboard.pages import masked_plan_text

__all__ = ["bp", "masked_plan_text", "session_authenticated"]
