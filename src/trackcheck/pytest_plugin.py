"""The pytest plugin: a ``trackcheck`` fixture whose ``verify`` fails the test with the diff.

Installed with trackcheck (entry point ``pytest11``), so a test only asks for the fixture::

    def test_checkout(trackcheck, tmp_path):
        ...  # drive the pipeline
        trackcheck.verify("plans/checkout.yaml", params={"test_id": tid}, expect=events, timeout="30s")

``emit_and_verify`` (same arguments) is for a plan with an ``emit:``: trackcheck sends the events itself,
then follows them through every stage.

A run that did not pass raises ``VerificationFailed`` (an ``AssertionError``) whose message lists, per
stage, the missing, unexpected and duplicate keys and each mismatch with both values; ``check=False``
returns the RunResult instead. Errors that mean "could not verify" (an invalid plan, an unreachable
service) stay ``TrackcheckError``s: pytest reports them as errors, not as failures.

By default every call verifies in-process with an in-memory state database, so pytest-xdist workers
share nothing. ``--trackcheck-url`` sends each run to a trackcheck service instead (``POST /api/runs``,
then ``GET /api/runs/{id}`` until it ended); the plan must then be known to the service by name.

Options (each also an ini key without the dashes, ``trackcheck_url``..., except the token, a secret that
belongs in the environment rather than in a committed file):

    --trackcheck-url URL            verify through this service instead of in-process
    --trackcheck-token TOKEN        its API token (default: $TRACKCHECK_API_TOKEN)
    --trackcheck-timeout DURATION   default ``timeout`` of every verify
    --trackcheck-min-interval DUR   in-process: the shortest poll interval a plan may ask for (1s)
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pytest

from trackcheck.errors import ParamError, PlanError, TrackcheckError
from trackcheck.plan.model import EMIT_STAGE

if TYPE_CHECKING:
    from trackcheck.engine.result import RunResult, StageResult

#: how many items of one evidence list the failure message shows; the rest is counted
SHOWN = 20
#: how often the remote mode asks the service whether the run has ended, in seconds
REMOTE_POLL = 0.5
DEFAULT_MIN_INTERVAL = "1s"
TOKEN_ENV = "TRACKCHECK_API_TOKEN"  # noqa: S105 (the variable's name, not a token)


class VerificationFailed(AssertionError):
    """The run ended without passing; the message is the diff, ``result`` the whole RunResult."""

    def __init__(self, result: RunResult) -> None:
        self.result = result
        super().__init__(format_failure(result))


# --- the diff ---------------------------------------------------------------------------------------------


def format_failure(result: RunResult) -> str:
    """A run's outcome as a test failure: one line per stage, the evidence under each that did not pass."""
    lines = [f"trackcheck: plan {result.plan!r} {result.status} (run {result.run_id})"]
    for stage in result.stages:
        lines.extend(_stage_lines(stage))
    return "\n".join(lines)


def _stage_lines(stage: StageResult) -> list[str]:
    head = f"stage {stage.name!r}: {stage.status}"
    if stage.status == "passed":
        return [head]
    if stage.reason:
        head += f": {stage.reason}"
    lines = [head]
    if stage.error and stage.error != stage.reason:
        lines.append(f"  error ({stage.error_kind or 'unknown kind'}): {stage.error}")
    if stage.expected is not None or stage.found is not None:
        lines.append(f"  expected {_count(stage.expected)} events, found {_count(stage.found)}")
    for title, keys in (("missing", stage.missing), ("unexpected", stage.unexpected), ("duplicates", stage.duplicates)):
        if keys:
            shown = ", ".join(_key(key) for key in keys[:SHOWN])
            more = f", ... and {len(keys) - SHOWN} more" if len(keys) > SHOWN else ""
            lines.append(f"  {title} ({len(keys)}): {shown}{more}")
    lines.extend(_listed("mismatches", stage.mismatches, _mismatch))
    lines.extend(_listed("schema violations", stage.violations, _violation))
    lines.extend(_listed("counts", stage.counts, _count_difference))
    lines.extend(_listed("warnings", stage.warnings, str))
    return lines


def _listed(title: str, items: list[Any], show: Any) -> list[str]:
    if not items:
        return []
    lines = [f"  {title} ({len(items)}):"]
    lines.extend(f"    {show(item)}" for item in items[:SHOWN])
    if len(items) > SHOWN:
        lines.append(f"    ... and {len(items) - SHOWN} more (all of them: the exception's result)")
    return lines


def _count(value: int | None) -> str:
    return "?" if value is None else str(value)


def _key(key: Any) -> str:
    """A key as the user wrote it: ``e1``, or ``(event_id='e1', source='web')`` for a composite key."""
    if isinstance(key, Mapping):
        return "(" + ", ".join(f"{name}={value!r}" for name, value in key.items()) + ")"
    return str(key)


def _value(value: Any) -> str:
    """A field value the way pytest shows one: strings quoted, so ``'1'`` and ``1`` differ."""
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, default=str)
    return repr(value)


