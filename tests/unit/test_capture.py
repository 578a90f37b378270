"""The poller's listeners for buses without history (engine/capture.py), on a fake in-memory bus: what is
heard is buffered in the state database and read by the polls; a restart loses nothing a durable listener
kept, and a gap in listening is said on the run. The real MQTT and RabbitMQ listeners are tested in
tests/integration/test_source_mqtt.py and test_source_rabbitmq.py."""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import pytest
from sqlalchemy import func, select
from tests.settings import FAST_SETUP
from tests.waiting import eventually

from trackcheck.engine import Engine, store_plan
from trackcheck.foreground import wait_for
from trackcheck.plan.model import StageSpec
from trackcheck.plan.templates import render
from trackcheck.scheduling import Poller, SchedulerConfig
from trackcheck.sources import register
from trackcheck.sources.base import FetchRequest, FetchResult, Listener, Message, Source, SourceOptions
from trackcheck.sources.bus import BusRead, to_records
from trackcheck.store.captures import CaptureStore
from trackcheck.store.models import Capture
from trackcheck.store.repository import Store


class Bus:
    """A broker keeping no history: a message reaches the subscriptions that exist when it is published.
    A durable subscription (a queue) keeps collecting while its listener is closed, until removed."""

    queues: ClassVar[dict[str, list[bytes]]] = {}
    durable: ClassVar[set[str]] = set()
    removed: ClassVar[list[str]] = []
    lock = threading.Lock()

    @classmethod
    def reset(cls) -> None:
        cls.queues.clear()
        cls.durable.clear()
        cls.removed.clear()

    @classmethod
    def publish(cls, topic: str, event: dict[str, Any]) -> None:
        with cls.lock:
            for name, queue in cls.queues.items():
                if name == topic:
                    queue.append(json.dumps(event).encode())


class FakeListener(Listener):
    def __init__(self, topic: str, durable: bool) -> None:
        self.topic, self.durable = topic, durable
        self.taken = 0
        with Bus.lock:
            Bus.queues.setdefault(topic, [])

    def drain(self, limit: int) -> list[Message]:
        with Bus.lock:
            queue = Bus.queues.get(self.topic, [])
            self.taken = min(limit, len(queue))
            return [Message(p, {"_topic": self.topic}, datetime.now(UTC)) for p in queue[: self.taken]]

    def commit(self) -> None:
        with Bus.lock:
            del Bus.queues[self.topic][: self.taken]

    def close(self, *, remove: bool) -> None:
        with Bus.lock:
            if remove or not self.durable:
                Bus.queues.pop(self.topic, None)
            if remove:
                Bus.removed.append(self.topic)


class FakeBusOptions(SourceOptions):
    durable: bool = True


class FakeBusRead(BusRead):
    places: ClassVar[tuple[str, ...]] = ("topic",)

    topic: str | None = None


@register
class FakeBusSource(Source):
    type_name = "fakebus"
    options_model = FakeBusOptions
    read_model = FakeBusRead
    listens = True
    listened: ClassVar[dict[str, int]] = defaultdict(int)

    def channel(self, stage: StageSpec, params: Mapping[str, Any]) -> str:
        return f"topic {render(FakeBusRead.of(stage).topic, params)}"

    def listen(self, stage: StageSpec, params: Mapping[str, Any], identity: str | None = None) -> Listener:
        topic = render(FakeBusRead.of(stage).topic, params)
        self.listened[topic] += 1
        return FakeListener(topic, durable=self.options.durable)  # type: ignore[attr-defined]

    def fetch(self, request: FetchRequest) -> FetchResult:
        return to_records(request.captured or [], request, FakeBusRead.of(request.stage), self, 1_000_000)


PLAN = """
name: listening
key: event_id
params:
  test_id: {required: true}
defaults: {interval: 100ms, timeout: 30s}
sources:
  bus: {type: fakebus, durable: DURABLE}
expect:
  - {event_id: e1, event: view}
  - {event_id: e2, event: buy}
stages:
  - name: bus
    source: bus
    topic: "events/{test_id}"
    compare: {with: expect, fields: [event]}
"""


