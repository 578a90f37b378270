"""Schemathesis against a real ``trackcheck serve``: whatever a client sends, the answer is one the API
document promises, never a 5xx.

Every operation of ``GET /api/openapi.json`` gets ``MAX_EXAMPLES`` generated requests (valid and invalid
ones: huge numbers, odd Unicode, missing and extra keys) plus schemathesis's boundary cases, with a fixed
derandomized seed. Every answer must be documented for its operation (status code, content type, body
schema) and none may be a server error. Known names (the plan, a run, a schedule) are mixed into the
generated strings, so requests also reach real objects, not only 404s.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

TOKEN = "fuzz-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: generated requests per operation (plus the boundary cases of the coverage phase); a few seconds each
MAX_EXAMPLES = 30
PLAN = """
name: fuzz
description: events reach a spool folder
key: event_id
params:
  test_id: {required: true}
  limit: {type: integer}
defaults: {interval: 1s, timeout: 20s}
sources:
  spool: {type: file, path: "SPOOL/*.jsonl", format: jsonl}
expect:
  - {event_id: e1, event: view}
stages:
  - name: spool
    source: spool
    where: {test_id: "{test_id}"}
    compare: {with: expect, fields: [event]}
"""
#: the checks that say "the answer is documented and no server error", and, since the document and the
#: validation come from the same models, "whatever the document forbids is refused" (an unknown key, a
#: number out of range, a wrong type: 4xx). Not ``positive_data_acceptance``: a schema-valid request may
#: still name a plan that does not exist (404), which is the API's answer, not a fault
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
    "negative_data_rejection",
)
#: the answers that refuse a request (``negative_data_rejection``, the last of ``CHECKS``)
REFUSALS = (400, 401, 403, 404, 405, 406, 413, 415, 422)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One ``trackcheck serve`` (one worker, SQLite state, an API token) with a plan, a run and a schedule."""
    tmp = tmp_path_factory.mktemp("fuzz")
    spool, plans = tmp / "spool", tmp / "plans"
    spool.mkdir()
    plans.mkdir()
    (spool / "a.jsonl").write_text('{"event_id": "e1", "event": "view", "test_id": "t1"}\n', encoding="utf-8")
    (plans / "fuzz.yaml").write_text(PLAN.replace("SPOOL", str(spool)), encoding="utf-8")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp / "serve.log"
    env = {
        **os.environ,
        "TRACKCHECK_API_TOKEN": TOKEN,
        # schemathesis sends requests without the token too (401s): they must not lock the test client out
        "TRACKCHECK_LOGIN_RATE_LIMIT": "1000000 per minute",
    }
    args = [
        sys.executable, "-m", "trackcheck", "serve", "--port", str(port), "--db", f"sqlite:///{tmp / 'state.db'}",
        "--plans", str(plans), "--workers", "1",
    ]  # fmt: skip
    with log.open("ab") as out:
        process = subprocess.Popen(args, stdout=out, stderr=out, env=env, start_new_session=True)
    try:
        _wait_healthy(url, process, log)
        run = httpx.post(f"{url}/api/runs", json={"plan": "fuzz", "params": {"test_id": "t1"}}, headers=AUTH)
        schedule = httpx.post(
            f"{url}/api/schedules",
            json={"plan": "fuzz", "cron": "0 3 * * *", "params": {"test_id": "t2"}},
            headers=AUTH,
        )
        assert run.status_code == 202 and schedule.status_code == 201, (run.text, schedule.text)
        yield {"url": url, "log": log, "known": ["fuzz", "spool", run.json()["id"], schedule.json()["id"]]}
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def _wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, f"serve exited: {log.read_text()}"
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"serve did not become healthy: {log.read_text()}")


def _config(served: dict[str, Any]) -> str:
    """schemathesis.toml: bounded, derandomized, only the checks of ``CHECKS``, the known names mixed in."""
    quoted = ", ".join(json.dumps(value) for value in served["known"])
    enabled = "".join(f"\n[checks.{name}]\nenabled = true\n" for name in CHECKS)
    # a body the document forbids may also be refused for its size (413) before anything reads it
    enabled += f"expected-statuses = {json.dumps([str(code) for code in REFUSALS])}\n"
    return f"""
request-timeout = 30
workers = 2

[headers]
Authorization = {json.dumps(AUTH["Authorization"])}

[generation]
max-examples = {MAX_EXAMPLES}
deterministic = true
database = "none"

[generation.dictionaries.string]
dictionary = "known"
probability = 0.2

[dictionaries.known]
values = [{quoted}]

[phases.examples]
enabled = false

[phases.stateful]
enabled = false

[checks]
enabled = false
{enabled}"""


def test_every_answer_is_documented_and_none_is_a_server_error(served: dict[str, Any], tmp_path: Path) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text(_config(served), encoding="utf-8")
    started = time.monotonic()
    finished = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "--config-file",
            str(config),
            "--no-color",
            "run",
            f"{served['url']}/api/openapi.json",
            "--phases",
            "coverage,fuzzing",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    took = time.monotonic() - started
    report = finished.stdout + finished.stderr
    assert finished.returncode == 0, f"schemathesis found problems ({took:.0f} s):\n{report}"
    # every operation was exercised: a run that tested nothing would pass too
    total = re.search(r"Operations:\s+(\d+) selected / (\d+) total", report)
    assert total is not None and total.group(1) == total.group(2) and int(total.group(2)) >= 20, report
    assert f"Tested: {total.group(2)}" in report, report
