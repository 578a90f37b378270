"""The web dashboard: server-rendered pages over the Store and Engine, refreshed live by htmx polling.

Pages read the state database directly (no round trip through /api) so they show exactly what the poller
wrote. Parts that change while a run is polled are separate fragment endpoints that htmx re-fetches every
second or so; a fragment that has nothing running any more is returned without its polling trigger, which
stops the polling. Every value is autoescaped by Jinja; credentials (URL passwords, secret headers, the API
token) are masked or never rendered.

When the service has an API token the dashboard requires it too: a login form compares it in constant time
and sets a signed HttpOnly SameSite=Strict session cookie. The cookie is signed with a key derived from the
token, so every gunicorn worker agrees on it and rotating the token logs everyone out.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, abort, redirect, render_template, request, session, url_for
from flask.blueprints import BlueprintSetupState
from flask.typing import ResponseReturnValue
from pydantic import SecretStr
from sqlalchemy import select

from trackcheck.engine.result import EVIDENCE
from trackcheck.errors import ParamError, RunNotFound, StoreError, TrackcheckError
from trackcheck.plan.durations import parse_duration
from trackcheck.plan.loader import load_plan_text
from trackcheck.plan.model import Plan
from trackcheck.service.api import mask_plan_text
from trackcheck.service.app import EXTENSION, current_service
from trackcheck.service.schedules import next_run_time
from trackcheck.sources import build_source
from trackcheck.sources.base import MASK, mask_url_passwords
from trackcheck.store.models import PlanVersion, Poll, Run, RunStage
from trackcheck.store.repository import aware, utcnow

bp = Blueprint(
    "dashboard",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/assets",
)

PAGE_SIZE = 25
#: rows of a snapshot, an evidence list or the poll timeline shown on a page (the API has them all)
SHOW_ROWS = 200
SHOW_POLLS = 300
SHOW_COLUMNS = 30
RUN_STATUSES = ("running", "passed", "failed", "error", "cancelled")
STAGE_STATUSES = ("pending", "waiting", "passed", "failed", "error", "skipped")
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
#: how often (ms) fragments refresh: quickly while something runs, slowly on an idle runs list (new runs)
LIVE_MS = 1000
IDLE_MS = 10000
LOGIN_MAX_AGE = timedelta(hours=12)
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)


# -- setup, authentication, headers ------------------------------------------------------------------------
@bp.record_once
def _configure(state: BlueprintSetupState) -> None:
    """Sessions are only needed with a token: sign them with a key derived from it (HMAC), so every worker
    process derives the same key, and keep the cookie out of scripts and cross-site requests."""
    app = state.app
    token = _token_of(app.extensions.get(EXTENSION))
    if token is not None and not app.secret_key:
        app.secret_key = hmac.new(token.encode(), b"trackcheck dashboard session key", hashlib.sha256).hexdigest()
    app.config["SESSION_COOKIE_NAME"] = "trackcheck_session"
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    app.config["SESSION_COOKIE_SAMESITE"] = "Strict"


def _token_of(service: Any) -> str | None:
    secret: SecretStr | None = getattr(getattr(service, "config", None), "api_token", None)
    return secret.get_secret_value() if secret is not None else None


def _api_token() -> str | None:
    return _token_of(current_service())


def _login_fingerprint(token: str) -> str:
    """What the session stores: proves a login with this token without holding the token itself."""
    return hmac.new(token.encode(), b"trackcheck dashboard login", hashlib.sha256).hexdigest()


def session_authenticated() -> bool:
    """True when no token is configured, or this request carries a valid dashboard login session.

    The JSON API may call this to accept the dashboard's cookie (see the module docstring of api.py).
    """
    token = _api_token()
    if token is None:
        return True
    fingerprint = session.get("auth")
    since = session.get("since")
    if not isinstance(fingerprint, str) or not isinstance(since, int | float):
        return False
    if time.time() - since > LOGIN_MAX_AGE.total_seconds():
        return False
    return hmac.compare_digest(fingerprint, _login_fingerprint(token))


@bp.before_request
def _require_login() -> ResponseReturnValue | None:
    if request.endpoint in ("dashboard.login", "dashboard.static") or session_authenticated():
        return None
    target = url_for("dashboard.login", next=_local_path(request.full_path))
    if request.headers.get("HX-Request"):
        # a fragment refresh after the login expired: send the whole page to the login form
        return Response("login required", status=401, headers={"HX-Redirect": target})
    return redirect(target)


@bp.before_request
def _same_origin_posts() -> ResponseReturnValue | None:
    """Refuse form posts from other sites (CSRF): without a token the service is open on loopback, and any
    web page could otherwise start runs through the visitor's browser."""
    if request.method != "POST":
        return None
    fetch_site = request.headers.get("Sec-Fetch-Site")
    origin = request.headers.get("Origin")
    if fetch_site not in (None, "same-origin", "none") or (
        origin is not None and urlsplit(origin).netloc != request.host
    ):
        abort(403, "Form posts from other sites are refused.")
    return None


