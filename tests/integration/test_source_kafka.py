"""The kafka source against a real Kafka-protocol broker (noida-db, started once for this module) with the
real confluent-kafka client: ``trackcheck.verify`` on plans written here, and the source read directly.

Every test works on topics of its own. The broker, its data folder and every topic go when the module ends.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaError, Producer

import trackcheck
from tests.integration.kafka_broker import KafkaBroker
from tests.ports import free_port
from tests.settings import MIN_INTERVAL
from trackcheck import PlanError
from trackcheck.errors import ErrorKind, SourceConnectError, SourceError, SourceQueryError, SourceTimeoutError
from trackcheck.plan.model import StageSpec
from trackcheck.sources import kafka
from trackcheck.sources.base import Destination, FetchRequest, FetchResult
from trackcheck.sources.kafka import KafkaOptions, KafkaSource

pytestmark = pytest.mark.integration

POLL: dict[str, Any] = {"interval": "200ms", "min_interval": MIN_INTERVAL}
CANARY = "Kafka-Canary-Secret-41"
EVENTS = [
    {"event_id": "e1", "event": "page_view", "amount": 0},
    {"event_id": "e2", "event": "add_to_cart", "amount": 25.5},
    {"event_id": "e3", "event": "purchase", "amount": 25.5},
]


@pytest.fixture(scope="module")
def broker() -> Iterator[KafkaBroker]:
    with KafkaBroker() as started:
        yield started


@pytest.fixture
def topic(broker: KafkaBroker) -> Iterator[str]:
    """A topic of this test only, with three partitions (the pipeline's real shape), deleted afterwards."""
    name = f"tc-{uuid.uuid4().hex[:12]}"
    broker.create_topic(name, partitions=3)
    yield name
    for future in broker.admin().delete_topics([name]).values():
        with contextlib.suppress(Exception):  # the broker's data folder goes with it anyway
            future.result(5)


def produce(
    broker: KafkaBroker,
    topic: str,
    payloads: Sequence[dict[str, Any] | bytes],
    *,
    key: str | None = None,
    headers: dict[str, str] | None = None,
    at: datetime | None = None,
) -> list[tuple[int, int]]:
    """Send each payload (a dict as JSON) and wait for the broker; returns (partition, offset) of each."""
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})
    placed: list[tuple[int, int]] = []

    def delivered(error: KafkaError | None, message: Any) -> None:
        assert error is None, error
        placed.append((message.partition(), message.offset()))

    for payload in payloads:
        value = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        extra: dict[str, Any] = {}
        if at is not None:
            extra["timestamp"] = int(at.timestamp() * 1000)
        producer.produce(
            topic,
            value,
            key=key.encode() if key else None,
            headers=list((headers or {}).items()),
            on_delivery=delivered,
            **extra,
        )
    assert producer.flush(10) == 0
    return placed


def tagged(test_id: str, events: Sequence[dict[str, Any]] = EVENTS, **changes: dict[str, Any]) -> list[dict[str, Any]]:
    return [{**event, **changes.get(event["event_id"], {}), "test_id": test_id} for event in events]


def later(seconds: float, action: Callable[[], Any]) -> threading.Timer:
    timer = threading.Timer(seconds, action)
    timer.daemon = True
    timer.start()
    return timer


def write_plan(
    folder: Path,
    broker: KafkaBroker | str,
    topic: str,
    *,
    stage: dict[str, Any] | None = None,
    source: dict[str, Any] | None = None,
    expect: list[dict[str, Any]] | None = None,
) -> Path:
    bootstrap = broker if isinstance(broker, str) else broker.bootstrap
    plan = {
        "name": "kafka-pipeline",
        "key": "event_id",
        "params": {"test_id": {"required": True}},
        "sources": {"bus": {"type": "kafka", "bootstrap": bootstrap, "connect_timeout": 2, "read_timeout": 3}},
        "expect": expect if expect is not None else EVENTS,
        "stages": [
            {
                "name": "bus",
                "source": "bus",
                "topic": topic,
                "where": {"test_id": "{test_id}"},
                "compare": {"with": "expect", "fields": ["event", "amount"]},
            }
        ],
    }
    plan["sources"]["bus"].update(source or {})  # type: ignore[index]
    plan["stages"][0].update(stage or {})  # type: ignore[index]
    path = folder / f"plan-{uuid.uuid4().hex[:8]}.yaml"
    path.write_text(yaml.safe_dump(plan, sort_keys=False), encoding="utf-8")
    return path


