"""The pytest plugin as a test suite uses it: inner pytest runs (``pytester``) with the ``trackcheck`` fixture,
in-process, under pytest-xdist and against a real ``trackcheck serve``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.test_serve import Served
from tests.settings import MIN_INTERVAL

pytest_plugins = ["pytester"]

#: one stage reading ``events-<test_id>.jsonl`` beside the plan (an absolute folder when the service runs it)
PLAN = """
name: plugin-demo
key: event_id
params:
  test_id: {required: true}
defaults: {interval: 100ms, timeout: 1m}
sources:
  log: {type: file, format: jsonl}
stages:
  - name: collector
    source: log
    path: "FOLDERevents-{test_id}.jsonl"
    where: {test_id: "{test_id}"}
    compare: {with: expect, fields: [event, amount]}
"""

#: what the inner tests share: ``emit`` writes a test's events where the plan reads them
CONFTEST = """
import json
from pathlib import Path

FOLDER = Path(__file__).parent if not {folder!r} else Path({folder!r})
PLAN = {plan!r}
EXPECT = [
    {{"event_id": "e1", "event": "view", "amount": 1.5}},
    {{"event_id": "e2", "event": "buy", "amount": 2}},
    {{"event_id": "e3", "event": "buy", "amount": 3}},
]


def emit(test_id, events):
    with (FOLDER / f"events-{{test_id}}.jsonl").open("w") as log:
        for event in events:
            log.write(json.dumps({{**event, "test_id": test_id}}) + "\\n")
"""

WRONG = '[{"event_id": "e1", "event": "view", "amount": 1}, {"event_id": "e2", "event": "buy", "amount": 2}]'


def _suite(pytester: pytest.Pytester, plan: str = "plan.yaml", folder: str = "") -> None:
    pytester.makeconftest(CONFTEST.format(folder=folder, plan=plan))
    (pytester.path / "plan.yaml").write_text(PLAN.replace("FOLDER", ""))


def _fast() -> list[str]:
    return [f"--trackcheck-min-interval={MIN_INTERVAL}", "-p", "no:cacheprovider"]


def test_a_passing_verify_returns_the_result(pytester: pytest.Pytester) -> None:
    _suite(pytester)
    pytester.makepyfile(
        """
        from conftest import EXPECT, PLAN, emit

        def test_pass(trackcheck):
            emit("t1", EXPECT)
            result = trackcheck.verify(PLAN, params={"test_id": "t1"}, expect=EXPECT)
            assert result.ok and result.stage("collector").found == 3
        """
    )
    pytester.runpytest(*_fast()).assert_outcomes(passed=1)


def test_a_failing_verify_fails_the_test_with_the_diff(pytester: pytest.Pytester) -> None:
    _suite(pytester)
    pytester.makepyfile(
        f"""
        import json
        from conftest import EXPECT, PLAN, emit

        def test_fail(trackcheck):
            emit("t2", json.loads({WRONG!r}))
            trackcheck.verify(PLAN, params={{"test_id": "t2"}}, expect=EXPECT, timeout="1s")

        def test_check_false_returns_the_failed_result(trackcheck):
            emit("t3", json.loads({WRONG!r}))
            result = trackcheck.verify(PLAN, params={{"test_id": "t3"}}, expect=EXPECT, timeout="1s", check=False)
            assert result.status == "failed" and result.stage("collector").missing == ["e3"]
        """
    )
    outcome = pytester.runpytest(*_fast())
    outcome.assert_outcomes(passed=1, failed=1)
    text = outcome.stdout.str()
    assert "VerificationFailed: trackcheck: plan 'plugin-demo' failed" in text
    assert "stage 'collector': failed:" in text
    assert "missing (1): e3" in text
    assert "e1.amount: expected 1.5, got 1" in text
    assert "{'run_id'" not in text, "the message is a diff, not a dict dump"


@pytest.mark.parametrize("where", ["option", "ini"])
def test_the_default_timeout_applies_to_every_verify(pytester: pytest.Pytester, where: str) -> None:
    _suite(pytester)
    pytester.makepyfile(
        """
        from conftest import EXPECT, PLAN, emit

        def test_never_complete(trackcheck):
            emit("t4", EXPECT[:1])
            trackcheck.verify(PLAN, params={"test_id": "t4"}, expect=EXPECT)
        """
    )
    args = _fast()
    if where == "option":
        args.append("--trackcheck-timeout=300ms")
    else:
        pytester.makeini("[pytest]\ntrackcheck_timeout = 300ms\n")
    outcome = pytester.runpytest(*args)
    outcome.assert_outcomes(failed=1)
    assert "timed out after 300ms" in outcome.stdout.str()  # not the plan's 1m


def test_an_invalid_duration_is_a_usage_error(pytester: pytest.Pytester) -> None:
    _suite(pytester)
    pytester.makepyfile("def test_nothing(): pass")
    outcome = pytester.runpytest("--trackcheck-timeout=soon", "-p", "no:cacheprovider")
    assert outcome.ret == pytest.ExitCode.USAGE_ERROR
    assert "--trackcheck-timeout" in outcome.stderr.str()


def test_xdist_workers_verify_side_by_side(pytester: pytest.Pytester) -> None:
    _suite(pytester)
    pytester.makepyfile(
        """
        import pytest
        from conftest import EXPECT, PLAN, emit

        @pytest.mark.parametrize("n", range(4))
        def test_pass(trackcheck, n):
            emit(f"x{n}", EXPECT)
            assert trackcheck.verify(PLAN, params={"test_id": f"x{n}"}, expect=EXPECT).ok
        """
    )
    outcome = pytester.runpytest_subprocess(*_fast(), "-n", "2", "-v")
    outcome.assert_outcomes(passed=4)
    text = outcome.stdout.str()
    assert "[gw0]" in text and "[gw1]" in text, "both workers verified"


def test_remote_mode_runs_the_plan_on_the_service(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TRACKCHECK_API_TOKEN", raising=False)
    data, plans = tmp_path / "data", tmp_path / "plans"
    data.mkdir()
    plans.mkdir()
    (plans / "demo.yaml").write_text(PLAN.replace("FOLDER", f"{data}/"))
    token = "plugin-test-runner-token"
    config = tmp_path / "trackcheck.toml"
    config.write_text(f'[[tokens]]\nname = "ci"\nrole = "runner"\ntoken = "{token}"\n')
    # the plan is named on the service ("plugin-demo"); locally only the events are written
    _suite(pytester, plan="plugin-demo", folder=str(data))
    pytester.makepyfile(
        f"""
        import json
        from conftest import EXPECT, PLAN, emit

        def test_pass(trackcheck):
            emit("r1", EXPECT)
            result = trackcheck.verify(PLAN, params={{"test_id": "r1"}}, expect=EXPECT)
            assert result.ok and result.stage("collector").found == 3

        def test_fail(trackcheck):
            emit("r2", json.loads({WRONG!r}))
            trackcheck.verify(PLAN, params={{"test_id": "r2"}}, expect=EXPECT, timeout="1s")

        def test_unknown_plan(trackcheck):
            trackcheck.verify("no-such-plan", params={{"test_id": "r3"}})
        """
    )
    served = Served(tmp_path, plans, workers=1)
    served.args += ["--config", str(config)]
    served.start()
    try:
        outcome = pytester.runpytest("-p", "no:cacheprovider", f"--trackcheck-url={served.url}")
        text = outcome.stdout.str()
        assert "401" in text, "without the token the service refuses"
        outcome = pytester.runpytest(
            "-p", "no:cacheprovider", f"--trackcheck-url={served.url}", f"--trackcheck-token={token}"
        )
        outcome.assert_outcomes(passed=1, failed=2)
        text = outcome.stdout.str()
        assert f"trackcheck: service at {served.url}" in text
        assert "missing (1): e3" in text and "e1.amount: expected 1.5, got 1" in text
        assert "PlanError" in text and "no-such-plan" in text
    finally:
        served.stop()


EMIT_PLAN = """
name: plugin-emit
key: event_id
params:
  test_id: {{required: true}}