@bp.after_request
def _headers(response: Response) -> Response:
    """No inline script or style anywhere, so a strict CSP costs nothing and blunts any injection."""
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if request.endpoint != "dashboard.static":
        response.headers.setdefault("Cache-Control", "no-store")
    return response


def _local_path(target: str | None) -> str:
    """``target`` if it is a path on this site, else ``/``: the login's ``next`` must not leave the site."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target.rstrip("?") or "/"


@bp.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    token = _api_token()
    target = _local_path(request.values.get("next"))
    if token is None:
        return redirect(target)
    error = None
    if request.method == "POST":
        given = request.form.get("token", "")
        if hmac.compare_digest(given.encode(), token.encode()):
            session.clear()
            session["auth"] = _login_fingerprint(token)
            session["since"] = int(time.time())
            return redirect(target)
        error = "That is not the service's API token."
    status = 401 if error else 200
    return render_template("dashboard/login.html", error=error, next=target), status


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    session.clear()
    return redirect(url_for("dashboard.login"))


@bp.app_template_global()
def login_enabled() -> bool:
    return _api_token() is not None


@bp.errorhandler(StoreError)
def _store_error(exc: StoreError) -> ResponseReturnValue:
    message = mask_url_passwords(str(exc))
    return render_template("dashboard/error.html", title="State database unavailable", message=message), 503


@bp.errorhandler(404)
def _not_found(exc: Exception) -> ResponseReturnValue:
    message = getattr(exc, "description", None) or "There is nothing at this address."
    return render_template("dashboard/error.html", title="Not found", message=message), 404


@bp.errorhandler(403)
def _forbidden(exc: Exception) -> ResponseReturnValue:
    message = getattr(exc, "description", None) or "Forbidden."
    return render_template("dashboard/error.html", title="Forbidden", message=message), 403


# -- formatting helpers (also Jinja filters) -----------------------------------------------------------------
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


# -- the runs list ------------------------------------------------------------------------------------------
@dataclass
class RunRow:
    run: Run
    stages: list[RunStage]
    params: str

    @property
    def duration(self) -> float | None:
        end = aware(self.run.finished_at) or utcnow()
        start = aware(self.run.created_at)
        return (end - start).total_seconds() if start else None


def _filters() -> tuple[str, str, int]:
    plan = request.args.get("plan", "").strip()
    status = request.args.get("status", "").strip()
    if status not in RUN_STATUSES:
        status = ""
    try:
        page = max(1, int(request.args.get("page", "1")))
    except ValueError:
        page = 1
    return plan, status, page


def _stages_of(run_ids: list[str]) -> dict[str, list[RunStage]]:
    """The stages of a page of runs in one query (not one per run: the list refreshes every second)."""
    grouped: dict[str, list[RunStage]] = defaultdict(list)
    if not run_ids:
        return grouped
    with current_service().engine.store.session() as s:
        query = select(RunStage).where(RunStage.run_id.in_(run_ids)).order_by(RunStage.run_id, RunStage.idx)
        for stage in s.scalars(query):
            grouped[stage.run_id].append(stage)
    return grouped


def _runs_context() -> dict[str, Any]:
    plan, status, page = _filters()
    store = current_service().engine.store
    runs, total = store.list_runs(
        plan=plan or None, status=status or None, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE
    )
    stages = _stages_of([r.id for r in runs])
    rows = [RunRow(run, stages.get(run.id, []), _params_text(run.params)) for run in runs]
    running = any(r.run.status == "running" for r in rows)
    pages = max(1, math.ceil(total / PAGE_SIZE))
    return {
        "rows": rows,
        "total": total,
        "page": page,
        "pages": pages,
        "first": (page - 1) * PAGE_SIZE + 1 if rows else 0,
        "last": (page - 1) * PAGE_SIZE + len(rows),
        "plan": plan,
        "status": status,
        "refresh_ms": LIVE_MS if running else IDLE_MS,
        "running": running,
        "now": utcnow(),
    }


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={format_cell(v)}" for k, v in params.items())


@bp.get("/")
def runs() -> ResponseReturnValue:
    """Every run, newest first, each with its stages as a pipeline; the table refreshes itself."""
    context = _runs_context()
    plan_names = sorted({p.name for p in current_service().engine.store.latest_plans()} | {context["plan"]} - {""})
    return render_template("dashboard/runs.html", plan_names=plan_names, statuses=RUN_STATUSES, **context)


@bp.get("/fragments/runs")
def runs_fragment() -> ResponseReturnValue:
    return render_template("dashboard/_runs_table.html", **_runs_context())


# -- one run -------------------------------------------------------------------------------------------------
@dataclass
class Bar:
    """One stage in the arrival-latency chart: seconds from the run's start until the stage ended."""

    name: str
    status: str
    seconds: float | None
    ongoing: bool
    y: int = 0
    width: float = 0


