"""The nats source against the real NATS server with JetStream on 127.0.0.1:4222.

Each test creates its own streams (unique names, deleted afterwards) and, where it matters, the
application's own durable pull consumer with explicit acks beside trackcheck: what the application sees
must not change because trackcheck verified. Errors of credentials and permissions are checked against a
private ``nats-server`` started on a free port with a user list.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import nats
import pytest
from nats.aio.client import Client
from nats.js.api import ConsumerConfig, RetentionPolicy, StreamConfig
from nats.js.errors import NotFoundError

import trackcheck
from tests.ports import free_port
from tests.settings import MIN_INTERVAL
from trackcheck.errors import ErrorKind, SourceConnectError, SourceError, SourceQueryError
from trackcheck.plan.model import StageSpec
from trackcheck.sources import nats as nats_source
from trackcheck.sources.base import Destination, FetchRequest, FetchResult
from trackcheck.sources.nats import NatsSource, subjects_overlap

pytestmark = pytest.mark.integration

T = TypeVar("T")
NATS_URL = "nats://127.0.0.1:4222"
START_NATS = "nats-server -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server"
POLL: dict[str, Any] = {"interval": "200ms", "min_interval": MIN_INTERVAL}


@dataclass
class Stream:
    name: str
    #: every subject of the stream starts with it (``<prefix>.>``)
    prefix: str


class Bus:
    """The test's side of NATS: a client on its own event loop thread that creates streams, publishes like the
    application's producer and consumes like the application (a durable pull consumer, explicit acks)."""

    def __init__(self, url: str = NATS_URL) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.streams: list[str] = []
        try:
            self.client: Client = self.run(nats.connect(url, connect_timeout=2, max_reconnect_attempts=1))
        except Exception as exc:
            self.stop()
            pytest.fail(f"NATS is not reachable at {url} ({exc!r}); start it with: {START_NATS}")
        self.js = self.client.jetstream(timeout=5)

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(timeout=15)

    def stream(self, retention: RetentionPolicy = RetentionPolicy.LIMITS) -> Stream:
        unique = uuid.uuid4().hex[:12]
        stream = Stream(f"TC_{unique}", f"tc{unique}")
        config = StreamConfig(name=stream.name, subjects=[f"{stream.prefix}.>"], retention=retention)
        self.run(self.js.add_stream(config))
        self.streams.append(stream.name)
        return stream

    def publish(self, subject: str, payload: dict[str, Any] | bytes, headers: dict[str, str] | None = None) -> int:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return self.run(self.js.publish(subject, data, headers=headers)).seq

    def later(self, delay: float, action: Callable[[], object], after: threading.Event | None = None) -> None:
        """Run ``action`` ``delay`` seconds from now, or from when ``after`` is set."""

        def wait_then_act() -> None:
            if after is None or after.wait(timeout=10):
                time.sleep(delay)
                action()

        threading.Thread(target=wait_then_act, daemon=True).start()

    def application(self, stream: Stream) -> Application:
        return Application(self, stream)

    def consumers(self, stream: Stream) -> list[str]:
        return sorted(info.name for info in self.run(self.js.consumers_info(stream.name)))

    def messages(self, stream: Stream) -> int:
        return self.run(self.js.stream_info(stream.name)).state.messages

    def stop(self, *, keep_streams: bool = False) -> None:
        for name in [] if keep_streams else self.streams:
            with contextlib.suppress(NotFoundError):
                self.run(self.js.delete_stream(name))
        if hasattr(self, "client"):
            self.run(self.client.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        self.loop.close()


class Application:
    """The application's durable pull consumer on a whole stream, acknowledging what it takes."""

    def __init__(self, bus: Bus, stream: Stream) -> None:
        self.bus, self.stream = bus, stream
        self.pull = bus.run(
            bus.js.pull_subscribe(f"{stream.prefix}.>", durable="app", stream=stream.name, config=ConsumerConfig())
        )

    def state(self) -> dict[str, int]:
        """What the application's consumer says of its progress (what verification must never move)."""
        info = self.bus.run(self.bus.js.consumer_info(self.stream.name, "app"))
        return {
            "num_pending": info.num_pending or 0,
            "num_ack_pending": info.num_ack_pending or 0,
            "delivered": info.delivered.stream_seq if info.delivered else 0,
            "ack_floor": info.ack_floor.stream_seq if info.ack_floor else 0,
        }

    def take(self, limit: int = 1000) -> list[bytes]:
        """Fetch and acknowledge up to ``limit`` messages, as the application's worker does."""

        async def take() -> list[bytes]:
            taken: list[bytes] = []
            while len(taken) < limit:
                try:
                    batch = await self.pull.fetch(min(100, limit - len(taken)), timeout=0.5)
                except nats.errors.TimeoutError:
                    break
                for msg in batch:
                    await msg.ack_sync()
                    taken.append(msg.data)
            return taken

        return self.bus.run(take())


@pytest.fixture
def bus() -> Iterator[Bus]:
    connection = Bus()
    yield connection
    connection.stop()


@pytest.fixture
def first_poll(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Set when trackcheck first reads a nats stage: the run has started (the engine takes a moment to)."""
    polled = threading.Event()
    read = NatsSource.fetch

    def fetch_and_tell(source: NatsSource, request: FetchRequest) -> FetchResult:
        try:
            return read(source, request)
        finally:
            polled.set()

    monkeypatch.setattr(NatsSource, "fetch", fetch_and_tell)
    return polled


@pytest.fixture
def test_id() -> str:
    return "t" + uuid.uuid4().hex[:10]


EVENTS = [
    {"event_id": "e1", "event": "signup", "amount": 0},
    {"event_id": "e2", "event": "purchase", "amount": 25.5},
    {"event_id": "e3", "event": "refund", "amount": -5},
]

PLAN = """
name: nats-orders
key: event_id
params:
  test_id: {required: true}
sources:
  bus: {type: nats, url: "URL", read_timeout: 2, max_message_bytes: 300}
expect: EXPECT
stages:
  - name: bus
    source: bus
    STAGE
    compare: {with: expect, fields: [event, amount]}
"""


def write_plan(tmp_path: Path, stage: dict[str, Any], url: str = NATS_URL, start: str | None = "-1m") -> Path:
    """A plan reading ``stage``; ``start`` is its ``from`` (None: the default, the run's start). The events of
    most tests are published before the run is submitted, so that the run finds them at its first poll."""
    if start is not None:
        stage = {**stage, "from": start}
    text = PLAN.replace("URL", url).replace("EXPECT", json.dumps(EVENTS))
    text = text.replace("STAGE", "\n    ".join(f"{key}: {json.dumps(value)}" for key, value in stage.items()))
    path = tmp_path / f"plan-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def emit(bus: Bus, subject: str, test_id: str, event: dict[str, Any], **changed: Any) -> int:
    return bus.publish(subject, {**event, "test_id": test_id, **changed})


def make_source(url: str = NATS_URL, **options: Any) -> NatsSource:
    return NatsSource("bus", NatsSource.options_model.model_validate({"url": url, "read_timeout": 2, **options}))


def make_stage(**keys: Any) -> StageSpec:
    return StageSpec.model_validate({"name": "bus", "source": "bus", "compare": {"with": "expect"}, **keys})


def fetch(source: NatsSource, stage: StageSpec, since: datetime | None = None, **params: Any) -> FetchResult:
    since = since or datetime.now(UTC) - timedelta(minutes=1)
    return source.fetch(FetchRequest(plan="p", stage=stage, params=params, since=since))


# -- verification through the engine -----------------------------------------------------------------------
def test_a_stage_waits_for_events_published_with_delays_then_passes(
    bus: Bus, tmp_path: Path, test_id: str, first_poll: threading.Event
) -> None:
    stream = bus.stream()
    subject = f"{stream.prefix}.events"
    stage = {"stream": stream.name, "subject": subject, "where": {"test_id": "{test_id}"}}
    plan = write_plan(tmp_path, stage, start=None)  # from the run's start, the default
    published: list[float] = []

    def publish(event: dict[str, Any], run: str = test_id) -> None:
        emit(bus, subject, run, event)
        published.append(time.monotonic())

    bus.later(0.0, lambda: publish(EVENTS[0]), after=first_poll)
    bus.later(0.1, lambda: publish(EVENTS[1], "another-run"), after=first_poll)  # another run's: not this one's
    bus.later(0.6, lambda: publish(EVENTS[1]), after=first_poll)
    bus.later(1.2, lambda: publish(EVENTS[2]), after=first_poll)

    result = trackcheck.verify(plan, params={"test_id": test_id}, timeout="8s", **POLL)

    assert result.ok, result.to_dict()
    assert (result.stage("bus").expected, result.stage("bus").found) == (3, 3)
    assert len(published) == 4 and time.monotonic() >= max(published)  # it waited for the last event
    assert [t.name for t in threading.enumerate() if t.name.startswith("trackcheck-nats")] == []  # closed
    assert bus.consumers(stream) == []  # no consumer of trackcheck is left on the stream


def test_a_missing_event_fails_naming_it(bus: Bus, tmp_path: Path, test_id: str) -> None:
    stream = bus.stream()
    subject = f"{stream.prefix}.events"
    plan = write_plan(tmp_path, {"stream": stream.name, "subject": subject, "where": {"test_id": "{test_id}"}})
    for event in EVENTS[:2]:
        emit(bus, subject, test_id, event)

    result = trackcheck.verify(plan, params={"test_id": test_id}, timeout="1500ms", **POLL)

    stage = result.stage("bus")
    assert (result.status, stage.status) == ("failed", "failed")
    assert stage.missing == ["e3"] and stage.found == 2


def test_a_changed_field_fails_with_both_values(bus: Bus, tmp_path: Path, test_id: str) -> None:
    stream = bus.stream()
    subject = f"{stream.prefix}.events"
    plan = write_plan(tmp_path, {"stream": stream.name, "subject": subject, "where": {"test_id": "{test_id}"}})
    emit(bus, subject, test_id, EVENTS[0])
    emit(bus, subject, test_id, EVENTS[1], amount=26)
    emit(bus, subject, test_id, EVENTS[2])

    result = trackcheck.verify(plan, params={"test_id": test_id}, timeout="5s", **POLL)

    assert not result.ok
    assert result.stage("bus").mismatches == [{"key": "e2", "field": "amount", "expected": 25.5, "actual": 26}]


def test_a_duplicated_event_is_reported(bus: Bus, tmp_path: Path, test_id: str) -> None:
    stream = bus.stream()
    subject = f"{stream.prefix}.events"
    plan = write_plan(tmp_path, {"stream": stream.name, "subject": subject, "where": {"test_id": "{test_id}"}})
    for event in [*EVENTS, EVENTS[0]]:  # at-least-once delivery sent e1 twice
        emit(bus, subject, test_id, event)

    result = trackcheck.verify(plan, params={"test_id": test_id}, timeout="5s", **POLL)

    assert not result.ok
    assert result.stage("bus").duplicates == ["e1"]


def test_from_reads_back_before_the_run_start_which_is_the_default_start(
    bus: Bus, tmp_path: Path, test_id: str
) -> None:
    stream = bus.stream()
    subject = f"{stream.prefix}.events"
    stage = {"stream": stream.name, "subject": subject, "where": {"test_id": "{test_id}"}}
    for event in EVENTS:  # sent just before the run was submitted (a producer's clock behind, a slow submit)
        emit(bus, subject, test_id, event)

    run_start = write_plan(tmp_path, stage, start=None)
    from_run_start = trackcheck.verify(run_start, params={"test_id": test_id}, timeout="1s", **POLL)
    ten_minutes_back = write_plan(tmp_path, stage, start="-10m")
    with_from = trackcheck.verify(ten_minutes_back, params={"test_id": test_id}, timeout="5s", **POLL)

    assert not from_run_start.ok
    assert sorted(from_run_start.stage("bus").missing) == ["e1", "e2", "e3"]
    assert with_from.ok, with_from.to_dict()


def test_a_subject_with_a_parameter_reads_only_the_runs_subject_and_finds_its_stream(
    bus: Bus, tmp_path: Path, test_id: str
) -> None:
    stream = bus.stream()
    plan = write_plan(tmp_path, {"subject": f"{stream.prefix}.events.{{test_id}}"})  # no 'stream': looked up
    for event in EVENTS:
        emit(bus, f"{stream.prefix}.events.{test_id}", test_id, event)
        emit(bus, f"{stream.prefix}.events.other", "other", event, amount=99)  # would be duplicates if read

    result = trackcheck.verify(plan, params={"test_id": test_id}, timeout="5s", **POLL)

    assert result.ok, result.to_dict()


def test_a_wildcard_subject_reads_every_matching_subject(bus: Bus, tmp_path: Path, test_id: str) -> None:
    stream = bus.stream()
    stage = {"stream": stream.name, "subject": f"{stream.prefix}.*.orders.>", "where": {"test_id": "{test_id}"}}
    plan = write_plan(tmp_path, stage)
    emit(bus, f"{stream.prefix}.web.orders.eu", test_id, EVENTS[0])
    emit(bus, f"{stream.prefix}.app.orders.us.east", test_id, EVENTS[1])
    emit(bus, f"{stream.prefix}.web.payments.eu", test_id, EVENTS[2], event_id="e2")  # not matched: no duplicate
    emit(bus, f"{stream.prefix}.pos.orders.eu", test_id, EVENTS[2])

    result = trackcheck.verify(plan, params={"test_id": test_id}, timeout="5s", **POLL)

    assert result.ok, result.to_dict()


def test_messages_that_are_not_json_or_too_large_are_counted_and_named(bus: Bus, tmp_path: Path, test_id: str) -> None:
    stream = bus.stream()
    subject = f"{stream.prefix}.events"
    plan = write_plan(tmp_path, {"stream": stream.name, "subject": subject, "where": {"test_id": "{test_id}"}})
    emit(bus, subject, test_id, EVENTS[0])
    garbage = bus.publish(subject, b"\xff not json")
    large = emit(bus, subject, test_id, {"event_id": "big", "padding": "x" * 400})  # max_message_bytes: 300
    emit(bus, subject, test_id, EVENTS[1])
    emit(bus, subject, test_id, EVENTS[2])

    result = trackcheck.verify(plan, params={"test_id": test_id}, timeout="5s", **POLL)
    with make_source(max_message_bytes=300) as source:
        read = fetch(source, make_stage(stream=stream.name, subject=subject))

    assert result.ok, result.to_dict()  # the other messages were read as usual
    reason = result.stage("bus").reason or ""
    assert f"offset {garbage}: not JSON" in reason
    assert f"offset {large}: " in reason and "more than max_message_bytes (300)" in reason
    assert (read.unparsed, len(read.records), read.scanned) == (2, 3, 5)


# -- reading without consuming ---------------------------------------------------------------------------
def test_the_applications_durable_consumer_is_untouched_and_still_gets_every_message(
    bus: Bus, tmp_path: Path, test_id: str
) -> None:
    stream = bus.stream()
    subject = f"{stream.prefix}.events"
    app = bus.application(stream)
    emit(bus, subject, "earlier-run", EVENTS[0])
    assert len(app.take(1)) == 1  # the application is busy: an ack floor and a delivered sequence to keep
    for event in EVENTS:
        emit(bus, subject, test_id, event)
    before = app.state()
    plan = write_plan(tmp_path, {"stream": stream.name, "subject": subject, "where": {"test_id": "{test_id}"}})

    result = trackcheck.verify(plan, params={"test_id": test_id}, timeout="5s", **POLL)

    assert result.ok, result.to_dict()
    assert app.state() == before == {"num_pending": 3, "num_ack_pending": 0, "delivered": 1, "ack_floor": 1}
    assert bus.consumers(stream) == ["app"]
    assert [json.loads(m)["event_id"] for m in app.take()] == ["e1", "e2", "e3"]


def test_interest_retention_verifies_what_the_application_has_not_acknowledged_yet(
    bus: Bus, tmp_path: Path, test_id: str
) -> None:
    stream = bus.stream(RetentionPolicy.INTEREST)
    subject = f"{stream.prefix}.events"
    emit(bus, subject, test_id, EVENTS[0])  # no consumer is interested yet: the server does not keep it
    app = bus.application(stream)
    for event in EVENTS:
        emit(bus, subject, test_id, event)
    before = app.state()
    plan = write_plan(tmp_path, {"stream": stream.name, "subject": subject, "where": {"test_id": "{test_id}"}})

    result = trackcheck.verify(plan, params={"test_id": test_id}, timeout="5s", **POLL)

    assert result.ok, result.to_dict()
    assert result.stage("bus").duplicates == []  # the first e1 was never stored
    assert app.state() == before and (before["num_pending"], before["num_ack_pending"]) == (3, 0)
    assert bus.consumers(stream) == ["app"]
    assert [json.loads(m)["event_id"] for m in app.take()] == ["e1", "e2", "e3"]
    # once acknowledged by every interested consumer, the messages are gone: a new run cannot see them
    assert bus.messages(stream) == 0
    again = trackcheck.verify(plan, params={"test_id": test_id}, timeout="1s", **POLL)
    assert sorted(again.stage("bus").missing) == ["e1", "e2", "e3"]


def test_workqueue_retention_is_read_without_a_consumer_the_server_would_refuse(
    bus: Bus, tmp_path: Path, test_id: str
) -> None:
    stream = bus.stream(RetentionPolicy.WORK_QUEUE)
    subject = f"{stream.prefix}.events"
    app = bus.application(stream)  # its filter covers the whole stream: no other consumer may overlap it
    for event in EVENTS:
        emit(bus, subject, test_id, event)
    before = app.state()
    plan = write_plan(tmp_path, {"stream": stream.name, "subject": subject, "where": {"test_id": "{test_id}"}})

    result = trackcheck.verify(plan, params={"test_id": test_id}, timeout="5s", **POLL)

    assert result.ok, result.to_dict()
    assert app.state() == before and (before["num_pending"], before["num_ack_pending"]) == (3, 0)
    assert bus.consumers(stream) == ["app"]
    assert bus.messages(stream) == 3
    assert [json.loads(m)["event_id"] for m in app.take()] == ["e1", "e2", "e3"]
    assert bus.messages(stream) == 0  # the application's acks removed them, as a work queue does


def test_a_workqueue_stream_refuses_a_second_consumer_which_is_why_none_is_made(bus: Bus) -> None:
    """What the server does, pinned: an unacknowledged consumer is refused, and so is an overlapping one."""
    stream = bus.stream(RetentionPolicy.WORK_QUEUE)
    bus.application(stream)
    refused = []
    for ack in ("none", "explicit"):
        config = ConsumerConfig(ack_policy=ack, filter_subject=f"{stream.prefix}.events")  # type: ignore[arg-type]
        with pytest.raises(nats.js.errors.BadRequestError) as raised:
            bus.run(bus.js.add_consumer(stream.name, config))
        refused.append(raised.value.err_code)
    assert refused == [10084, 10100]


# -- the source itself --------------------------------------------------------------------------------------
def test_records_carry_the_subject_sequence_time_and_headers(bus: Bus) -> None:
    stream = bus.stream()
    seq = bus.publish(f"{stream.prefix}.events.a", {"n": 1}, headers={"Trace-Id": "abc"})

    with make_source() as source:
        result = fetch(source, make_stage(subject=f"{stream.prefix}.events.*"))

    (record,) = result.records
    assert record["n"] == 1 and record["_subject"] == f"{stream.prefix}.events.a" and record["_offset"] == seq
    assert record["_headers"] == {"Trace-Id": "abc"}
    sent = datetime.fromisoformat(record["_timestamp"])
    assert abs((datetime.now(UTC) - sent).total_seconds()) < 5


def test_repeated_polls_read_only_new_messages(bus: Bus) -> None:
    stream = bus.stream()
    subject = f"{stream.prefix}.events"
    for n in range(3):
        bus.publish(subject, {"n": n})
    stage = make_stage(stream=stream.name, subject=subject)
    since = datetime.now(UTC) - timedelta(minutes=1)

    with make_source() as source:
        first = fetch(source, stage, since)
        bus.publish(subject, {"n": 3})
        bus.publish(f"{stream.prefix}.elsewhere", {"n": -1})
        second = fetch(source, stage, since)
        third = fetch(source, stage, since + timedelta(seconds=1))  # a later run of the batch: still cached
        earlier = fetch(source, stage, since - timedelta(minutes=1))  # not covered: read again

    assert [r["n"] for r in first.records] == [0, 1, 2] and first.scanned == 3
    assert [r["n"] for r in second.records] == [0, 1, 2, 3] and second.scanned == 1
    assert len(third.records) == 4 and third.scanned == 0
    assert len(earlier.records) == 4 and earlier.scanned == 4


def test_the_cache_is_bounded_and_a_trimmed_window_is_read_again(bus: Bus, monkeypatch: pytest.MonkeyPatch) -> None:
    stream = bus.stream()
    subject = f"{stream.prefix}.events"
    for n in range(5):
        bus.publish(subject, {"n": n})  # 8 bytes each
        time.sleep(0.01)
    monkeypatch.setattr(nats_source, "CACHE_BYTES", 20)  # room for the newest two messages
    monkeypatch.setattr(nats_source, "CACHE_WINDOWS", 2)
    stage = make_stage(stream=stream.name, subject=subject)
    since = datetime.now(UTC) - timedelta(minutes=1)

    with make_source() as source:
        reads = [fetch(source, stage, since) for _ in range(2)]
        others = [
            fetch(source, make_stage(stream=stream.name, subject=f"{stream.prefix}.{n}"), since) for n in range(2)
        ]
        last = fetch(source, stage, since)  # its window was the least recently used of three: dropped

    assert [[r["n"] for r in read.records] for read in [*reads, last]] == [[0, 1, 2, 3, 4]] * 3
    assert [read.scanned for read in [*reads, last]] == [5, 5, 5]  # trimmed, so not cached, but never wrong
    assert [read.scanned for read in others] == [0, 0]


def test_fetches_from_many_threads_at_once_share_one_source(bus: Bus) -> None:
    stream = bus.stream()
    for n in range(40):
        bus.publish(f"{stream.prefix}.events.{n % 4}", {"n": n})
    stage = make_stage(stream=stream.name, subject=f"{stream.prefix}.events.{{part}}")
    found: dict[int, list[list[int]]] = {part: [] for part in range(4)}

    with make_source() as source:

        def poll(part: int) -> None:
            for _ in range(5):
                found[part].append([r["n"] for r in fetch(source, stage, part=part).records])

        threads = [threading.Thread(target=poll, args=(i % 4,)) for i in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=20)

    for part, reads in found.items():
        assert reads == [list(range(part, 40, 4))] * 15
    assert bus.consumers(stream) == []


def test_publish_waits_for_jetstream_acks(bus: Bus) -> None:
    stream = bus.stream()
    app = bus.application(stream)

    with make_source() as source:
        source.publish(Destination(subject=f"{stream.prefix}.emitted", stream=stream.name), [b'{"n": 1}', b"two"])
        with pytest.raises(SourceQueryError) as nowhere:
            source.publish(Destination(subject="tc-no-stream.emitted"), [b"lost"])

    assert app.take() == [b'{"n": 1}', b"two"]
    assert "no JetStream stream stores subject 'tc-no-stream.emitted'" in str(nowhere.value)


def test_a_stream_that_does_not_exist_yet_is_a_transient_error(bus: Bus) -> None:
    with make_source() as source:
        with pytest.raises(SourceQueryError) as named:
            fetch(source, make_stage(stream="TC_NOT_THERE", subject="tc-nowhere.events"))
        with pytest.raises(SourceQueryError) as looked_up:
            fetch(source, make_stage(subject="tc-nowhere.events"))
    assert named.value.kind is ErrorKind.TRANSIENT and "no JetStream stream named 'TC_NOT_THERE'" in str(named.value)
    assert looked_up.value.kind is ErrorKind.TRANSIENT
    assert "no JetStream stream stores subject 'tc-nowhere.events'" in str(looked_up.value)


def test_a_subject_the_stream_does_not_store_is_a_permanent_error(bus: Bus) -> None:
    stream = bus.stream()
    with make_source() as source, pytest.raises(SourceQueryError) as raised:
        fetch(source, make_stage(stream=stream.name, subject="orders.created"))
    assert raised.value.kind is ErrorKind.PERMANENT
    assert f"stream {stream.name!r} does not store subject 'orders.created' (its subjects: {stream.prefix}.>)" in str(
        raised.value
    )


def test_a_parameter_never_widens_the_subject(bus: Bus) -> None:
    stream = bus.stream()
    with make_source() as source, pytest.raises(SourceQueryError) as widened:
        fetch(source, make_stage(subject=f"{stream.prefix}.events.{{test_id}}"), test_id=">")
    assert widened.value.kind is ErrorKind.PERMANENT
    assert "run parameter {test_id} = '>' cannot be part of a NATS subject" in str(widened.value)


def test_check_stage_names_what_a_nats_stage_lacks() -> None:
    assert "needs 'subject'" in (NatsSource.check_stage(make_stage(stream="S")) or "")
    assert "'>' before its last token" in (NatsSource.check_stage(make_stage(subject="a.>.b")) or "")
    assert "inside a token" in (NatsSource.check_stage(make_stage(subject="a.b*")) or "")
    assert "not a stream name" in (NatsSource.check_stage(make_stage(subject="a.b", stream="a.b")) or "")
    assert "topic: unknown key" in (NatsSource.check_stage(make_stage(subject="a", topic="t")) or "")
    assert NatsSource.check_stage(make_stage(subject="events.{test_id}.*", stream="S_{env}")) is None
    overlapping = [("a.*", "a.b"), ("a.>", "a.b.c"), ("*.b", "a.*"), (">", "x")]
    assert all(subjects_overlap(x, y) and subjects_overlap(y, x) for x, y in overlapping)
    apart = [("a.b", "a.c"), ("a.>", "a"), ("a.*", "a.b.c"), ("b.>", "a.>")]
    assert not any(subjects_overlap(x, y) or subjects_overlap(y, x) for x, y in apart)


# -- errors ----------------------------------------------------------------------------------------------


def test_an_unreachable_server_is_a_transient_error_without_the_password(tmp_path: Path, test_id: str) -> None:
    url = f"nats://app:s3cret-pw@127.0.0.1:{free_port()}"

    with make_source(url) as source, pytest.raises(SourceConnectError) as raised:
        fetch(source, make_stage(subject="events"))
    result = trackcheck.verify(write_plan(tmp_path, {"subject": "events"}, url), params={"test_id": test_id},
                               timeout="1s", **POLL)  # fmt: skip

    assert raised.value.kind is ErrorKind.TRANSIENT
    assert "could not connect to nats server 127.0.0.1:" in str(raised.value)
    assert "s3cret-pw" not in str(raised.value)
    stage = result.stage("bus")
    assert stage.status == "error" and stage.error_kind == "transient"
    assert "could not connect" in (stage.error or "")
    assert "s3cret-pw" not in json.dumps(result.to_dict())


def start_server(port: int, *arguments: str) -> subprocess.Popen[bytes]:
    """A private nats-server on ``port``, once it accepts connections."""
    if shutil.which("nats-server") is None:
        pytest.fail("nats-server is not installed (Debian: apt-get install nats-server)")
    command = ["nats-server", "-a", "127.0.0.1", "-p", str(port), *arguments]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return server
        time.sleep(0.05)
    server.kill()
    pytest.fail(f"nats-server did not start on port {port}")


def test_a_lost_connection_is_transient_and_the_next_read_connects_again(tmp_path: Path) -> None:
    port = free_port()
    store = ("-js", "-sd", str(tmp_path / "jetstream"))
    server = start_server(port, *store)
    url = f"nats://127.0.0.1:{port}"
    try:
        own = Bus(url)
        try:
            stream = own.stream()
            own.publish(f"{stream.prefix}.events", {"n": 1})
        finally:
            own.stop(keep_streams=True)
        stage = make_stage(stream=stream.name, subject=f"{stream.prefix}.events")
        with make_source(url) as source:
            before = fetch(source, stage)
            server.terminate()
            server.wait(timeout=5)
            with pytest.raises(SourceError) as lost:
                fetch(source, stage)
            server = start_server(port, *store)
            after = fetch(source, stage)
    finally:
        server.terminate()
        server.wait(timeout=5)

    assert lost.value.kind is ErrorKind.TRANSIENT
    assert [r["n"] for r in before.records] == [r["n"] for r in after.records] == [1]


@pytest.fixture(scope="module")
def guarded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private nats-server with users: ``app`` may do anything, ``viewer`` may not use the JetStream API."""
    port = free_port()
    config = tmp_path_factory.mktemp("nats") / "server.conf"
    config.write_text(
        "authorization { users = [\n"
        "  {user: app, password: s3cret-pw}\n"
        '  {user: viewer, password: v1ewer-pw, permissions: {publish: {deny: ["$JS.API.>"]}}}\n'
        "] }\n",
        encoding="utf-8",
    )
    server = start_server(port, "-c", str(config))
    yield f"127.0.0.1:{port}"
    server.terminate()
    server.wait(timeout=5)


@pytest.mark.parametrize(
    ("credentials", "secret"),
    [("app:wrong-pw@", "wrong-pw"), ("a-wrong-token@", "a-wrong-token"), ("", None)],
    ids=["password", "token", "none"],
)
def test_refused_credentials_are_a_permanent_error_without_them(
    guarded_server: str, credentials: str, secret: str | None
) -> None:
    with make_source(f"nats://{credentials}{guarded_server}") as source, pytest.raises(SourceConnectError) as raised:
        fetch(source, make_stage(subject="events"))

    assert raised.value.kind is ErrorKind.PERMANENT
    assert "refused the credentials (authorization violation)" in str(raised.value)
    assert secret is None or secret not in str(raised.value)


@pytest.fixture
def resetting_server() -> Iterator[str]:
    """A server that speaks NATS's handshake and refuses every credential the worst way a real one can: when the
    client has already sent more than CONNECT (nats-py's PING), the close discards the ``-ERR`` and the client
    sees only a reset (``SO_LINGER`` 0); only a client that waits for the answer to CONNECT reads the ``-ERR``."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def refuse(conn: socket.socket) -> None:
        with conn:
            conn.sendall(b'INFO {"server_id":"fake","version":"2.10.0","auth_required":true,"max_payload":1048576}\r\n')
            conn.settimeout(2)
            received = b""
            while b"\r\n" not in received:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                received += chunk
            conn.settimeout(0.3)
            with contextlib.suppress(TimeoutError):
                received += conn.recv(4096)  # a client that did not wait sends its PING meanwhile
            if received.endswith(b"PING\r\n"):
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                return
            conn.sendall(b"-ERR 'Authorization Violation'\r\n")

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=refuse, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    listener.close()


def test_credentials_refused_with_a_reset_are_still_named_and_permanent(resetting_server: str) -> None:
    """The reset overtaking the server's -ERR happened on a loaded CI machine: the refusal must not read as a
    network error that later polls retry forever."""
    with make_source(f"nats://app:wrong-pw@{resetting_server}") as source, pytest.raises(SourceConnectError) as raised:
        fetch(source, make_stage(subject="events"))

    assert raised.value.kind is ErrorKind.PERMANENT
    assert "refused the credentials (authorization violation)" in str(raised.value)
    assert "wrong-pw" not in str(raised.value)


def test_a_permissions_violation_is_a_permanent_error(guarded_server: str) -> None:
    with (
        make_source(f"nats://{guarded_server}", user="viewer", password="v1ewer-pw", read_timeout=0.5) as source,
        pytest.raises(SourceQueryError) as raised,
    ):
        fetch(source, make_stage(stream="EVENTS", subject="events"))

    assert raised.value.kind is ErrorKind.PERMANENT
    assert "permissions violation for publish to" in str(raised.value)
    assert "v1ewer-pw" not in str(raised.value)