defaults: {{interval: 100ms, timeout: 10s}}
sources:
  api: {{type: http, url: "{url}"}}
  log: {{type: file, path: "{log}"}}
emit: {{source: api, format: json, path: /collect, stamp: {{test_id: "{{test_id}}"}}}}
expect: [{{event_id: e1, event: view}}, {{event_id: e2, event: buy}}]
stages:
  - name: collector
    source: log
    where: {{test_id: "{{test_id}}"}}
    compare: {{with: expect, fields: [event]}}
"""


def test_emit_and_verify_sends_the_events_then_follows_them(pytester: pytest.Pytester) -> None:
    _suite(pytester)
    pytester.makepyfile(
        f"""
        import json
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from threading import Thread

        EMIT_PLAN = {EMIT_PLAN!r}

        def collector(log):
            class Handler(BaseHTTPRequestHandler):
                def do_POST(self):
                    events = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                    with open(log, "a") as out:
                        out.writelines(json.dumps(event) + "\\n" for event in events)
                    self.send_response(204)
                    self.end_headers()

                def log_message(self, *args):
                    pass

            server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
            Thread(target=server.serve_forever, daemon=True).start()
            return server

        def test_sends_then_verifies(trackcheck, tmp_path):
            log = tmp_path / "events.jsonl"
            server = collector(log)
            plan = tmp_path / "emit.yaml"
            plan.write_text(EMIT_PLAN.format(url=f"http://127.0.0.1:{{server.server_port}}", log=log))
            result = trackcheck.emit_and_verify(plan, params={{"test_id": "x1"}})
            server.shutdown()
            assert [s.name for s in result.stages] == ["emit", "collector"]
            assert [json.loads(line)["test_id"] for line in log.read_text().splitlines()] == ["x1", "x1"]

        def test_a_plan_without_emit_is_refused(trackcheck):
            trackcheck.emit_and_verify("plan.yaml", params={{"test_id": "x2"}})
        """
    )
    outcome = pytester.runpytest(*_fast())
    outcome.assert_outcomes(passed=1, failed=1)
    assert "emit_and_verify needs a plan with a top-level 'emit:' (use verify otherwise)" in outcome.stdout.str()