def events(test_id: str) -> list[dict[str, Any]]:
    return [{"event_id": "e1", "event": "view", "test_id": test_id}, {"event_id": "e2", "event": "buy"}]


@pytest.fixture(autouse=True)
def bus() -> Iterator[None]:
    Bus.reset()
    FakeBusSource.listened.clear()
    yield
    Bus.reset()


def poller_on(db: str) -> Poller:
    """A poller (and its engine) on ``db``; ``shutdown()`` stops both."""
    return Poller(Engine(db, setup=FAST_SETUP), SchedulerConfig(jobstore="memory")).start()


def listening(topic: str) -> None:
    """Wait until the poller listens to ``topic`` (publish only then, as ``emit:`` does)."""
    eventually(lambda: topic in Bus.queues, f"nobody listens to {topic}")


def test_what_the_poller_hears_is_buffered_read_by_the_poll_and_removed_when_the_run_ends(tmp_path: Path) -> None:
    poller = poller_on(f"sqlite:///{tmp_path / 'state.db'}")
    engine = poller.engine
    try:
        plan_id = store_plan(engine, PLAN.replace("DURABLE", "true"), "p.yaml", None)[0]
        run_id = engine.submit(plan_id, {"test_id": "t1"})
        listening("events/t1")
        for event in events("t1"):
            Bus.publish("events/t1", event)
        result = wait_for(engine, run_id, every=0.05)
        assert result.status == "passed", result.to_dict()
        assert [r["event_id"] for r in engine.store.snapshots(run_id)[0].records] == ["e1", "e2"]
        # the run ended: the poller stops listening, removes its subscription and empties the buffer
        captures = CaptureStore(engine.store)
        eventually(lambda: captures.channels() == [], "the channel outlived its run")
        assert Bus.removed == ["events/t1"]
        assert FakeBusSource.listened == {"events/t1": 1}  # one listener for the run, not one per poll
    finally:
        poller.shutdown()


@pytest.mark.parametrize("durable", [True, False])
def test_a_restart_loses_nothing_a_durable_listener_kept_and_says_what_a_plain_one_missed(
    tmp_path: Path, durable: bool
) -> None:
    db = f"sqlite:///{tmp_path / 'state.db'}"
    first_poller = poller_on(db)
    first = first_poller.engine
    plan_id = store_plan(first, PLAN.replace("DURABLE", str(durable).lower()), "p.yaml", None)[0]
    run_id = first.submit(plan_id, {"test_id": "t2"}, overrides={"timeout": 4})
    listening("events/t2")
    Bus.publish("events/t2", events("t2")[0])  # heard and stored before the restart
    eventually(lambda: heard(first) == 1, "the first event was never stored")
    first_poller.shutdown()
    time.sleep(6)  # longer than a gap takes to count
    Bus.publish("events/t2", events("t2")[1])  # while nobody polls: kept only by a durable subscription
    second_poller = poller_on(db)
    second = second_poller.engine
    try:
        result = wait_for(second, run_id, every=0.05)
    finally:
        second_poller.shutdown()
    stage = result.stage("bus")
    if durable:
        assert result.status == "passed", result.to_dict()
        assert "nobody listened" not in (stage.reason or "")
    else:
        assert (result.status, stage.missing) == ("failed", ["e2"])
        assert "nobody listened to fakebus topic events/t2 from" in (stage.reason or "")
        assert "what was published then was not seen" in (stage.reason or "")


def heard(engine: Engine) -> int:
    with engine.store.session() as s:
        return s.scalar(select(func.count()).select_from(Capture)) or 0


def test_the_buffer_keeps_a_bounded_number_of_messages_and_counts_what_it_dropped(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'state.db'}").open()  # no poller: nothing else drops the channel
    try:
        captures = CaptureStore(store, limit=3)
        now = datetime.now(UTC)
        captures.token("k", "fakebus topic x", now)
        captures.opened("k", True, now)
        captures.keep("k", [(now, f"{i}".encode(), {}) for i in range(5)], now)
        rows, state = captures.read("k", now)
        assert [payload for _, payload, _ in rows] == [b"2", b"3", b"4"]
        assert state is not None and state.dropped == 2
    finally:
        store.close()