def _mismatch(item: Mapping[str, Any]) -> str:
    expected, actual = _value(item.get("expected")), _value(item.get("actual"))
    return f"{_key(item.get('key'))}.{item.get('field')}: expected {expected}, got {actual}"


def _violation(item: Mapping[str, Any]) -> str:
    where = f" at {item['path']}" if item.get("path") else ""
    return f"{_key(item.get('key'))}{where}: {item.get('message')}"


def _count_difference(item: Mapping[str, Any]) -> str:
    group = _key(item.get("group") or {}) or "all"
    measure = f" {item['measure']}" if item.get("measure") else ""
    return f"{group}{measure}: expected {_value(item.get('expected'))}, got {_value(item.get('actual'))}"


# --- where runs are verified ------------------------------------------------------------------------------


class Backend(Protocol):
    """Runs one verification to its end; raises only when it could not be run (TrackcheckError)."""

    def run(
        self,
        plan: str | Path,
        params: Mapping[str, Any],
        expect: list[dict[str, Any]] | None,
        interval: str | float | None,
        timeout: str | float | None,
    ) -> RunResult: ...

    def describe(self) -> str: ...


@dataclass(frozen=True)
class InProcess:
    """``trackcheck.verify`` in this process: a fresh engine and in-memory state database per call."""

    min_interval: str

    def run(
        self,
        plan: str | Path,
        params: Mapping[str, Any],
        expect: list[dict[str, Any]] | None,
        interval: str | float | None,
        timeout: str | float | None,
    ) -> RunResult:
        from trackcheck.foreground import verify

        return verify(plan, params, expect, interval=interval, timeout=timeout, min_interval=self.min_interval)

    def describe(self) -> str:
        return f"in-process (min interval {self.min_interval})"


@dataclass(frozen=True)
class Remote:
    """A running trackcheck service: submit the run by plan name, then read it until it has ended."""

    url: str
    token: str | None

    def run(
        self,
        plan: str | Path,
        params: Mapping[str, Any],
        expect: list[dict[str, Any]] | None,
        interval: str | float | None,
        timeout: str | float | None,
    ) -> RunResult:
        import httpx

        body: dict[str, Any] = {"plan": plan_name(plan), "params": dict(params)}
        for key, value in (("expect", expect), ("interval", interval), ("timeout", timeout)):
            if value is not None:
                body[key] = value
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        base = self.url.rstrip("/")
        try:
            with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
                answer = client.post("/api/runs", json=body)
                if answer.status_code != 202:
                    raise _service_error(answer, body["plan"])
                run_id = answer.json()["id"]
                while True:
                    answer = client.get(f"/api/runs/{run_id}")
                    if answer.status_code != 200:
                        raise _service_error(answer, body["plan"])
                    result = result_from_json(answer.json())
                    if result.finished:
                        return result
                    time.sleep(REMOTE_POLL)
        except httpx.HTTPError as exc:
            raise TrackcheckError(f"cannot reach the trackcheck service at {base}: {exc}") from exc

    def describe(self) -> str:
        return f"service at {self.url}" + (" (with a token)" if self.token else "")


def plan_name(plan: str | Path) -> str:
    """The name a service knows a plan by: ``plan`` itself, or the ``name`` inside a local plan file, so
    one test runs unchanged in-process and against a service that loaded the same file."""
    path = Path(plan)
    if _is_plan_file(plan):
        import yaml

        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise PlanError(f"cannot read the plan's name: {exc}", plan=str(plan)) from exc
        name = document.get("name") if isinstance(document, dict) else None
        if not isinstance(name, str):
            raise PlanError("the plan file has no name to send to the service", plan=str(plan))
        return name
    return str(plan)


def _service_error(answer: Any, plan: str) -> TrackcheckError:
    """The service's ``{"error", "detail"}`` answer as the exception in-process verify would raise."""
    try:
        payload = answer.json()
        error, detail = str(payload.get("error")), str(payload.get("detail"))
    except ValueError:
        error, detail = "error", answer.text[:200]
    message = f"the service answered {answer.status_code} {error}: {detail}"
    if error == "invalid_params":
        return ParamError(message, plan=plan)
    if error in ("invalid_plan", "bad_request") or (answer.status_code == 404 and answer.request.method == "POST"):
        return PlanError(message, plan=plan)
    return TrackcheckError(message, plan=plan)


def result_from_json(document: Mapping[str, Any]) -> RunResult:
    """``GET /api/runs/{id}`` as the RunResult in-process verify returns (keys it does not know are dropped)."""
    from trackcheck.engine.result import RunResult, StageResult

    known = {f.name for f in fields(StageResult)}
    stages = [StageResult(**{k: v for k, v in stage.items() if k in known}) for stage in document.get("stages", [])]
    return RunResult(
        run_id=document["run_id"],
        plan=document["plan"],
        status=document["status"],
        params=dict(document.get("params") or {}),
        stages=stages,
    )


# --- the fixture ------------------------------------------------------------------------------------------