@dataclass
class Chart:
    bars: list[Bar]
    width: int = 720
    label_width: int = 140
    value_width: int = 150
    row: int = 34
    ticks: list[tuple[float, float]] = field(default_factory=list)

    @property
    def plot_width(self) -> int:
        return self.width - self.label_width - self.value_width

    @property
    def height(self) -> int:
        return self.row * len(self.bars) + 40


def _nice_ceiling(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 times a power of ten at least ``value``, so the axis ticks are round numbers."""
    if value <= 0:
        return 1.0
    exponent = math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * 10**exponent >= value:
            return float(step * 10**exponent)
    return float(10 ** (exponent + 1))


def latency_chart(run: Run, stages: list[RunStage]) -> Chart:
    """Arrival latency per stage: from the run's start to the stage passing (or failing, or now if still
    waiting), laid out here so the template only draws rectangles: no chart library, no script."""
    start = aware(run.created_at)
    now = aware(run.finished_at) or utcnow()
    bars: list[Bar] = []
    for stage in stages:
        end = aware(stage.finished_at)
        seconds: float | None = None
        ongoing = False
        if start is not None and end is not None and stage.status in ("passed", "failed", "error"):
            seconds = (end - start).total_seconds()
        elif start is not None and stage.status == "waiting":
            seconds, ongoing = (now - start).total_seconds(), True
        bars.append(Bar(stage.name, stage.status, seconds, ongoing))
    chart = Chart(bars)
    # at least one second: sub-second runs (tests, demos) would otherwise get an axis of milliseconds
    top = _nice_ceiling(max([1.0, *(b.seconds for b in bars if b.seconds is not None)]))
    for index, bar in enumerate(bars):
        bar.y = 10 + index * chart.row
        bar.width = 0 if bar.seconds is None else max(2.0, chart.plot_width * bar.seconds / top)
    chart.ticks = [(chart.label_width + chart.plot_width * i / 5, top * i / 5) for i in range(6)]
    return chart


@dataclass
class Records:
    """A stage's snapshot as a table: the first SHOW_ROWS records, columns in order of first appearance."""

    columns: list[str]
    rows: list[list[Any]]
    shown: int
    total: int
    truncated: bool
    more_columns: int


def _records(snapshot: Any) -> Records | None:
    if snapshot is None:
        return None
    records = [r for r in (snapshot.records or [])[:SHOW_ROWS] if isinstance(r, dict)]
    columns: list[str] = []
    for record in records:
        columns.extend(k for k in record if k not in columns)
    shown_columns = columns[:SHOW_COLUMNS]
    rows = [[record.get(c) for c in shown_columns] for record in records]
    return Records(
        columns=shown_columns,
        rows=rows,
        shown=len(rows),
        total=snapshot.total,
        truncated=bool(snapshot.truncated),
        more_columns=len(columns) - len(shown_columns),
    )


@dataclass
class StageView:
    """Everything the run page shows about one stage."""

    stage: RunStage
    evidence: dict[str, list[Any]]
    truncated: dict[str, int]
    records: Records | None

    @property
    def has_evidence(self) -> bool:
        return any(self.evidence.values())

    @property
    def worth_showing(self) -> bool:
        """In "Differences": stages with evidence, or a verdict/error to explain (not "skipped" notes)."""
        explained = self.stage.status in ("waiting", "failed", "error") and bool(self.stage.reason or self.stage.error)
        return self.has_evidence or explained