def kafka_source(broker: KafkaBroker, **options: Any) -> KafkaSource:
    return KafkaSource("bus", KafkaOptions.model_validate({"bootstrap": broker.bootstrap, **options}))


def fetch(source: KafkaSource, stage: dict[str, Any], **request: Any) -> FetchResult:
    spec = StageSpec.model_validate({"name": "bus", "source": "bus", "compare": {"with": "expect"}, **stage})
    return source.fetch(FetchRequest(plan="p", stage=spec, **request))


# -- verify: the stage waits, passes, fails with the diff ------------------------------------------------


def test_events_produced_with_delays_pass_after_the_stage_polled_several_times(
    broker: KafkaBroker, topic: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = write_plan(tmp_path, broker, topic)  # from: run_start (the default)
    events = tagged("run-1")
    produce(broker, topic, tagged("run-1"))  # before the run started: not read
    produce(broker, topic, tagged("other-run"))
    polled = threading.Event()
    fetch_as_usual = KafkaSource.fetch

    def noting_the_first_poll(source: KafkaSource, request: FetchRequest) -> FetchResult:
        try:
            return fetch_as_usual(source, request)
        finally:
            polled.set()

    def pipeline() -> None:
        polled.wait(10)  # the run exists once its stage is polled: only then do its events arrive
        for event in events:
            time.sleep(0.3)
            produce(broker, topic, [event], key=event["event_id"])

    monkeypatch.setattr(KafkaSource, "fetch", noting_the_first_poll)
    producing = threading.Thread(target=pipeline, daemon=True)
    producing.start()
    started = time.monotonic()

    result = trackcheck.verify(plan, params={"test_id": "run-1"}, timeout="10s", **POLL)

    producing.join(5)
    stage = result.stage("bus")
    assert result.ok, result.to_dict()
    assert (stage.expected, stage.found) == (3, 3)  # the copies sent before the run are not among them
    assert stage.attempts > 1  # it polled before the last event was there
    assert time.monotonic() - started >= 0.9
    assert stage.reason == "all 3 expected events found and matching"


def test_a_missing_event_fails_naming_it(broker: KafkaBroker, topic: str, tmp_path: Path) -> None:
    plan = write_plan(tmp_path, broker, topic, stage={"from": "-1m"})
    produce(broker, topic, tagged("run-2")[:2])

    result = trackcheck.verify(plan, params={"test_id": "run-2"}, timeout="1500ms", **POLL)

    stage = result.stage("bus")
    assert result.status == "failed" and stage.status == "failed"
    assert stage.missing == ["e3"]
    assert stage.reason == "timed out after 1500ms: 2 of 3 expected events found; waiting for e3"


def test_a_changed_field_fails_with_both_values(broker: KafkaBroker, topic: str, tmp_path: Path) -> None:
    plan = write_plan(tmp_path, broker, topic, stage={"from": "-1m"})
    produce(broker, topic, tagged("run-3", e2={"amount": 52.5}))

    result = trackcheck.verify(plan, params={"test_id": "run-3"}, timeout="5s", **POLL)

    stage = result.stage("bus")
    assert stage.status == "failed"
    assert stage.mismatches == [{"key": "e2", "field": "amount", "expected": 25.5, "actual": 52.5}]


def test_a_message_delivered_twice_is_reported_as_a_duplicate(broker: KafkaBroker, topic: str, tmp_path: Path) -> None:
    events = tagged("run-4")
    produce(broker, topic, [*events, events[1]])
    strict = write_plan(tmp_path, broker, topic, stage={"from": "-1m"})
    tolerant = write_plan(
        tmp_path,
        broker,
        topic,
        stage={
            "from": "-1m",
            "compare": {"with": "expect", "fields": ["event", "amount"], "duplicates": "allow-identical"},
        },
    )

    failed = trackcheck.verify(strict, params={"test_id": "run-4"}, timeout="5s", **POLL)
    allowed = trackcheck.verify(tolerant, params={"test_id": "run-4"}, timeout="5s", **POLL)

    assert failed.stage("bus").status == "failed"
    assert failed.stage("bus").duplicates == ["e2"]
    assert allowed.ok, allowed.to_dict()
    assert allowed.stage("bus").duplicates == ["e2"]
    assert "1 duplicate key allowed (identical copies)" in (allowed.stage("bus").reason or "")


def test_from_reads_back_before_the_run_start_and_run_start_does_not(
    broker: KafkaBroker, topic: str, tmp_path: Path
) -> None:
    five_minutes_ago = datetime.now(UTC) - timedelta(minutes=5)
    produce(broker, topic, tagged("run-5"), at=five_minutes_ago)  # sent before the run, by the message's time
    from_run_start = write_plan(tmp_path, broker, topic)
    ten_minutes_back = write_plan(tmp_path, broker, topic, stage={"from": "-10m"})
    two_minutes_back = write_plan(tmp_path, broker, topic, stage={"from": "-2m"})

    missed = trackcheck.verify(from_run_start, params={"test_id": "run-5"}, timeout="1s", **POLL)
    found = trackcheck.verify(ten_minutes_back, params={"test_id": "run-5"}, timeout="5s", **POLL)
    too_short = trackcheck.verify(two_minutes_back, params={"test_id": "run-5"}, timeout="1s", **POLL)

    assert missed.stage("bus").status == "failed" and missed.stage("bus").found == 0
    assert found.ok, found.to_dict()
    assert too_short.stage("bus").found == 0


def test_bus_fields_are_usable_in_where_select_and_compare(broker: KafkaBroker, topic: str, tmp_path: Path) -> None:
    placed = produce(broker, topic, EVENTS, key="user-7", headers={"origin": "web", "trace": "t-1"})
    produce(broker, topic, EVENTS, key="user-8", headers={"origin": "ios"})
    plan = write_plan(
        tmp_path,
        broker,
        topic,
        stage={
            "from": "-1m",
            "where": {"user": "{test_id}"},
            "select": {
                "event_id": "event_id",
                "event": "event",
                "user": "_key",
                "origin": "_headers.origin",
                "partition": "_partition",
                "offset": "_offset",
            },
            "compare": {"with": "expect", "fields": ["event", "origin"]},
        },
        expect=[{**event, "origin": "web"} for event in EVENTS],
    )

    result = trackcheck.verify(plan, params={"test_id": "user-7"}, timeout="5s", **POLL)
    read = fetch(
        kafka_source(broker), {"topic": topic, "from": "-1m", "where": {"_key": "x"}}, filters={"_key": ["user-7"]}
    )

    assert result.ok, result.to_dict()
    assert result.stage("bus").found == 3
    assert sorted((r["_partition"], r["_offset"]) for r in read.records) == sorted(placed)
    first = read.records[0]
    assert first["_key"] == "user-7" and first["_topic"] == topic
    assert first["_headers"] == {"origin": "web", "trace": "t-1"}
    assert datetime.fromisoformat(first["_timestamp"]) > datetime.now(UTC) - timedelta(minutes=1)


def test_non_json_and_oversized_messages_are_counted_and_do_not_stop_the_others(
    broker: KafkaBroker, topic: str, tmp_path: Path
) -> None:
    events = tagged("run-6")
    produce(broker, topic, [b"not json at all", events[0], {**events[1], "pad": "x" * 3000}, events[1], events[2]])
    plan = write_plan(tmp_path, broker, topic, stage={"from": "-1m"}, source={"max_message_bytes": 2000})

    result = trackcheck.verify(plan, params={"test_id": "run-6"}, timeout="5s", **POLL)
    read = fetch(kafka_source(broker, max_message_bytes=2000), {"topic": topic, "from": "-1m"})

    stage = result.stage("bus")
    assert result.ok, result.to_dict()
    assert stage.found == 3
    assert "(2 unparsed lines)" in (stage.reason or "")
    assert read.unparsed == 2 and read.scanned == 5 and len(read.records) == 3
    assert any("not JSON" in note for note in read.notes)
    assert any("more than max_message_bytes (2000)" in note and "partition" in note for note in read.notes)


# -- non-destructive: the application's consumer group is untouched ---------------------------------------


def group_offsets(broker: KafkaBroker, group: str) -> dict[tuple[str, int], int]:
    answer = broker.admin().list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])
    found = answer[group].result(10)
    return {(tp.topic, tp.partition): tp.offset for tp in found.topic_partitions or []}