class Trackcheck:
    """What the ``trackcheck`` fixture gives a test."""

    def __init__(self, backend: Backend, timeout: str | None = None) -> None:
        self.backend = backend
        self.timeout = timeout

    def verify(
        self,
        plan: str | Path,
        params: Mapping[str, Any] | None = None,
        expect: list[dict[str, Any]] | None = None,
        *,
        timeout: str | float | None = None,
        interval: str | float | None = None,
        check: bool = True,
    ) -> RunResult:
        """Verify one run of ``plan`` (a plan file; in remote mode a plan name, or a file whose ``name`` is
        sent) and return its RunResult; raise ``VerificationFailed`` with the diff if it did not pass,
        unless ``check=False``. ``timeout`` defaults to ``--trackcheck-timeout``, then to the plan's."""
        __tracebackhide__ = True
        result = self.backend.run(plan, params or {}, expect, interval, self.timeout if timeout is None else timeout)
        if check and not result.ok:
            raise VerificationFailed(result)
        return result

    def emit_and_verify(
        self,
        plan: str | Path,
        params: Mapping[str, Any] | None = None,
        expect: list[dict[str, Any]] | None = None,
        *,
        timeout: str | float | None = None,
        interval: str | float | None = None,
        check: bool = True,
    ) -> RunResult:
        """Send ``expect`` (or the plan's) through the plan's ``emit:``, then verify every stage: ``verify``
        for a plan that must send its events itself. A plan without ``emit:`` is a PlanError (raised before
        anything runs for a plan file): a test meant to send never silently only looks."""
        __tracebackhide__ = True
        if _is_plan_file(plan) and not _declares_emit(Path(plan)):
            raise PlanError(
                "emit_and_verify needs a plan with a top-level 'emit:' (use verify otherwise)", plan=str(plan)
            )
        result = self.verify(plan, params, expect, timeout=timeout, interval=interval, check=False)
        if not result.stages or result.stages[0].name != EMIT_STAGE:
            raise PlanError(
                "emit_and_verify needs a plan with a top-level 'emit:' (use verify otherwise)", plan=str(plan)
            )
        if check and not result.ok:
            raise VerificationFailed(result)
        return result


NO_EMIT = "emit_and_verify needs a plan with a top-level 'emit:' (use verify otherwise)"


def _is_plan_file(plan: str | Path) -> bool:
    return isinstance(plan, Path) or Path(plan).suffix in (".yaml", ".yml")


def _declares_emit(path: Path) -> bool:
    """Whether a plan file has a top-level ``emit:`` (read as YAML only: loading it is ``verify``'s job)."""
    import yaml

    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise PlanError(f"cannot read the plan: {exc}", plan=str(path)) from exc
    return isinstance(document, dict) and isinstance(document.get("emit"), dict)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("trackcheck", "trackcheck: verify tracking events")
    group.addoption("--trackcheck-url", metavar="URL", help="verify through this trackcheck service")
    group.addoption("--trackcheck-token", metavar="TOKEN", help=f"the service's API token (default: ${TOKEN_ENV})")
    group.addoption("--trackcheck-timeout", metavar="DURATION", help="default timeout of every verify (e.g. 30s)")
    group.addoption(
        "--trackcheck-min-interval",
        metavar="DURATION",
        help=f"in-process: the shortest poll interval a plan may ask for (default {DEFAULT_MIN_INTERVAL})",
    )
    parser.addini("trackcheck_url", "verify through this trackcheck service")
    parser.addini("trackcheck_timeout", "default timeout of every trackcheck verify")
    parser.addini("trackcheck_min_interval", "in-process: the shortest poll interval a plan may ask for")


def _setting(config: pytest.Config, name: str) -> str | None:
    value = config.getoption(f"trackcheck_{name}") or config.getini(f"trackcheck_{name}")
    return str(value) if value else None


def _backend(config: pytest.Config) -> Backend:
    url = _setting(config, "url")
    if url:
        return Remote(url, config.getoption("trackcheck_token") or os.environ.get(TOKEN_ENV) or None)
    return InProcess(_setting(config, "min_interval") or DEFAULT_MIN_INTERVAL)


def pytest_configure(config: pytest.Config) -> None:
    """Refuse a duration that does not parse before any test runs, not in every test."""
    from trackcheck.plan.durations import parse_duration

    for name in ("timeout", "min_interval"):
        value = _setting(config, name)
        if value is not None:
            try:
                parse_duration(value)
            except ValueError as exc:
                raise pytest.UsageError(f"trackcheck_{name} / --trackcheck-{name.replace('_', '-')}: {exc}") from None


def pytest_report_header(config: pytest.Config) -> str:
    return f"trackcheck: {_backend(config).describe()}"


@pytest.fixture
def trackcheck(pytestconfig: pytest.Config) -> Trackcheck:
    """Verify tracking events from a test: ``trackcheck.verify(plan, params=..., expect=...)``."""
    return Trackcheck(_backend(pytestconfig), _setting(pytestconfig, "timeout"))
