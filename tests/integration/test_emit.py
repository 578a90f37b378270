"""``emit:``, stage 0: trackcheck sends the run's events through the pipeline's front door, then verifies them
in every system. The pipeline here is real enough: a Segment-compatible collector (tests/integration/
collector.py) appends what it accepts to a file, and a loader copies that file into PostgreSQL a little later,
as a warehouse load does. ``trackcheck run`` is a subprocess, as in CI.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from tests.integration.collector import SNOWPLOW_PATH, Collector
from trackcheck import verify

WRITE_KEY = "wk-emit-3141"
PLAN = """
name: emit-segment
key: order_id
params:
  test_id: {required: true}
defaults: {interval: 200ms, timeout: 15s}
sources:
  collector_api: {type: http, url: "http://WRITE_KEY:@COLLECTOR"}
  collector_log: {type: file, path: "LOG"}
  warehouse: {type: sql, url: "WAREHOUSE"}
emit:
  source: collector_api
  format: segment
  stamp: {messageId: "{uuid}", test_id: "{test_id}"}
expect:
  - {event: Order Completed, order_id: o1, revenue: 25.5}
  - {event: Order Completed, order_id: o2, revenue: 7}
  - {event: Product Viewed, order_id: o3}
stages:
  - name: collector
    source: collector_log
    where: {test_id: "{test_id}"}
    select: {order_id: properties.order_id, event: event, message_id: messageId, test_id: properties.test_id}
    compare: {with: emit, fields: [event]}
  - name: warehouse
    source: warehouse
    query: SELECT order_id, event, message_id, test_id FROM tracks
    where: {test_id: "{test_id}"}
    compare: {with: collector, fields: [event, message_id]}
"""


class Loader:
    """Copies the collector's log into ``tracks`` every ``every`` seconds (a warehouse load, later)."""

    def __init__(self, log: Path, url: str, every: float = 0.7) -> None:
        self.log, self.engine, self.every = log, create_engine(url), every
        self.copied = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Loader:
        with self.engine.begin() as db:
            db.execute(text("CREATE TABLE tracks (order_id text, event text, message_id text, test_id text)"))
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.engine.dispose()

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            lines = self.log.read_text().splitlines() if self.log.exists() else []
            fresh = [json.loads(line) for line in lines[self.copied :]]
            if fresh:
                with self.engine.begin() as db:
                    db.execute(
                        text("INSERT INTO tracks VALUES (:order_id, :event, :message_id, :test_id)"),
                        [
                            {
                                "order_id": event["properties"].get("order_id"),
                                "event": event.get("event"),
                                "message_id": event.get("messageId"),
                                "test_id": event["properties"].get("test_id"),
                            }
                            for event in fresh
                        ],
                    )
                self.copied += len(fresh)


class Dropping(Collector):
    """A collector that loses the events ``drop`` says, as a faulty one would (and still answers 200)."""

    def __init__(self, folder: Path, drop: Callable[[dict[str, Any]], bool]) -> None:
        super().__init__(folder)
        self.drop = drop

    def write(self, protocol: str, events: list[dict[str, Any]]) -> None:
        super().write(protocol, [event for event in events if not self.drop(event)])


@pytest.fixture
def pipeline(tmp_path: Path, postgres_url: str) -> Iterator[Callable[..., tuple[Path, Dropping]]]:
    started: list[Any] = []

    def make(drop: Callable[[dict[str, Any]], bool] = lambda event: False) -> tuple[Path, Dropping]:
        collector = Dropping(tmp_path / "collector", drop).__enter__()
        loader = Loader(collector.log, postgres_url).__enter__()
        started.extend([loader, collector])
        plan = tmp_path / "plan.yaml"
        plan.write_text(
            PLAN.replace("COLLECTOR", collector.url.removeprefix("http://"))
            .replace("WRITE_KEY", WRITE_KEY)
            .replace("LOG", str(collector.log))
            .replace("WAREHOUSE", postgres_url)
        )
        return plan, collector

    yield make
    for part in started:
        part.__exit__(None, None, None)


