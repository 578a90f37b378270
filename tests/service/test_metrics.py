"""/metrics: run counts from the state database, source query metrics from the poller, across processes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import values
from prometheus_client.parser import text_string_to_metric_families

from tests.service.conftest import MEM_PLAN, rows, wait_finished
from tests.settings import FAST_SETUP
from trackcheck.engine.core import Engine, store_plan
from trackcheck.service.app import EXTENSION, create_app
from trackcheck.service.metrics import MULTIPROC_ENV
from trackcheck.testing import MemorySource


def scrape(client: FlaskClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics by (name, sorted labels)."""
    answer = client.get("/metrics")
    assert answer.status_code == 200
    assert answer.content_type.startswith("text/plain; version=0.0.4")
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(answer.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def by_type(source_type: str) -> tuple[tuple[str, str], ...]:
    return (("source_type", source_type),)


def runs(status: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return ("trackcheck_runs", (("status", status),))


def test_runs_by_status_and_source_queries_after_a_run(client: FlaskClient) -> None:
    before = scrape(client)
    assert before[runs("passed")] == 0 and before[runs("running")] == 0
    assert before[("trackcheck_state_database_up", ())] == 1
    MemorySource.tables["log"].extend(rows("m1"))
    MemorySource.tables["wh"].extend(rows("m1"))
    run_id = client.post("/api/runs", json={"plan": "mem", "params": {"test_id": "m1"}}).json["id"]
    assert wait_finished(client, run_id)["status"] == "passed"

    after = scrape(client)
    assert after[runs("passed")] == 1 and after[runs("running")] == 0
    queries = after[("trackcheck_source_queries_total", by_type("memory"))]
    assert queries >= 2  # one per stage at least
    assert after[("trackcheck_poll_duration_seconds_count", by_type("memory"))] == queries
    assert after[("trackcheck_poll_duration_seconds_bucket", (("le", "+Inf"), ("source_type", "memory")))] == queries
    assert ("trackcheck_source_errors_total", by_type("memory")) not in after


def test_what_sources_read_and_could_not_decode_is_counted(
    tmp_path: Path, plans_dir: Path, make_app: Callable[..., Flask]
) -> None:
    """``trackcheck_source_unparsed_total``: what a source read but could not decode (here a file with two
    broken lines; bus sources count messages the same way)."""
    log = tmp_path / "events.jsonl"
    log.write_text('{"event_id": "e1"}\nnot json\n{"event_id": "e2"}\n{broken\n')
    (plans_dir / "lines.yaml").write_text(
        f"""
name: lines
key: event_id
defaults: {{interval: 200ms, timeout: 10s}}
sources:
  log: {{type: file, path: "{log}"}}
expect: [{{event_id: e1}}, {{event_id: e2}}]
stages:
  - name: log
    source: log
    compare: {{with: expect}}
"""
    )
    client = make_app().test_client()
    run_id = client.post("/api/runs", json={"plan": "lines", "params": {}}).json["id"]
    assert wait_finished(client, run_id)["status"] == "passed"
    samples = scrape(client)
    assert samples[("trackcheck_source_unparsed_total", by_type("file"))] == 2


def test_source_errors_are_counted(client: FlaskClient) -> None:
    MemorySource.failing.add("log")
    run_id = client.post("/api/runs", json={"plan": "mem", "params": {"test_id": "f1"}}).json["id"]
    deadline = time.monotonic() + 10
    while sum(p["outcome"] == "error" for p in client.get(f"/api/runs/{run_id}/polls").json["polls"]) < 2:
        assert time.monotonic() < deadline, "the failing source was not polled twice"  # back-off: 100 ms
        time.sleep(0.05)
    samples = scrape(client)
    assert samples[("trackcheck_source_errors_total", by_type("memory"))] >= 2
    assert samples[runs("running")] == 1


def test_run_counts_come_from_the_database_not_from_this_process(app: Flask, client: FlaskClient) -> None:
    """A run another process submitted is counted although this process never saw it."""
    other = Engine(app.extensions[EXTENSION].config.db, setup=FAST_SETUP).start()
    try:
        plan_id, _ = store_plan(other, MEM_PLAN, "mem.yaml", None)
        other.submit(plan_id, {"test_id": "elsewhere"})
    finally:
        other.shutdown()
    assert scrape(client)[runs("running")] == 1


def test_one_listener_per_engine_however_many_apps(app: Flask) -> None:
    service = app.extensions[EXTENSION]
    create_app(service=service)
    create_app(service=service)
    assert len(service.engine.query_listeners) == 1


@pytest.fixture
def multiprocess_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """PROMETHEUS_MULTIPROC_DIR for this test; prometheus_client's value class is put back afterwards."""
    directory = tmp_path / "prometheus"
    directory.mkdir()
    monkeypatch.setenv(MULTIPROC_ENV, str(directory))
    original = values.ValueClass
    yield directory
    values.ValueClass = original


WORKER = textwrap.dedent(
    """
    import sys
    from trackcheck.engine.core import QueryFacts
    from trackcheck.service.metrics import Metrics
    from trackcheck.store.repository import Store

    metrics = Metrics(Store(sys.argv[1]), sys.argv[2])
    for failed in (False, False, True):
        metrics.record(QueryFacts("p", "s", "sql", 0.02, "boom" if failed else None))
    """
)


def test_multiprocess_mode_sums_every_worker_process(
    make_app: Callable[..., Flask], multiprocess_dir: Path, tmp_path: Path
) -> None:
    """Gunicorn workers: the one that polls is rarely the one that answers the scrape."""
    db = f"sqlite:///{tmp_path}/tc.db"
    workers = [
        subprocess.Popen([sys.executable, "-c", WORKER, db, str(multiprocess_dir)], env=os.environ.copy())
        for _ in range(2)
    ]
    assert [worker.wait(timeout=60) for worker in workers] == [0, 0]

    client = make_app().test_client()  # a third process answers
    samples = scrape(client)
    assert samples[("trackcheck_source_queries_total", by_type("sql"))] == 6
    assert samples[("trackcheck_source_errors_total", by_type("sql"))] == 2
    assert samples[("trackcheck_poll_duration_seconds_count", by_type("sql"))] == 6
    assert samples[runs("running")] == 0  # the database collector is part of the multiprocess scrape

    MemorySource.tables["log"].extend(rows("mp"))
    MemorySource.tables["wh"].extend(rows("mp"))
    run_id = client.post("/api/runs", json={"plan": "mem", "params": {"test_id": "mp"}}).json["id"]
    assert wait_finished(client, run_id)["status"] == "passed"
    samples = scrape(client)
    assert samples[("trackcheck_source_queries_total", by_type("memory"))] >= 2  # this process's own polls
    assert samples[("trackcheck_source_queries_total", by_type("sql"))] == 6
    assert samples[runs("passed")] == 1