def consume_as_group(broker: KafkaBroker, topic: str, group: str, count: int, wait: float = 10.0) -> list[str]:
    """What the application's consumer does: subscribe in its group, read ``count`` messages (or all until
    ``wait`` passes quietly), commit each one."""
    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
        }
    )
    seen: list[str] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + wait
        while len(seen) < count and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is None or message.error():
                continue
            seen.append(json.loads(message.value() or b"{}")["event_id"])
            consumer.commit(message=message, asynchronous=False)
    finally:
        consumer.close()
    return seen


def test_the_applications_consumer_group_keeps_its_offsets_and_sees_every_message(
    broker: KafkaBroker, topic: str, tmp_path: Path
) -> None:
    group = f"app-{uuid.uuid4().hex[:8]}"
    events = [{"event_id": f"e{n}", "event": "page_view", "amount": n, "test_id": "run-7"} for n in range(1, 7)]
    produce(broker, topic, events)
    before_verifying = consume_as_group(broker, topic, group, count=3)
    committed = group_offsets(broker, group)
    plan = write_plan(tmp_path, broker, topic, stage={"from": "earliest"}, expect=events)
    groups_before = {g.group_id for g in broker.admin().list_consumer_groups().result(10).valid}

    result = trackcheck.verify(plan, params={"test_id": "run-7"}, timeout="5s", **POLL)

    assert result.ok, result.to_dict()
    assert result.stage("bus").found == 6  # trackcheck read all six, the three consumed included
    assert group_offsets(broker, group) == committed  # the application's position did not move
    groups_after = {g.group_id for g in broker.admin().list_consumer_groups().result(10).valid}
    assert groups_after == groups_before  # trackcheck joined no group and committed nothing
    after_verifying = consume_as_group(broker, topic, group, count=3)
    assert sorted(before_verifying + after_verifying) == sorted(e["event_id"] for e in events)
    assert len(before_verifying) == len(after_verifying) == 3


