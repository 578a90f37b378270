"""Webhook notifications (real HTTP server) and recurring runs (real APScheduler job store)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.integration.http_server import HttpTestServer
from tests.settings import FAST_SETUP
from trackcheck.engine.core import Engine, store_plan
from trackcheck.errors import ParamError, PlanError
from trackcheck.foreground import wait_for
from trackcheck.scheduling import Poller, SchedulerConfig
from trackcheck.service import schedules
from trackcheck.service.notify import SIGNATURE_HEADER, Notifier
from trackcheck.service.schedules import ScheduleSpec
from trackcheck.store.repository import aware, utcnow
from trackcheck.testing import MemorySource

PLAN = """
name: hooked
key: event_id
params:
  test_id: {required: true}
defaults: {interval: 100ms, timeout: 10s}
sources:
  log: {type: memory, table: log}
expect:
  - {event_id: e1, event: view}
stages:
  - name: log
    source: log
    where: {test_id: "{test_id}"}
    compare: {with: expect, fields: [event]}
notify: {webhook: "WEBHOOK", secret: s3cret, retries: 2, backoff: 1s}
"""


@pytest.fixture
def server() -> Iterator[HttpTestServer]:
    with HttpTestServer() as server:
        yield server


@pytest.fixture
def poller(tmp_path: Path) -> Iterator[Poller]:
    MemorySource.reset()
    poller = Poller(Engine(f"sqlite:///{tmp_path / 'tc.db'}", setup=FAST_SETUP), SchedulerConfig()).start()
    yield poller
    poller.shutdown()
    MemorySource.reset()


@pytest.fixture
def engine(poller: Poller) -> Engine:
    return poller.engine


def finished_run(engine: Engine, server: HttpTestServer) -> str:
    plan_id = store_plan(engine, PLAN.replace("WEBHOOK", f"{server.url}/hook"), "hooked.yaml", None)[0]
    MemorySource.tables["log"].append({"event_id": "e1", "event": "view", "test_id": "t1"})
    run_id = engine.submit(plan_id, {"test_id": "t1"})
    assert wait_for(engine, run_id, every=0.05).status == "passed"
    return run_id


def test_a_finished_run_is_posted_signed_and_marked_delivered(engine: Engine, server: HttpTestServer) -> None:
    server.reply("/hook", {"ok": True})
    run_id = finished_run(engine, server)
    assert Notifier(engine).deliver_due() == 1
    (request,) = server.requests
    assert request.method == "POST" and request.json()["run_id"] == run_id
    assert request.json()["stages"][0]["status"] == "passed"
    expected = "sha256=" + hmac.new(b"s3cret", request.body, hashlib.sha256).hexdigest()
    assert request.headers[SIGNATURE_HEADER.lower()] == expected
    assert request.headers["idempotency-key"] == run_id  # a receiver drops a repeat delivery by it
    notify = engine.store.run(run_id).notify or {}
    assert (notify["state"], notify["attempts"]) == ("delivered", 1)
    assert Notifier(engine).deliver_due() == 0  # delivered once, never again


def test_a_failing_webhook_is_retried_with_backoff_then_recorded_as_failed(
    engine: Engine, server: HttpTestServer
) -> None:
    server.reply("/hook", {"error": "down"}, status=503)
    run_id = finished_run(engine, server)
    notifier = Notifier(engine)
    assert notifier.deliver_due() == 1
    run = engine.store.run(run_id)
    assert run.notify is not None and run.notify["state"] == "retrying"
    assert "HTTP 503" in run.notify["error"]
    assert notifier.deliver_due() == 0, "the retry waits for its back-off"
    assert notifier.deliver_due(utcnow() + timedelta(seconds=1.5)) == 1  # back-off 1s
    assert notifier.deliver_due(utcnow() + timedelta(seconds=10)) == 1  # then 2s; retries: 2 → 3 attempts
    notify = engine.store.run(run_id).notify or {}
    assert (notify["state"], notify["attempts"]) == ("failed", 3)
    assert notifier.deliver_due(utcnow() + timedelta(hours=1)) == 0
    assert len(server.requests) == 3


def test_a_schedule_fires_runs_of_the_latest_plan_with_its_parameters(
    engine: Engine, poller: Poller, server: HttpTestServer
) -> None:
    store_plan(engine, PLAN.replace("WEBHOOK", f"{server.url}/hook"), "hooked.yaml", None)
    schedule = schedules.add_schedule(poller, ScheduleSpec("hooked", "10 2 * * *", {"test_id": "nightly"}))
    assert schedules.next_run_time(poller, schedule.id) is not None
    job = poller.scheduler.get_job(f"schedule:{schedule.id}") if poller.scheduler else None
    assert job is not None and job.args == (schedule.id,), "only the id goes into the pickled job store"
    assert "02:10:00" in str(job.next_run_time)
    schedules.fire(schedule.id)  # what the cron trigger calls
    stored = engine.store.schedule(schedule.id)
    assert stored is not None and stored.last_run_id and stored.last_error is None
    run = engine.store.run(stored.last_run_id)
    assert (run.plan_name, run.params) == ("hooked", {"test_id": "nightly"})
    assert schedules.delete_schedule(poller, schedule.id)
    assert poller.scheduler is not None and poller.scheduler.get_job(f"schedule:{schedule.id}") is None


def test_bad_schedules_are_refused_and_nothing_is_stored(
    engine: Engine, poller: Poller, server: HttpTestServer
) -> None:
    store_plan(engine, PLAN.replace("WEBHOOK", f"{server.url}/hook"), "hooked.yaml", None)
    with pytest.raises(PlanError, match="cron"):
        schedules.add_schedule(poller, ScheduleSpec("hooked", "every day", {"test_id": "x"}))
    with pytest.raises(PlanError, match="nope"):
        schedules.add_schedule(poller, ScheduleSpec("nope", "10 2 * * *", {"test_id": "x"}))
    with pytest.raises(ParamError, match="test_id"):
        schedules.add_schedule(poller, ScheduleSpec("hooked", "10 2 * * *", {}))
    assert engine.store.schedules() == []


def test_a_schedule_carries_expect_interval_and_timeout_into_the_runs_it_fires(
    engine: Engine, poller: Poller, server: HttpTestServer
) -> None:
    store_plan(engine, PLAN.replace("WEBHOOK", f"{server.url}/hook"), "hooked.yaml", None)
    expect = [{"event_id": "e9", "event": "purchase"}]
    spec = ScheduleSpec("hooked", "10 2 * * *", {"test_id": "n1"}, expect=expect, interval="2s", timeout="5m")
    schedule = schedules.add_schedule(poller, spec)
    schedules.fire(schedule.id)
    stored = engine.store.schedule(schedule.id)
    assert stored is not None and stored.last_run_id is not None and stored.last_error is None
    run = engine.store.run(stored.last_run_id)
    assert run.expect == expect
    assert run.overrides == {"interval": 2.0, "timeout": 300.0}


def test_a_schedule_is_edited_and_paused_and_its_job_follows(
    engine: Engine, poller: Poller, server: HttpTestServer
) -> None:
    store_plan(engine, PLAN.replace("WEBHOOK", f"{server.url}/hook"), "hooked.yaml", None)
    schedule = schedules.add_schedule(poller, ScheduleSpec("hooked", "10 2 * * *", {"test_id": "a"}))

    edit = ScheduleSpec("hooked", "30 4 * * 1", {"test_id": "b"}, timeout="1h")
    edited = schedules.replace_schedule(poller, schedule.id, edit)
    assert edited is not None
    stored = engine.store.schedule(schedule.id)
    assert stored is not None and (stored.cron, stored.params, stored.overrides) == (
        "30 4 * * 1",
        {"test_id": "b"},
        {"timeout": 3600.0},
    )
    assert aware(stored.created_at) == schedule.created_at
    assert "04:30:00" in str(schedules.next_run_time(poller, schedule.id))

    assert schedules.pause_schedule(poller, schedule.id, True) is not None
    assert schedules.next_run_time(poller, schedule.id) is None  # its job stays, without a next run
    schedules.fire(schedule.id)  # a firing that was already due does nothing either
    stored = engine.store.schedule(schedule.id)
    assert stored is not None and stored.paused and stored.last_run_id is None
    assert schedules.pause_schedule(poller, schedule.id, False) is not None
    assert "04:30:00" in str(schedules.next_run_time(poller, schedule.id))

    assert schedules.replace_schedule(poller, "no-such-id", edit) is None
    assert schedules.pause_schedule(poller, "no-such-id", True) is None


@pytest.mark.parametrize(
    ("change", "error", "needle"),
    [
        ({"cron": "61 * * * *"}, PlanError, "cron"),
        ({"params": {"test_id": "x", "region": "eu"}}, ParamError, "region"),
        ({"expect": [{"event": "view"}]}, ParamError, "event_id"),
        ({"interval": "soon"}, PlanError, "interval"),
        ({"timeout": "0s"}, PlanError, "timeout"),
    ],
)
def test_an_edit_that_could_only_fail_when_fired_is_refused_and_changes_nothing(
    engine: Engine,
    poller: Poller,
    server: HttpTestServer,
    change: dict[str, Any],
    error: type[Exception],
    needle: str,
) -> None:
    store_plan(engine, PLAN.replace("WEBHOOK", f"{server.url}/hook"), "hooked.yaml", None)
    schedule = schedules.add_schedule(poller, ScheduleSpec("hooked", "10 2 * * *", {"test_id": "a"}, interval="1s"))
    edit = replace(ScheduleSpec("hooked", "10 2 * * *", {"test_id": "z"}), **change)
    with pytest.raises(error, match=needle):
        schedules.replace_schedule(poller, schedule.id, edit)
    stored = engine.store.schedule(schedule.id)
    assert stored is not None and (stored.cron, stored.params, stored.overrides) == (
        "10 2 * * *",
        {"test_id": "a"},
        {"interval": 1.0},
    )