def _run_context(run_id: str) -> dict[str, Any]:
    engine = current_service().engine
    try:
        run = engine.store.run(run_id)
    except RunNotFound:
        abort(404, f"There is no run {run_id!r}.")
    stages = engine.store.run_stages(run_id)
    polls = engine.store.polls(run_id)
    snapshots = engine.store.snapshots(run_id)
    version: PlanVersion | None
    try:
        version = engine.store.plan_version(run.plan_id)
    except StoreError:
        version = None
    views = []
    for stage in stages:
        evidence = stage.evidence or {}
        views.append(
            StageView(
                stage=stage,
                evidence={name: list(evidence.get(name) or [])[:SHOW_ROWS] for name in EVIDENCE},
                truncated={
                    name: len(evidence.get(name) or [])
                    for name in EVIDENCE
                    if len(evidence.get(name) or []) > SHOW_ROWS
                }
                | dict(evidence.get("truncated") or {}),
                records=_records(snapshots.get(stage.idx)),
            )
        )
    names = {stage.idx: stage.name for stage in stages}
    start = aware(run.created_at)
    return {
        "run": run,
        "version": version,
        "params": {k: format_cell(v) for k, v in run.params.items()},
        "overrides": {k: v for k, v in (run.overrides or {}).items() if v is not None},
        "stages": stages,
        "views": views,
        "polls": polls[-SHOW_POLLS:],
        "poll_total": len(polls),
        "poll_offset": {p.id: _offset(start, p) for p in polls[-SHOW_POLLS:]},
        "stage_names": names,
        "chart": latency_chart(run, stages),
        "running": run.status == "running",
        "refresh_ms": LIVE_MS,
        "now": utcnow(),
        "show_rows": SHOW_ROWS,
    }


def _offset(start: datetime | None, poll: Poll) -> float | None:
    polled = aware(poll.polled_at)
    return (polled - start).total_seconds() if start and polled else None


@bp.get("/runs/<run_id>")
def run_page(run_id: str) -> ResponseReturnValue:
    """One run: its header, the latency chart, every poll, the evidence and what each stage read."""
    return render_template("dashboard/run.html", **_run_context(run_id))


@bp.get("/fragments/runs/<run_id>")
def run_fragment(run_id: str) -> ResponseReturnValue:
    return render_template("dashboard/_run_live.html", **_run_context(run_id))


@bp.post("/runs/<run_id>/cancel")
def cancel_run(run_id: str) -> ResponseReturnValue:
    try:
        current_service().engine.cancel(run_id)
    except RunNotFound:
        abort(404, f"There is no run {run_id!r}.")
    return redirect(url_for("dashboard.run_page", run_id=run_id), code=303)


@bp.post("/runs/<run_id>/rerun")
def rerun(run_id: str) -> ResponseReturnValue:
    """The same plan version, parameters, expected events and overrides again, as a new run."""
    engine = current_service().engine
    try:
        run = engine.store.run(run_id)
    except RunNotFound:
        abort(404, f"There is no run {run_id!r}.")
    if engine.store.latest_plan(run.plan_name) is None:
        message = f"Plan {run.plan_name!r} was deleted; store it again to run it."
        return render_template("dashboard/error.html", title="Could not start the run again", message=message), 409
    try:
        new_id = engine.submit(run.plan_id, dict(run.params), expect=list(run.expect), overrides=dict(run.overrides))
    except TrackcheckError as exc:
        message = mask_url_passwords(str(exc))
        return render_template("dashboard/error.html", title="Could not start the run again", message=message), 422
    return redirect(url_for("dashboard.run_page", run_id=new_id), code=303)


# -- starting a run -----------------------------------------------------------------------------------------
@dataclass
class FormState:
    """What the start-a-run form shows: the chosen plan, the values typed, and errors per field."""

    plan_name: str = ""
    plan: Plan | None = None
    values: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    general: str | None = None


def _plan_of(name: str, state: FormState) -> tuple[PlanVersion, Plan] | None:
    """The latest version of plan ``name`` and the plan itself; None (with the reason on ``state``) if there
    is none or it does not load any more (e.g. a ``${ENV}`` it needs is not set)."""
    engine = current_service().engine
    version = engine.store.latest_plan(name) if name else None
    if version is None:
        if name:
            state.errors["plan"] = f"There is no plan named {name!r}."
        return None
    try:
        return version, engine.plan(version.id)
    except TrackcheckError as exc:
        state.errors["plan"] = f"This plan does not load: {mask_url_passwords(str(exc))}"
        return None


@bp.route("/runs/new", methods=["GET", "POST"])
def new_run() -> ResponseReturnValue:
    """Pick a plan, fill in its parameters (one field each), start the run and land on its page."""
    source = request.form if request.method == "POST" else request.args
    state = FormState(plan_name=source.get("plan", "").strip())
    chosen = _plan_of(state.plan_name, state)
    if chosen is not None:
        state.plan = chosen[1]
    if request.method == "POST" and chosen is not None:
        state.values = {k: v for k, v in request.form.items() if k != "plan"}
        run_id = _submit(chosen[0], chosen[1], state)
        if run_id is not None:
            return redirect(url_for("dashboard.run_page", run_id=run_id), code=303)
    elif request.method == "POST" and not state.plan_name:
        state.errors["plan"] = "Choose a plan."
    plans = current_service().engine.store.latest_plans()
    status = 422 if state.errors or state.general else 200
    return render_template("dashboard/run_new.html", state=state, plans=plans), status


