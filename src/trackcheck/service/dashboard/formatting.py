"""How values look on every page: Jinja filters and globals for times, durations, record values, status
icons and URLs. Whatever could hold a credential goes through ``mask_url_passwords``; whatever is written
into a page or a URL goes through ``printable``: a lone surrogate in a stored value (a source may return
one, an old row may hold one) is shown as its ``\\udXXX`` escape instead of failing the page."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from flask import request, url_for
from flask.blueprints import BlueprintSetupState
from markupsafe import Markup

from trackcheck.plan.masking import mask_url_passwords
from trackcheck.service.dashboard.blueprint import bp
from trackcheck.service.validation import escape_surrogates
from trackcheck.store.repository import aware

#: a glyph per status, so a step never relies on colour alone (its text label is shown too)
ICONS = {
    "pending": "○",
    "waiting": "◔",
    "running": "◔",
    "passed": "✓",
    "failed": "✗",
    "error": "!",
    "skipped": "\u2013",  # en dash
    "cancelled": "⊘",
}


def printable(text: str) -> str:
    """``text`` as UTF-8 can carry it: each lone surrogate written as its escape, e.g. ``\\ud800``."""
    shown = escape_surrogates(text)
    # text that was Markup stays Markup: escaping a surrogate adds no markup to it
    return Markup(shown) if isinstance(text, Markup) and shown is not text else shown  # noqa: S704


def _finalize(value: Any) -> Any:
    """Every ``{{ ... }}`` of every page, before it is escaped and written."""
    return printable(value) if isinstance(value, str) else value


@bp.record_once
def _printable_pages(state: BlueprintSetupState) -> None:
    """No template is compiled yet when the blueprint is registered: each one is compiled with this."""
    state.app.jinja_env.finalize = _finalize


@bp.app_template_global("url_for")
def printable_url_for(endpoint: str, **values: Any) -> str:
    """Flask's ``url_for`` for templates, with ``printable`` values: a plan name holding a lone surrogate
    cannot be encoded into a URL otherwise."""
    shown: dict[str, Any] = {k: printable(v) if isinstance(v, str) else v for k, v in values.items()}
    return url_for(endpoint, **shown)


@bp.app_template_filter("when")
def format_when(moment: datetime | None) -> str:
    value = aware(moment)
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "—"


@bp.app_template_filter("clock")
def format_clock(moment: datetime | None) -> str:
    value = aware(moment)
    return value.strftime("%H:%M:%S.") + f"{value.microsecond // 1000:03d}" if value else "—"


@bp.app_template_filter("iso")
def format_iso(moment: datetime | None) -> str:
    value = aware(moment)
    return value.isoformat() if value else ""


@bp.app_template_filter("seconds")
def format_seconds(seconds: float | None) -> str:
    """``0.84 s``, ``12.3 s``, ``4 m 05 s``, ``2 h 10 m``: readable at a glance."""
    if seconds is None:
        return "—"
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60} m {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} m"


@bp.app_template_filter("value")
def format_value(value: Any) -> str:
    """A value as JSON, so ``"25.50"`` (a string) and ``25.5`` (a number) look different side by side."""
    return mask_url_passwords(json.dumps(value, ensure_ascii=False, default=str))


@bp.app_template_filter("cell")
def format_cell(value: Any) -> str:
    """A record's field in a table: strings as they are, everything else as JSON."""
    if isinstance(value, str):
        return mask_url_passwords(value)
    return format_value(value)


@bp.app_template_filter("key")
def format_key(key: Any) -> str:
    """A record key as users wrote it: a value, or ``field=value, ...`` for a composite key."""
    if isinstance(key, dict):
        return ", ".join(f"{k}={format_cell(v)}" for k, v in key.items())
    return format_cell(key)


@bp.app_template_filter("masked")
def masked(text: str | None) -> str:
    return mask_url_passwords(text) if text else ""


@bp.app_template_global()
def icon(status: str) -> str:
    return ICONS.get(status, "•")


@bp.app_template_global()
def page_url(endpoint: str, **changes: Any) -> str:
    """The current URL with some query arguments changed (pagination and filters keep each other)."""
    args: dict[str, Any] = {k: v for k, v in request.args.items() if v}
    args.update(changes)
    return url_for(endpoint, **{k: v for k, v in args.items() if v not in (None, "")})


def params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={format_cell(v)}" for k, v in params.items())
