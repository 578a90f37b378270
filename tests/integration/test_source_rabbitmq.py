"""The rabbitmq source against the real RabbitMQ on 127.0.0.1:5672 (guest/guest).

Each test declares its own stream queues, exchanges and application queues (unique names, deleted
afterwards). Where it matters the application's side sits beside trackcheck: its own consumer reading the
stream from the start, its own classic queue bound to the exchange trackcheck listens to. What the
application sees must not change because trackcheck verified.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
import pytest

import trackcheck
from tests.settings import MIN_INTERVAL
from trackcheck.errors import ErrorKind, SourceConnectError, SourceError, SourceQueryError
from trackcheck.plan.model import StageSpec
from trackcheck.sources.base import Destination, FetchRequest, FetchResult, Listener
from trackcheck.sources.rabbitmq import RabbitmqSource

pytestmark = pytest.mark.integration

URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
START_RABBITMQ = "rabbitmq-server -detached"
POLL: dict[str, Any] = {"interval": "200ms", "min_interval": MIN_INTERVAL}
EXPECT = [
    {"event_id": "e1", "event": "purchase", "amount": 25},
    {"event_id": "e2", "event": "refund", "amount": 5},
]


class Broker:
    """The test's side of RabbitMQ: declares what the application would, publishes like its producer (a
    connection per call, so timers may publish from their threads) and reads like its consumers."""

    def __init__(self) -> None:
        try:
            self.connection = pika.BlockingConnection(pika.URLParameters(URL))
        except pika.exceptions.AMQPError as exc:
            pytest.fail(f"RabbitMQ is not reachable at 127.0.0.1:5672 ({exc!r}); start it with: {START_RABBITMQ}")
        self.channel = self.connection.channel()
        self.queues: list[str] = []
        self.exchanges: list[str] = []

    def stream(self) -> str:
        name = f"tc-stream-{uuid.uuid4().hex[:12]}"
        self.channel.queue_declare(name, durable=True, arguments={"x-queue-type": "stream"})
        self.queues.append(name)
        return name

    def queue(self, exchange: str | None = None, routing_key: str = "") -> str:
        """A classic queue of the application (bound to ``exchange`` if given)."""
        name = f"tc-app-{uuid.uuid4().hex[:12]}"
        self.channel.queue_declare(name, durable=True)
        self.queues.append(name)
        if exchange is not None:
            self.channel.queue_bind(name, exchange, routing_key=routing_key)
        return name

    def exchange(self) -> str:
        name = f"tc-exchange-{uuid.uuid4().hex[:12]}"
        self.channel.exchange_declare(name, exchange_type="topic", durable=False, auto_delete=False)
        self.exchanges.append(name)
        return name

    def publish(
        self,
        routing_key: str,
        *payloads: dict[str, Any] | bytes,
        exchange: str = "",
        headers: dict[str, str] | None = None,
        message_id: str | None = None,
    ) -> None:
        connection = pika.BlockingConnection(pika.URLParameters(URL))
        try:
            channel = connection.channel()
            channel.confirm_delivery()
            properties = pika.BasicProperties(headers=headers, message_id=message_id)
            for payload in payloads:
                body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                channel.basic_publish(exchange, routing_key, body, properties, mandatory=not exchange)
        finally:
            connection.close()

    def later(self, delay: float, action: Callable[[], object], after: threading.Event) -> None:
        """Run ``action`` ``delay`` seconds after ``after`` is set (the stage's first poll: an engine takes a
        second or two to start, and what is published before a run starts is not the run's)."""

        def wait_then_act() -> None:
            if after.wait(15):
                time.sleep(delay)
                action()

        threading.Thread(target=wait_then_act, daemon=True).start()

    def depth(self, queue: str) -> int:
        """Messages ready in a classic queue (exact for classic queues, unlike for streams)."""
        return self.channel.queue_declare(queue, passive=True).method.message_count

    def exists(self, queue: str) -> bool:
        channel = self.connection.channel()
        try:
            channel.queue_declare(queue, passive=True)
        except pika.exceptions.ChannelClosedByBroker as exc:
            assert exc.reply_code == 404
            return False
        channel.close()
        return True

    def read_stream(self, stream: str) -> list[dict[str, Any]]:
        """The application's consumer: the whole stream from its first message, payloads decoded."""
        channel = self.connection.channel()
        channel.basic_qos(prefetch_count=100)
        got: list[dict[str, Any]] = []
        channel.basic_consume(
            stream,
            lambda ch, method, props, body: (got.append(json.loads(body)), ch.basic_ack(method.delivery_tag)),
            arguments={"x-stream-offset": "first"},
        )
        self.connection.process_data_events(time_limit=1.0)
        channel._impl.close()  # as trackcheck does: pika's cancel would reject in-flight deliveries
        while not channel.is_closed:
            self.connection.process_data_events(time_limit=0.01)
        return got

    def stop(self) -> None:
        channel = self.connection.channel()
        for name in self.queues:
            channel.queue_delete(name)
        for name in self.exchanges:
            channel.exchange_delete(name)
        self.connection.close()


@pytest.fixture
def broker() -> Iterator[Broker]:
    broker = Broker()
    yield broker
    broker.stop()


@pytest.fixture
def first_poll(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Set when the engine first reads a rabbitmq stage."""
    polled = threading.Event()
    fetch = RabbitmqSource.fetch

    def noting(self: RabbitmqSource, request: FetchRequest) -> FetchResult:
        try:
            return fetch(self, request)
        finally:
            polled.set()

    monkeypatch.setattr(RabbitmqSource, "fetch", noting)
    return polled


@pytest.fixture
def source() -> Iterator[RabbitmqSource]:
    with make_source() as opened:
        yield opened


def make_source(url: str = URL, **options: Any) -> RabbitmqSource:
    return RabbitmqSource("bus", RabbitmqSource.options_model.model_validate({"url": url, **options}))


def make_stage(**keys: Any) -> StageSpec:
    return StageSpec.model_validate({"name": "bus", "source": "bus", "compare": {"with": "expect"}, **keys})


def fetch(source: RabbitmqSource, stage: StageSpec, **request: Any) -> FetchResult:
    request.setdefault("since", datetime.now(UTC))
    return source.fetch(FetchRequest(plan="p", stage=stage, **request))


def write_plan(tmp_path: Path, stage: str, *, url: str = URL, options: str = "") -> Path:
    """A plan whose one stage ``bus`` reads the rabbitmq source with the given keys (YAML lines)."""
    expect = "\n".join(f"  - {json.dumps(event)}" for event in EXPECT)
    stage_lines = "\n".join(f"    {line}" for line in stage.strip().splitlines())
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        f"""
name: rabbit
key: event_id
params:
  test_id: {{required: true}}
sources:
  bus: {{type: rabbitmq, url: "{url}"{options}}}
expect:
{expect}
stages:
  - name: bus
    source: bus
    where: {{test_id: "{{test_id}}"}}
    compare: {{with: expect, fields: [event, amount]}}
{stage_lines}
""",
        encoding="utf-8",
    )
    return plan


def events(test_id: str, **changed: dict[str, Any]) -> list[dict[str, Any]]:
    """EXPECT as the pipeline sent it for one test, with some events' fields changed."""
    return [{**event, "test_id": test_id, **changed.get(event["event_id"], {})} for event in EXPECT]


# -- streams, through trackcheck.verify ----------------------------------------------------------------


def test_stream_waits_for_events_published_with_delays_then_passes(
    broker: Broker, tmp_path: Path, first_poll: threading.Event
) -> None:
    stream = broker.stream()
    first, second = events("t1")
    broker.publish(stream, {**first, "test_id": "other"})  # another test's event, before the run
    broker.later(0.6, lambda: broker.publish(stream, first), first_poll)
    broker.later(1.2, lambda: broker.publish(stream, second, {**second, "test_id": "t2"}), first_poll)
    started = time.monotonic()

    result = trackcheck.verify(
        write_plan(tmp_path, f"stream: {stream}"), params={"test_id": "t1"}, **POLL, timeout="10s"
    )

    assert result.ok, result.to_dict()
    assert (result.stage("bus").expected, result.stage("bus").found) == (2, 2)
    assert result.stage("bus").attempts >= 2  # it polled while nothing had arrived yet
    assert time.monotonic() - started >= 1.2


def test_stream_missing_event_fails_naming_it(broker: Broker, tmp_path: Path, first_poll: threading.Event) -> None:
    stream = broker.stream()
    broker.later(0.3, lambda: broker.publish(stream, events("t1")[0]), first_poll)

    result = trackcheck.verify(
        write_plan(tmp_path, f"stream: {stream}"), params={"test_id": "t1"}, **POLL, timeout="2s"
    )

    stage = result.stage("bus")
    assert stage.status == "failed"
    assert stage.missing == ["e2"]
    assert (stage.expected, stage.found) == (2, 1)
    assert "timed out after 2s" in (stage.reason or "")


def test_stream_changed_field_fails_with_both_values(
    broker: Broker, tmp_path: Path, first_poll: threading.Event
) -> None:
    stream = broker.stream()
    broker.later(0.3, lambda: broker.publish(stream, *events("t1", e2={"amount": 7})), first_poll)

    result = trackcheck.verify(
        write_plan(tmp_path, f"stream: {stream}"), params={"test_id": "t1"}, **POLL, timeout="5s"
    )

    stage = result.stage("bus")
    assert stage.status == "failed"
    assert stage.mismatches == [{"key": "e2", "field": "amount", "expected": 5, "actual": 7}]
    assert stage.missing == []


def test_stream_duplicates_are_reported(broker: Broker, tmp_path: Path, first_poll: threading.Event) -> None:
    stream = broker.stream()
    first, second = events("t1")
    broker.later(0.3, lambda: broker.publish(stream, first, second, first), first_poll)  # at-least-once delivery

    result = trackcheck.verify(
        write_plan(tmp_path, f"stream: {stream}"), params={"test_id": "t1"}, **POLL, timeout="5s"
    )

    stage = result.stage("bus")
    assert stage.status == "failed"
    assert stage.duplicates == ["e1"]


def test_stream_reads_from_the_run_start_unless_from_moves_it_back(broker: Broker, tmp_path: Path) -> None:
    stream = broker.stream()
    broker.publish(stream, *events("t1"))
    time.sleep(1.1)  # AMQP timestamps are whole seconds: the run starts in a later second

    default = trackcheck.verify(
        write_plan(tmp_path, f"stream: {stream}"), params={"test_id": "t1"}, **POLL, timeout="1s"
    )
    back = trackcheck.verify(
        write_plan(tmp_path, f"stream: {stream}\nfrom: -10m"), params={"test_id": "t1"}, **POLL, timeout="5s"
    )

    assert default.stage("bus").status == "failed"
    assert default.stage("bus").missing == ["e1", "e2"]
    assert back.ok, back.to_dict()
    assert back.stage("bus").found == 2


def test_stream_messages_that_do_not_parse_are_counted_not_fatal(
    broker: Broker, tmp_path: Path, first_poll: threading.Event
) -> None:
    stream = broker.stream()
    oversized = {"test_id": "t1", "event_id": "big", "padding": "x" * 400}
    broker.later(0.3, lambda: broker.publish(stream, b"not json {", oversized, *events("t1")), first_poll)

    plan = write_plan(tmp_path, f"stream: {stream}", options=", max_message_bytes: 300")
    result = trackcheck.verify(plan, params={"test_id": "t1"}, **POLL, timeout="5s")

    stage = result.stage("bus")
    assert result.ok, result.to_dict()
    assert "2 unparsed lines" in (stage.reason or "")
    assert "not JSON" in (stage.reason or "") and "more than max_message_bytes (300)" in (stage.reason or "")


def test_stream_is_read_without_taking_anything_from_the_application(
    broker: Broker, tmp_path: Path, first_poll: threading.Event
) -> None:
    stream = broker.stream()
    sent = events("t1")
    broker.later(0.3, lambda: broker.publish(stream, *sent), first_poll)

    result = trackcheck.verify(
        write_plan(tmp_path, f"stream: {stream}"), params={"test_id": "t1"}, **POLL, timeout="5s"
    )

    assert result.ok, result.to_dict()
    assert broker.read_stream(stream) == sent  # the application's consumer still reads every message


# -- streams, the source itself ------------------------------------------------------------------------


def test_stream_records_carry_the_bus_fields(broker: Broker, source: RabbitmqSource) -> None:
    stream = broker.stream()
    since = datetime.now(UTC)
    broker.publish(stream, {"event_id": "e1"}, headers={"origin": "web"}, message_id="m-1")
    broker.publish(stream, {"event_id": "e2"})

    result = fetch(source, make_stage(stream=stream), since=since)

    first, second = result.records
    assert first["event_id"] == "e1" and second["event_id"] == "e2"
    assert (first["_offset"], second["_offset"]) == (0, 1)
    assert (first["_key"], second["_key"]) == ("m-1", None)
    assert first["_headers"] == {"origin": "web"} and second["_headers"] == {}
    assert first["_routing_key"] == stream
    assert datetime.fromisoformat(first["_timestamp"]) >= since.replace(microsecond=0)


def test_repeated_polls_read_only_what_is_new(broker: Broker, source: RabbitmqSource) -> None:
    stream = broker.stream()
    since = datetime.now(UTC)
    read: list[int] = []
    consume = source._consume

    def counting(*args: Any, **kwargs: Any) -> Any:
        got = consume(*args, **kwargs)
        if args[2] != "last":  # the probe of the stream's end reads its last chunk
            read.append(len(got))
        return got

    source._consume = counting  # type: ignore[method-assign]
    broker.publish(stream, *({"event_id": f"e{n}"} for n in range(5)))
    assert len(fetch(source, make_stage(stream=stream), since=since).records) == 5
    assert sum(read) == 5
    read.clear()

    assert len(fetch(source, make_stage(stream=stream), since=since).records) == 5
    assert sum(read) == 0  # nothing new: served from the cache

    broker.publish(stream, {"event_id": "e5"}, {"event_id": "e6"})
    assert [r["event_id"] for r in fetch(source, make_stage(stream=stream), since=since).records][-2:] == ["e5", "e6"]
    assert sum(read) == 2


def test_runs_that_started_at_different_times_share_one_cache(broker: Broker, source: RabbitmqSource) -> None:
    stream = broker.stream()
    broker.publish(stream, {"event_id": "a"}, {"event_id": "b"})
    time.sleep(1.1)  # AMQP timestamps are whole seconds
    later = datetime.now(UTC)
    broker.publish(stream, {"event_id": "c"}, {"event_id": "d"})

    def ids(**request: Any) -> list[str]:
        return [r["event_id"] for r in fetch(source, make_stage(**request), since=later).records]

    assert ids(stream=stream) == ["c", "d"]
    assert ids(stream=stream, **{"from": "earliest"}) == ["a", "b", "c", "d"]  # the older part is read
    assert ids(stream=stream) == ["c", "d"]
    broker.publish(stream, {"event_id": "e"})
    assert ids(stream=stream) == ["c", "d", "e"]
    assert ids(stream=stream, **{"from": "-1m"}) == ["a", "b", "c", "d", "e"]


def test_a_stream_written_to_while_it_is_read_keeps_the_connection(broker: Broker, source: RabbitmqSource) -> None:
    """Ending a read while deliveries are in flight must not reject them (RabbitMQ before 3.13 closes the
    connection on a reject on a stream)."""
    stream = broker.stream()
    since = datetime.now(UTC)
    stop = threading.Event()

    def produce() -> None:
        connection = pika.BlockingConnection(pika.URLParameters(URL))
        channel = connection.channel()
        n = 0
        while not stop.is_set():
            channel.basic_publish("", stream, json.dumps({"event_id": f"e{n}"}).encode())
            n += 1
            if n % 20 == 0:
                connection.process_data_events(time_limit=0.002)
        connection.close()

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    try:
        counts = []
        for _ in range(5):
            counts.append(len(fetch(source, make_stage(stream=stream), since=since).records))
            connection = source._connection
            time.sleep(0.1)
            assert source._connection is connection and connection is not None and connection.is_open
    finally:
        stop.set()
        producer.join(5)
    assert counts == sorted(counts) and counts[-1] > counts[0] > 0
    records = fetch(source, make_stage(stream=stream), since=since).records
    assert [r["_offset"] for r in records] == list(range(len(records)))  # none skipped, none twice


def test_a_stream_that_does_not_exist_is_a_transient_error(source: RabbitmqSource) -> None:
    missing = f"tc-nowhere-{uuid.uuid4().hex[:8]}"

    with pytest.raises(SourceQueryError) as caught:
        fetch(source, make_stage(stream=missing))

    assert caught.value.kind is ErrorKind.TRANSIENT
    assert f"stream '{missing}' does not exist (yet)" in str(caught.value)


def test_a_classic_queue_named_as_stream_is_refused_and_left_untouched(broker: Broker, source: RabbitmqSource) -> None:
    queue = broker.queue()
    broker.publish(queue, *events("t1"))

    with pytest.raises(SourceQueryError) as caught:
        fetch(source, make_stage(stream=queue))

    assert caught.value.kind is ErrorKind.PERMANENT
    assert "x-stream-offset" in str(caught.value)  # the broker refused the consumer before delivering
    assert broker.depth(queue) == 2


def test_publish_to_a_stream_waits_for_confirms(broker: Broker, source: RabbitmqSource) -> None:
    stream = broker.stream()

    source.publish(Destination(stream=stream), [b'{"event_id": "e1"}', b'{"event_id": "e2"}'], key="k1")

    records = fetch(source, make_stage(stream=stream, **{"from": "earliest"})).records
    assert [(r["event_id"], r["_key"]) for r in records] == [("e1", "k1"), ("e2", "k1")]
    with pytest.raises(SourceQueryError, match="no queue is bound"):
        source.publish(Destination(stream=f"tc-nowhere-{uuid.uuid4().hex[:8]}"), [b"{}"])


# -- exchanges: trackcheck's own queue ------------------------------------------------------------------


def listen(source: RabbitmqSource, exchange: str, routing_key: str = "orders.*") -> Listener:
    return source.listen(make_stage(exchange=exchange, routing_key=routing_key), {})


def drain_all(listener: Listener, expected: int) -> list[dict[str, Any]]:
    """Drain until ``expected`` messages came (deliveries take a moment), decoded."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + 5
    while len(got) < expected and time.monotonic() < deadline:
        got.extend(json.loads(m.payload) | {"_meta": dict(m.meta)} for m in listener.drain(100))
        time.sleep(0.02)
    return got


def test_listener_drains_then_commits_and_nothing_comes_again(broker: Broker, source: RabbitmqSource) -> None:
    exchange = broker.exchange()
    listener = listen(source, exchange)
    try:
        assert listener.durable
        broker.publish("orders.created", {"n": 1}, {"n": 2}, exchange=exchange, message_id="o-1")
        broker.publish("other.key", {"n": 3}, exchange=exchange)  # the binding does not match it

        got = drain_all(listener, 2)
        listener.commit()
        time.sleep(0.2)

        assert [g["n"] for g in got] == [1, 2]
        assert got[0]["_meta"]["_routing_key"] == "orders.created" and got[0]["_meta"]["_key"] == "o-1"
        assert listener.drain(100) == []
    finally:
        listener.close(remove=True)


def test_listener_closed_without_remove_keeps_what_is_published_meanwhile(
    broker: Broker, source: RabbitmqSource
) -> None:
    exchange = broker.exchange()
    first = listen(source, exchange)
    broker.publish("orders.a", {"n": 1}, exchange=exchange)
    assert [g["n"] for g in drain_all(first, 1)] == [1]  # drained but not committed: trackcheck stops here
    first.close(remove=False)

    broker.publish("orders.b", {"n": 2}, exchange=exchange)  # while trackcheck is away
    again = listen(source, exchange)
    try:
        # nothing lost: the uncommitted message comes back, and what was published while away is there
        assert sorted(g["n"] for g in drain_all(again, 2)) == [1, 2]
        again.commit()
    finally:
        again.close(remove=True)


def test_listener_closed_with_remove_deletes_its_queue(broker: Broker, source: RabbitmqSource) -> None:
    exchange = broker.exchange()
    listener = listen(source, exchange)
    queue = listener.queue  # type: ignore[attr-defined]
    assert queue.startswith("trackcheck.")
    assert broker.exists(queue)

    listener.close(remove=True)

    assert not broker.exists(queue)


def test_listening_leaves_the_applications_queue_as_it_is(broker: Broker, source: RabbitmqSource) -> None:
    exchange = broker.exchange()
    app_queue = broker.queue(exchange, "orders.*")
    listener = listen(source, exchange)
    try:
        broker.publish("orders.created", *events("t1"), exchange=exchange)
        time.sleep(0.2)
        assert broker.depth(app_queue) == 2

        assert len(drain_all(listener, 2)) == 2
        listener.commit()

        assert broker.depth(app_queue) == 2  # messages_ready unchanged: trackcheck read its own copy
    finally:
        listener.close(remove=True)


def test_a_listener_whose_queue_was_deleted_says_so(broker: Broker, source: RabbitmqSource) -> None:
    listener = listen(source, broker.exchange())
    try:
        broker.channel.queue_delete(listener.queue)  # type: ignore[attr-defined]
        time.sleep(0.1)
        with pytest.raises(SourceQueryError, match="was deleted"):
            listener.drain(100)
    finally:
        listener.close(remove=True)


def test_an_exchange_that_does_not_exist_cannot_be_listened_to_yet(source: RabbitmqSource) -> None:
    with pytest.raises(SourceQueryError) as caught:
        listen(source, f"tc-nowhere-{uuid.uuid4().hex[:8]}")

    assert caught.value.kind is ErrorKind.TRANSIENT
    assert "does not exist (yet)" in str(caught.value)


def test_exchange_fetch_decodes_what_was_captured(source: RabbitmqSource) -> None:
    from trackcheck.sources.base import Message

    at = datetime.now(UTC)
    captured = [
        Message(json.dumps(event).encode(), {"_routing_key": "orders.x"}, at) for event in events("t1") + events("t2")
    ]
    captured.append(Message(b"garbage", {"_routing_key": "orders.x"}, at))
    stage = make_stage(exchange="orders", routing_key="orders.*", where={"test_id": "{test_id}"})

    result = fetch(source, stage, captured=captured, filters={"test_id": ["t1"]})

    assert [r["event_id"] for r in result.records] == ["e1", "e2"]
    assert result.unparsed == 1


def test_exchange_stage_verifies_what_is_published_after_the_run_started(
    broker: Broker, tmp_path: Path, first_poll: threading.Event
) -> None:
    exchange = broker.exchange()
    app_queue = broker.queue(exchange, "orders.#")
    first, second = events("t1")
    broker.publish("orders.created", first, exchange=exchange)  # before the run: never heard
    broker.later(0.5, lambda: broker.publish("orders.created", first, exchange=exchange), first_poll)
    broker.later(1.0, lambda: broker.publish("orders.refunded", second, exchange=exchange), first_poll)

    plan = write_plan(tmp_path, f"exchange: {exchange}\nrouting_key: 'orders.#'")
    result = trackcheck.verify(plan, params={"test_id": "t1"}, **POLL, timeout="10s")

    assert result.ok, result.to_dict()
    assert result.stage("bus").found == 2 and result.stage("bus").duplicates == []
    assert broker.depth(app_queue) == 3
    # the run ended: trackcheck's own queue is gone, the application's is still bound
    assert bound_to(exchange) == [app_queue]


def bound_to(exchange: str) -> list[str]:
    """The queues bound to ``exchange``, as the broker lists them."""
    listed = subprocess.run(
        ["rabbitmqctl", "-q", "list_bindings", "source_name", "destination_name"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return [line.split("\t")[1] for line in listed.stdout.splitlines() if line.split("\t")[0] == exchange]


# -- errors and plans ----------------------------------------------------------------------------------


def test_bad_credentials_are_permanent_and_the_password_is_never_shown(broker: Broker, tmp_path: Path) -> None:
    stream = broker.stream()
    url = "amqp://guest:Sup3rS3cret@127.0.0.1:5672/%2F"
    with make_source(url) as wrong, pytest.raises(SourceConnectError) as caught:
        fetch(wrong, make_stage(stream=stream))

    assert caught.value.kind is ErrorKind.PERMANENT
    assert "refused the credentials" in str(caught.value)
    assert "Sup3rS3cret" not in str(caught.value)

    result = trackcheck.verify(write_plan(tmp_path, f"stream: {stream}", url=url), params={"test_id": "t1"}, **POLL)
    stage = result.stage("bus")
    assert (stage.status, stage.error_kind) == ("error", "permanent")
    assert "refused the credentials" in (stage.reason or "")
    assert "Sup3rS3cret" not in json.dumps(result.to_dict())


def test_an_unreachable_broker_is_transient() -> None:
    away = make_source("amqp://guest:guest@127.0.0.1:1/%2F", connect_timeout=2)
    with away, pytest.raises(SourceConnectError) as caught:
        fetch(away, make_stage(stream="anything"))

    assert caught.value.kind is ErrorKind.TRANSIENT
    assert "could not connect" in str(caught.value)


@pytest.mark.parametrize(
    ("keys", "problem"),
    [
        ({}, "needs 'stream'"),
        ({"stream": "s", "exchange": "x"}, "not both"),
        ({"stream": "s", "routing_key": "k"}, "'routing_key' applies to an 'exchange' stage"),
        ({"exchange": "x", "from": "earliest"}, "an exchange keeps no history"),
        ({"stream": "s", "topic": "t"}, "topic: unknown key: a rabbitmq stage reads"),
    ],
)
def test_check_stage_refuses_what_cannot_be_read(keys: dict[str, Any], problem: str) -> None:
    assert problem in (RabbitmqSource.check_stage(make_stage(**keys)) or "")
    assert RabbitmqSource.check_stage(make_stage(stream="s", **{"from": "-10m"})) is None
    assert RabbitmqSource.check_stage(make_stage(exchange="x", routing_key="orders.{test_id}")) is None


def test_hosts_and_masking() -> None:
    source = make_source("amqp://user:p%40ss@broker.example:5672/vh")
    assert source.hosts() == ["broker.example"]
    error = source.error(SourceError, "amqp://user:p%40ss@broker.example:5672/vh failed", None)
    assert "p%40ss" not in str(error)