def _submit(version: PlanVersion, plan: Plan, state: FormState) -> str | None:
    """Validate the form like the API validates JSON and submit; errors land on ``state`` by field."""
    params: dict[str, Any] = {}
    for name in plan.params:
        raw = state.values.get(f"param:{name}", "").strip()
        if raw != "":
            params[name] = raw
    overrides: dict[str, float] = {}
    for name in ("interval", "timeout"):
        raw = state.values.get(name, "").strip()
        if raw:
            try:
                overrides[name] = parse_duration(raw).total_seconds()
            except ValueError as exc:
                state.errors[name] = str(exc)
    expect: list[dict[str, Any]] | None = None
    raw_expect = state.values.get("expect", "").strip()
    if raw_expect:
        try:
            parsed = json.loads(raw_expect)
        except json.JSONDecodeError as exc:
            state.errors["expect"] = f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        else:
            if isinstance(parsed, list):
                expect = parsed
            else:
                state.errors["expect"] = "write a JSON array of event objects"
    if state.errors:
        return None
    try:
        return current_service().engine.submit(version.id, params, expect=expect, overrides=overrides or None)
    except ParamError as exc:
        target = exc.context.get("parameter")
        field_name = f"param:{target}" if target in plan.params else "expect" if target == "expect" else None
        if field_name is not None:
            state.errors[field_name] = mask_url_passwords(exc.message)
        else:
            state.general = mask_url_passwords(str(exc))
    except TrackcheckError as exc:
        state.general = mask_url_passwords(str(exc))
    return None


# -- plans and schedules ------------------------------------------------------------------------------------
def masked_plan_text(text: str, base_dir: str | None) -> str:
    """Plan YAML fit to show, masked exactly as ``GET /api/plans/<name>`` masks it (URL passwords and values
    of secret-looking keys), and also every secret the plan's sources themselves declare (e.g. a header the
    key-name rule does not know). ``${ENV}`` references stay as written: they hold no secret."""
    secrets: list[str] = []
    try:
        plan = load_plan_text(text, origin="<dashboard>", base_dir=Path(base_dir) if base_dir else None)
        for name, spec in plan.sources.items():
            secrets.extend(build_source(name, spec, plan=plan.name).secrets())
        if plan.notify is not None and plan.notify.secret:
            secrets.append(plan.notify.secret)
    except (TrackcheckError, ValueError, KeyError):
        pass  # an old version that no longer loads (missing ${ENV}, removed backend): the regex still masks
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return mask_plan_text(text)


@bp.get("/plans")
def plans() -> ResponseReturnValue:
    engine = current_service().engine
    items = []
    for version in engine.store.latest_plans():
        try:
            plan: Plan | None = engine.plan(version.id)
        except TrackcheckError:
            plan = None
        items.append((version, plan))
    return render_template("dashboard/plans.html", items=items)


@bp.get("/plans/<name>")
def plan_page(name: str) -> ResponseReturnValue:
    """The latest version's YAML (masked), what it declares, and its history; ``?version=N`` shows an older one."""
    engine = current_service().engine
    history = engine.store.plan_history(name)
    if not history:
        abort(404, f"There is no plan named {name!r}.")
    wanted = request.args.get("version", "")
    shown = next((v for v in history if str(v.version) == wanted), None) or history[0]
    try:
        plan: Plan | None = engine.plan(shown.id)
        problem = None
    except TrackcheckError as exc:
        plan, problem = None, mask_url_passwords(str(exc))
    return render_template(
        "dashboard/plan.html",
        name=name,
        shown=shown,
        latest=history[0],
        history=history,
        plan=plan,
        problem=problem,
        text=masked_plan_text(shown.text, shown.base_dir),
    )


@bp.get("/schedules")
def schedules() -> ResponseReturnValue:
    engine = current_service().engine
    rows = [
        {
            "schedule": schedule,
            "params": _params_text(schedule.params),
            "next": next_run_time(engine, schedule.id),
            "error": mask_url_passwords(schedule.last_error or ""),
        }
        for schedule in engine.store.schedules()
    ]
    return render_template("dashboard/schedules.html", rows=rows)


__all__ = ["bp", "masked_plan_text", "session_authenticated"]