def run(plan: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "trackcheck", "run", str(plan), *args, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_trackcheck_run_sends_the_events_with_unique_ids_and_follows_them_to_the_warehouse(
    pipeline: Callable[..., tuple[Path, Dropping]],
) -> None:
    plan, collector = pipeline()
    done = run(plan, "-p", "test_id=t-emit-1")
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert [s["name"] for s in result["stages"]] == ["emit", "collector", "warehouse"]
    emit = result["stages"][0]
    assert emit["status"] == "passed" and emit["reason"].startswith("sent 3 event(s): POST http://127.0.0.1:")
    assert emit["reason"].endswith("/v1/batch: HTTP 200")
    sent = collector.events()
    assert len(sent) == 3
    ids = [event["messageId"] for event in sent]
    assert len(set(ids)) == 3  # each event its own id
    assert {event["properties"]["test_id"] for event in sent} == {"t-emit-1"}
    assert [event["event"] for event in sent] == ["Order Completed", "Order Completed", "Product Viewed"]
    assert sent[0]["properties"] == {"order_id": "o1", "revenue": 25.5, "test_id": "t-emit-1"}
    # the write key went as basic auth, never in a message
    assert WRITE_KEY not in done.stdout + done.stderr
    # a second run sends new ids: a run never reuses another's
    again = run(plan, "-p", "test_id=t-emit-2")
    assert again.returncode == 0, again.stdout + again.stderr
    assert not set(ids) & {event["messageId"] for event in collector.events()[3:]}


def test_a_collector_that_drops_an_event_fails_the_run_naming_it(
    pipeline: Callable[..., tuple[Path, Dropping]],
) -> None:
    plan, _ = pipeline(drop=lambda event: event["properties"].get("order_id") == "o2")
    done = run(plan, "-p", "test_id=t-emit-3", "--timeout", "3s")
    assert done.returncode == 1, done.stdout + done.stderr
    stages = {s["name"]: s for s in json.loads(done.stdout)["stages"]}
    assert stages["emit"]["status"] == "passed"  # the front door said 200...
    assert stages["collector"]["status"] == "failed"  # ...and lost it
    assert stages["collector"]["missing"] == ["o2"]
    assert stages["warehouse"]["status"] == "skipped"


def test_the_write_key_is_sent_as_basic_auth(tmp_path: Path) -> None:
    """Segment's HTTP API authenticates with the write key as the basic-auth user, the password empty."""
    with Collector(tmp_path / "c") as collector:
        plan = tmp_path / "plan.yaml"
        plan.write_text(
            f"""
name: emit-auth
key: order_id
sources:
  api: {{type: http, url: "http://{WRITE_KEY}:@{collector.url.removeprefix("http://")}"}}
  log: {{type: file, path: "{collector.log}"}}
emit: {{source: api, format: segment}}
expect: [{{event: Signed Up, order_id: a1}}]
stages:
  - name: collector
    source: log
    select: {{order_id: properties.order_id, event: event}}
    compare: {{with: expect, fields: [event]}}
"""
        )
        result = verify(plan, timeout="10s", interval="200ms", min_interval="100ms")
        authorizations = collector.authorizations
    assert result.ok, result.to_dict()
    assert authorizations == ["Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()]


def test_snowplow_events_are_sent_as_self_describing_events(tmp_path: Path) -> None:
    with Collector(tmp_path / "c") as collector:
        plan = tmp_path / "plan.yaml"
        plan.write_text(
            f"""
name: emit-snowplow
key: order_id
params:
  test_id: {{required: true}}
sources:
  api: {{type: http, url: "{collector.url}"}}
  log: {{type: file, path: "{collector.log}"}}
emit: {{source: api, format: snowplow, stamp: {{test_id: "{{test_id}}"}}}}
expect:
  - {{schema: "iglu:com.acme/checkout/jsonschema/1-0-0", order_id: s1, total: 12.5}}
stages:
  - name: collector
    source: log
    where: {{test_id: "{{test_id}}"}}
    select:
      order_id: from_json(ue_pr).data.data.order_id
      total: from_json(ue_pr).data.data.total
      test_id: from_json(ue_pr).data.data.test_id
    compare: {{with: expect, fields: [total]}}
"""
        )
        result = verify(plan, {"test_id": "sp-1"}, timeout="10s", interval="200ms", min_interval="100ms")
        sent = collector.events()
    assert result.ok, result.to_dict()
    assert result.stages[0].reason and SNOWPLOW_PATH in result.stages[0].reason
    (event,) = sent
    assert (event["e"], event["p"]) == ("ue", "srv")
    assert json.loads(event["ue_pr"])["data"]["schema"] == "iglu:com.acme/checkout/jsonschema/1-0-0"


def test_a_refused_send_is_retried_then_the_run_errors_naming_the_answer(tmp_path: Path) -> None:
    """The collector answers 503 (overloaded): retried like any source error until the timeout."""
    with Collector(tmp_path / "c") as collector:
        plan = tmp_path / "plan.yaml"
        plan.write_text(
            f"""
name: emit-refused
key: order_id
sources:
  api: {{type: http, url: "{collector.url}"}}
  log: {{type: file, path: "{collector.log}"}}
emit: {{source: api, format: json, path: /nowhere}}
expect: [{{event: x, order_id: r1}}]
stages:
  - name: collector
    source: log
    compare: {{with: expect}}
"""
        )
        began = time.monotonic()
        result = verify(plan, timeout="2s", interval="200ms", min_interval="100ms")
    emit = result.stages[0]
    assert (result.status, emit.status) == ("error", "error")
    assert "/nowhere: HTTP 404" in (emit.reason or "")
    assert emit.attempts >= 2 and time.monotonic() - began >= 2  # retried until the timeout
    assert result.stages[1].status == "skipped"


def test_emit_mistakes_are_refused_when_the_plan_loads(tmp_path: Path) -> None:
    from trackcheck.errors import PlanError
    from trackcheck.loader import load_plan_text

    base = """
name: bad-emit
key: id
sources:
  api: {type: http, url: "http://127.0.0.1:9"}
  wh: {type: sql, url: "sqlite://"}
EMIT
stages:
  - name: wh
    source: wh
    table: t
    compare: {with: emit}
"""
    cases = {
        "emit: {source: wh}": ("emit", "'wh' is a sql source"),
        "emit: {source: api, topic: t}": ("emit", "emit.topic does not apply to an http source"),
        "emit: {source: api, format: avro}": ("emit.format", "segment"),
        "emit: {source: nope}": ("emit.source", "unknown source 'nope'"),
        "emit: {source: api, stamp: {id: '{nope}'}}": ("emit", "{nope}"),
    }
    for emit, (where, says) in cases.items():
        with pytest.raises(PlanError) as caught:
            load_plan_text(base.replace("EMIT", emit), origin="bad-emit")
        message = str(caught.value)
        assert where in message and says in message, (emit, message)
    # {uuid} and {run_id} are the emit's own, not undeclared parameters; `with: emit` names the stage it adds
    emit = "emit: {source: api, stamp: {id: '{uuid}', run: '{run_id}'}}"
    plan = load_plan_text(base.replace("EMIT", emit), origin="ok")
    assert [s.name for s in plan.stages] == ["emit", "wh"]


def test_emit_onto_a_bus_is_heard_by_a_listening_stage_of_the_same_run(tmp_path: Path) -> None:
    """The emit stage publishes one message per event to MQTT, which keeps no history: the run's MQTT stage
    must already listen when the emit sends (the engine opens it first), or the events would be lost."""
    topic = f"tc-emit/{time.monotonic_ns()}"
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        f"""
name: emit-mqtt
key: event_id
params:
  test_id: {{required: true}}
sources:
  broker: {{type: mqtt, url: "mqtt://127.0.0.1:1883"}}
emit: {{source: broker, format: json, topic: "{topic}/{{test_id}}", stamp: {{test_id: "{{test_id}}"}}}}
expect: [{{event_id: m1, event: boot}}, {{event_id: m2, event: reading}}]
stages:
  - name: devices
    source: broker
    topic: "{topic}/{{test_id}}"
    where: {{test_id: "{{test_id}}"}}
    compare: {{with: emit, fields: [event]}}
"""
    )
    result = verify(plan, {"test_id": "d1"}, timeout="10s", interval="200ms", min_interval="100ms")
    assert result.ok, result.to_dict()
    emit, devices = result.stages
    assert emit.reason == f"published 2 event(s) to topic {topic}/d1"
    assert (devices.found, devices.expected) == (2, 2)


def test_an_emit_needs_events_and_its_stamp_may_give_their_key(tmp_path: Path) -> None:
    from trackcheck.errors import ParamError

    plan = tmp_path / "plan.yaml"
    plan.write_text(
        """
name: emit-keys
key: messageId
sources:
  api: {type: http, url: "http://127.0.0.1:9"}
emit: {source: api, format: segment, stamp: {messageId: "{uuid}"}}
stages:
  - name: api
    source: api
    compare: {with: emit}
"""
    )
    with pytest.raises(ParamError, match="emit: sends the run's expect events, but neither the plan nor the run"):
        verify(plan, timeout="1s", min_interval="100ms")
    # every event gets its messageId from the stamp: none has to carry the key itself; the send then fails
    # (nothing listens on port 9) and the run ends in error, not as a refused request
    result = verify(plan, expect=[{"event": "a"}], timeout="1s", interval="200ms", min_interval="100ms")
    assert result.stages[0].status == "error" and "could not connect" in (result.stages[0].reason or "")


def test_a_plan_with_emit_validates_the_same_when_dumped_and_read_again(tmp_path: Path) -> None:
    from trackcheck.loader import load_plan_text
    from trackcheck.plan.model import Plan

    plan = load_plan_text(
        """
name: round-trip
key: id
sources:
  api: {type: http, url: "http://127.0.0.1:9"}
emit: {source: api, format: json}
expect: [{id: a}]
stages:
  - name: api
    source: api
    compare: {with: emit}
""",
        origin="round-trip",
    )
    again = Plan.model_validate(plan.model_dump(by_alias=True, exclude_none=True))
    assert [s.name for s in again.stages] == ["emit", "api"]