# -- the reader: one read per batch, only what is new ------------------------------------------------------


def test_repeated_polls_read_only_new_messages_and_an_earlier_start_reads_the_gap(
    broker: KafkaBroker, topic: str
) -> None:
    produce(broker, topic, tagged("old"), at=datetime.now(UTC) - timedelta(minutes=5))
    produce(broker, topic, tagged("a") + tagged("b"))
    stage = {"topic": topic, "from": "-1m", "where": {"test_id": "x"}}

    with kafka_source(broker) as source:
        first = fetch(source, stage, filters={"test_id": ["a"]})
        read_first = source.messages_read
        again = fetch(source, stage, filters={"test_id": ["b"]})  # another batch of runs: from the cache
        read_again = source.messages_read
        produce(broker, topic, tagged("c"))
        newer = fetch(source, stage, filters={"test_id": ["a", "c"]})
        read_newer = source.messages_read
        earlier = fetch(source, {**stage, "from": "-10m"}, filters={"test_id": ["old"]})
        read_earlier = source.messages_read

    assert [len(r.records) for r in (first, again, newer, earlier)] == [3, 3, 6, 3]
    assert (read_first, read_again, read_newer, read_earlier) == (6, 6, 9, 12)
    assert earlier.scanned == 12


def test_the_cache_is_bounded_and_what_it_dropped_is_read_again(
    broker: KafkaBroker, topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # one key, one partition: half of it old, so that dropping the old half is due
    produce(broker, topic, tagged("old"), key="k", at=datetime.now(UTC) - timedelta(minutes=5))
    produce(broker, topic, tagged("new"), key="k")
    monkeypatch.setattr(kafka, "CACHE_IDLE", 0.3)  # how long a start some fetch asked for is kept

    with kafka_source(broker) as source:
        everything = fetch(source, {"topic": topic, "from": "-10m"})
        time.sleep(0.4)
        recent = fetch(source, {"topic": topic, "from": "-1m"})  # nobody needs the old messages any more
        kept = source.messages_read
        everything_again = fetch(source, {"topic": topic, "from": "-10m"})
        reread = source.messages_read - kept

    with kafka_source(broker, cache_messages=4) as capped:
        first = fetch(capped, {"topic": topic, "from": "-10m"})
        second = fetch(capped, {"topic": topic, "from": "-10m"})

    assert [len(r.records) for r in (everything, recent, everything_again)] == [6, 3, 6]
    assert reread == 3  # the dropped old messages, and only them
    assert len(first.records) == len(second.records) == 6  # a small cache costs reads, never records
    assert capped.messages_read == 6 + 2  # kept 4 of 6: the next poll read the 2 oldest again
    assert any("more messages since the start than cache_messages (4)" in note for note in first.notes)


def test_a_topic_that_does_not_exist_yet_is_a_transient_error_until_it_is_created(broker: KafkaBroker) -> None:
    name = f"tc-later-{uuid.uuid4().hex[:8]}"
    with kafka_source(broker) as source:
        with pytest.raises(SourceQueryError, match=f"topic '{name}' does not exist \\(yet\\)") as missing:
            fetch(source, {"topic": name, "from": "earliest"})
        assert missing.value.kind is ErrorKind.TRANSIENT
        assert name not in broker.admin().list_topics(timeout=5).topics  # reading did not create it
        produce(broker, name, [{"event_id": "e1"}])  # the pipeline's first message creates it
        assert [r["event_id"] for r in fetch(source, {"topic": name, "from": "earliest"}).records] == ["e1"]


# -- errors: what a user sees, never a password -----------------------------------------------------------


def test_a_broker_that_is_down_is_a_transient_error_naming_the_source_without_the_password(
    tmp_path: Path,
) -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    sasl = {"security_protocol": "SASL_PLAINTEXT", "sasl_username": "tracker", "sasl_password": CANARY}
    plan = write_plan(tmp_path, nowhere, "events", source={**sasl, "connect_timeout": 0.5})

    result = trackcheck.verify(plan, params={"test_id": "run-8"}, timeout="1500ms", **POLL)

    stage = result.stage("bus")
    assert result.status == "error" and stage.status == "error"
    assert stage.error_kind == "transient"  # retried until the timeout
    assert "source 'bus', stage 'bus'" in (stage.error or "")
    assert f"could not connect to bootstrap {nowhere}" in (stage.error or "")
    assert CANARY not in json.dumps(result.to_dict())


def test_refused_credentials_are_a_permanent_error_without_the_password(broker: KafkaBroker) -> None:
    # noida-db does not speak SCRAM: the client fails the SASL exchange, as with a wrong password
    options = {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-256",
               "sasl_username": "tracker", "sasl_password": CANARY, "connect_timeout": 3}  # fmt: skip
    began = time.monotonic()
    with kafka_source(broker, **options) as source, pytest.raises(SourceConnectError) as refused:
        fetch(source, {"topic": "events"})

    assert refused.value.kind is ErrorKind.PERMANENT
    assert "the broker refused the credentials" in str(refused.value)
    assert CANARY not in str(refused.value)
    assert time.monotonic() - began < 3  # known at once, not after the connect timeout
    assert CANARY in source.secrets() and source.mask(f"x {CANARY} y") == "x *** y"


def test_a_server_that_accepts_but_never_answers_is_a_timeout() -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    accepted: list[socket.socket] = []
    threading.Thread(target=lambda: accepted.append(silent.accept()[0]), daemon=True).start()
    source = KafkaSource("bus", KafkaOptions.model_validate({"bootstrap": f"127.0.0.1:{silent.getsockname()[1]}",
                                                             "connect_timeout": 1, "read_timeout": 1}))  # fmt: skip
    try:
        with source, pytest.raises(SourceTimeoutError, match="did not answer within 1s") as stalled:
            fetch(source, {"topic": "events"})
    finally:
        for connection in [*accepted, silent]:
            connection.close()

    assert stalled.value.kind is ErrorKind.TRANSIENT and accepted


def test_a_broker_that_stops_answering_is_a_timeout_and_the_next_poll_reads_again() -> None:
    with KafkaBroker() as own:  # frozen below: not the module's broker
        name = f"tc-{uuid.uuid4().hex[:8]}"
        produce(own, name, tagged("run-10"))
        with kafka_source(own, connect_timeout=1, read_timeout=1) as source:
            before = fetch(source, {"topic": name, "from": "-1m"})
            own.freeze()
            try:
                with pytest.raises(SourceTimeoutError, match="did not answer within 1s") as stalled:
                    fetch(source, {"topic": name, "from": "-1m"})
            finally:
                own.thaw()
            after = fetch(source, {"topic": name, "from": "-1m"})

    assert stalled.value.kind is ErrorKind.TRANSIENT
    assert len(before.records) == len(after.records) == 3


def test_publish_sends_messages_the_stage_then_reads(broker: KafkaBroker, topic: str) -> None:
    with kafka_source(broker) as source:
        source.publish(Destination(topic=topic), [json.dumps(e).encode() for e in tagged("run-9")], key="run-9")
        read = fetch(source, {"topic": topic, "from": "-1m"}, filters={"test_id": ["run-9"]})
        with pytest.raises(SourceError) as too_large:
            source.publish(Destination(topic=topic), [b"x" * 2_000_000])

    assert sorted(r["event_id"] for r in read.records) == ["e1", "e2", "e3"]
    assert {r["_key"] for r in read.records} == {"run-9"}
    assert too_large.value.kind is ErrorKind.PERMANENT and "MSG_SIZE_TOO_LARGE" in str(too_large.value)


def test_emit_publishes_the_runs_events_and_the_stage_reads_them(
    broker: KafkaBroker, topic: str, tmp_path: Path
) -> None:
    plan = write_plan(tmp_path, broker, topic)
    text = yaml.safe_load(plan.read_text())
    text["emit"] = {"source": "bus", "topic": topic, "stamp": {"test_id": "{test_id}"}}
    plan.write_text(yaml.safe_dump(text, sort_keys=False), encoding="utf-8")

    result = trackcheck.verify(plan, params={"test_id": "run-11"}, timeout="10s", **POLL)

    assert result.ok, result.to_dict()
    assert [(s.name, s.status) for s in result.stages] == [("emit", "passed"), ("bus", "passed")]
    assert "published 3 event(s)" in (result.stage("emit").reason or "")


# -- the plan: what a kafka source and stage accept --------------------------------------------------------


@pytest.mark.parametrize(
    ("stage", "problem"),
    [
        ({"topic": "events", "from": "-10m", "format": "text", "records": "items"}, None),
        ({"topic": "events.{test_id}"}, None),
        ({}, "a kafka stage needs 'topic'"),
        (
            {"topic": "events", "subject": "a.b"},
            "subject: unknown key: a kafka stage reads topic, from, format, records",
        ),
        ({"topic": "events", "query": "SELECT 1"}, "query: unknown key: a kafka stage reads"),
        ({"topic": "bad topic!"}, "is not a Kafka topic name"),
    ],
)
def test_check_stage(stage: dict[str, Any], problem: str | None) -> None:
    spec = StageSpec.model_validate({"name": "bus", "source": "bus", "compare": {"with": "expect"}, **stage})
    found = KafkaSource.check_stage(spec)
    assert found == problem if problem is None else problem in (found or "")


def test_options_are_checked_when_the_plan_loads(tmp_path: Path) -> None:
    source = KafkaSource("bus", KafkaOptions.model_validate({"bootstrap": "b1:9092, [::1]:9093,b3"}))
    assert source.hosts() == ["b1", "::1", "b3"]
    for options, message in [
        ({"sasl_username": "u", "sasl_password": "p"}, "sasl_username needs security_protocol"),
        ({"security_protocol": "SASL_SSL", "sasl_username": "u"}, "needs sasl_username and sasl_password"),
        ({"bootstrap": "b1:99999"}, "is not host:port"),
        ({"sasl_mechanism": "GSSAPI"}, "sasl_mechanism"),
    ]:
        plan = write_plan(tmp_path, "b1:9092", "events", source=options)
        with pytest.raises(PlanError, match=message):
            trackcheck.verify(plan, params={"test_id": "x"}, timeout="1s", **POLL)
