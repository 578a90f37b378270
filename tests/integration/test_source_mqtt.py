"""The mqtt source against real Mosquitto brokers: the machine's (127.0.0.1:1883, anonymous) and, for
credentials and refused subscriptions, private ones this module starts (dynamic security plugin).

Each test uses its own topic root and client id prefix, and removes the sessions it created.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

import trackcheck
from tests.ports import free_port
from tests.settings import MIN_INTERVAL
from trackcheck.compare import evaluate_stage
from trackcheck.errors import ErrorKind, PlanError, SourceConnectError, SourceQueryError, SourceTimeoutError
from trackcheck.plan.model import SourceSpec, StageSpec
from trackcheck.sources import build_source
from trackcheck.sources.base import Destination, FetchRequest, FetchResult, Message
from trackcheck.sources.mqtt import MqttListener, MqttSource

pytestmark = pytest.mark.integration

BROKER = "mqtt://127.0.0.1:1883"
START_MOSQUITTO = "mosquitto -d -c /etc/mosquitto/mosquitto.conf"
PASSWORD = "s3cr3t-pw"
EVENTS = [
    {"test_id": "abc", "msg_id": "m1", "event": "boot", "price": 0},
    {"test_id": "abc", "msg_id": "m2", "event": "purchase", "price": 19.99},
    {"test_id": "abc", "msg_id": "m3", "event": "shutdown", "price": 0},
]


# -- brokers ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def machine_broker() -> None:
    try:
        socket.create_connection(("127.0.0.1", 1883), timeout=2).close()
    except OSError as exc:
        pytest.fail(f"Mosquitto is not reachable at 127.0.0.1:1883 ({exc}); start it with: {START_MOSQUITTO}")


def start_mosquitto(folder: Path, settings: str, port: int | None = None) -> tuple[subprocess.Popen[bytes], int]:
    """A private Mosquitto (on a free port unless given); returned once it accepts connections."""
    port = port or free_port()
    config = folder / "mosquitto.conf"
    user = "user root\n" if os.geteuid() == 0 else ""  # as root, Mosquitto would switch to 'mosquitto'
    config.write_text(f"listener {port} 127.0.0.1\nlog_dest none\n{user}{settings}")
    process = subprocess.Popen(["mosquitto", "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process, port
        except OSError:
            if process.poll() is not None:
                break
            time.sleep(0.02)
    process.kill()
    pytest.fail(f"a private mosquitto did not start: {process.communicate()[1].decode()}")


def stop_mosquitto(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def secured_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A Mosquitto refusing anonymous clients: user ``alice`` (PASSWORD) may publish and subscribe under
    ``open/#`` only (Mosquitto's dynamic security plugin answers a refused SUBSCRIBE with 0x87)."""
    folder = tmp_path_factory.mktemp("secured-mosquitto")
    salt = os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", PASSWORD.encode(), salt, 101)
    allowed = ("publishClientSend", "publishClientReceive", "subscribePattern")
    security = {
        "clients": [
            {
                "username": "alice",
                "password": base64.b64encode(digest).decode(),
                "salt": base64.b64encode(salt).decode(),
                "iterations": 101,
                "roles": [{"rolename": "devices"}],
            }
        ],
        "roles": [{"rolename": "devices", "acls": [{"acltype": t, "topic": "open/#", "allow": True} for t in allowed]}],
        "defaultACLAccess": {
            "publishClientSend": False,
            "publishClientReceive": False,
            "subscribe": False,
            "unsubscribe": True,
        },
    }
    (folder / "security.json").write_text(json.dumps(security))
    process, port = start_mosquitto(
        folder,
        "allow_anonymous false\nplugin /usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so\n"
        f"plugin_opt_config_file {folder / 'security.json'}\n",
    )
    yield port
    stop_mosquitto(process)


# -- the pieces of one test ------------------------------------------------------------------------------
@pytest.fixture
def root() -> str:
    """This test's topic root."""
    return f"trackcheck-test/{uuid.uuid4().hex[:12]}"


@pytest.fixture
def make_source() -> Iterator[Callable[..., MqttSource]]:
    """Sources with a client id prefix of this test only; closed afterwards."""
    prefix = f"tc-test-{uuid.uuid4().hex[:8]}"
    made: list[MqttSource] = []

    def make(**options: Any) -> MqttSource:
        options = {"url": BROKER, "client_id_prefix": prefix, **options}
        source = MqttSource("devices", MqttSource.options_model.model_validate(options))
        made.append(source)
        return source

    yield make
    for source in made:
        source.close()
    left = [t.name for t in threading.enumerate() if t.name.startswith(f"paho-mqtt-client-{prefix}")]
    assert left == [], "network threads of closed listeners are still running"


@pytest.fixture
def source(make_source: Callable[..., MqttSource]) -> MqttSource:
    return make_source()


@pytest.fixture
def listen(make_source: Callable[..., MqttSource]) -> Iterator[Callable[..., MqttListener]]:
    """Opens listeners and removes their sessions at the end (a test's own close comes first)."""
    opened: list[MqttListener] = []

    def open_listener(source: MqttSource, stage: StageSpec, params: dict[str, Any] | None = None) -> MqttListener:
        listener = source.listen(stage, params or {})
        opened.append(listener)
        return listener

    yield open_listener
    for listener in reversed(opened):
        listener.close(remove=True)


def make_stage(topic: str, **keys: Any) -> StageSpec:
    spec = {"name": "devices", "source": "devices", "topic": topic, "compare": {"with": "expect"}, **keys}
    return StageSpec.model_validate(spec)


class App:
    """An application's own MQTT client: publishes, and (if given a topic) subscribes and keeps what it got."""

    def __init__(self, port: int = 1883, *, client_id: str = "", persistent: bool = False) -> None:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.received: list[bytes] = []
        self.client.on_message = lambda client, userdata, message: self.received.append(message.payload)
        self.persistent = persistent
        self.port = port
        self.connect()

    def connect(self) -> None:
        connected = threading.Event()
        self.client.on_connect = lambda *args: connected.set()
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = 300 if self.persistent else 0
        self.client.connect("127.0.0.1", self.port, clean_start=not self.persistent, properties=properties)
        self.client.loop_start()
        assert connected.wait(5)

    def subscribe(self, topic: str) -> None:
        granted = threading.Event()
        self.client.on_subscribe = lambda *args: granted.set()
        self.client.subscribe(topic, qos=1)
        assert granted.wait(5)

    def publish(
        self, topic: str, payloads: list[Any], *, qos: int = 1, retain: bool = False, delay: float = 0.0, **user: str
    ) -> None:
        properties = None
        if user:
            properties = Properties(PacketTypes.PUBLISH)
            properties.UserProperty = list(user.items())
        for payload in payloads:
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.client.publish(topic, data, qos=qos, retain=retain, properties=properties).wait_for_publish(5)
            time.sleep(delay)

    def disconnect(self, *, remove: bool = False) -> None:
        properties = Properties(PacketTypes.DISCONNECT)
        properties.SessionExpiryInterval = 0 if remove else 300
        self.client.disconnect(properties=properties if self.persistent else None)
        self.client.loop_stop()


@pytest.fixture
def app() -> Iterator[App]:
    client = App()
    yield client
    client.disconnect()


def drain_until(listener: MqttListener, count: int, timeout: float = 5.0) -> list[Message]:
    """Drain like the poller does until ``count`` messages came (or the timeout passed)."""
    got: list[Message] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        got.extend(listener.drain(1000))
        time.sleep(0.02)
    return got


def heard_before(listener: MqttListener, app: App, topic: str) -> list[Message]:
    """Everything the listener gets before a marker published now: the broker delivers what it queued for
    a session before what is published later, so an absence is proven without waiting for a timeout."""
    app.publish(topic, [b"marker"])
    got: list[Message] = []
    deadline = time.monotonic() + 5
    while not any(m.payload == b"marker" for m in got) and time.monotonic() < deadline:
        got.extend(listener.drain(1000))
        time.sleep(0.02)
    payloads = [m.payload for m in got]
    assert b"marker" in payloads, "the marker never arrived"
    return got[: payloads.index(b"marker")]


def wait_disconnected(listener: MqttListener) -> None:
    """Until the listener's client noticed that its connection is gone (paho says so after its callback)."""
    deadline = time.monotonic() + 5
    while listener.client.is_connected() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not listener.client.is_connected()


def error_texts(error: BaseException) -> str:
    """The text of an error and of every error chained to it (what a traceback would print)."""
    texts = []
    current: BaseException | None = error
    while current is not None:
        texts.append(f"{type(current).__name__}: {current}")
        current = current.__cause__ or current.__context__
    return "\n".join(texts)


def payloads(messages: list[Message]) -> list[Any]:
    return [json.loads(m.payload) for m in messages]


# -- listening -------------------------------------------------------------------------------------------
def test_a_listener_hears_what_is_published_in_order_with_the_bus_fields(
    source: MqttSource, listen: Callable[..., MqttListener], app: App, root: str
) -> None:
    stage = make_stage(f"{root}/devices/+/events")
    listener = listen(source, stage)

    later = threading.Thread(target=app.publish, args=(f"{root}/devices/d1/events", EVENTS[:2]), kwargs={"delay": 0.2})
    later.start()
    app.publish(f"{root}/devices/d1/status", [{"not": "an event"}])  # another topic: not heard
    later.join()
    app.publish(f"{root}/devices/d2/events", EVENTS[2:], source="edge")
    heard = drain_until(listener, 3)

    assert source.channel(stage, {}) == f"topic {root}/devices/+/events qos 1"
    assert listener.durable
    assert payloads(heard) == EVENTS
    assert [m.meta["_topic"] for m in heard] == [f"{root}/devices/d1/events"] * 2 + [f"{root}/devices/d2/events"]
    assert [m.meta["_headers"] for m in heard] == [{}, {}, {"source": "edge"}]  # MQTT 5 user properties
    assert all(m.meta["_key"] is None and m.meta["_retain"] is False for m in heard)
    stamps = [m.meta["_timestamp"] for m in heard]
    assert stamps == sorted(stamps) and all(s.endswith("+00:00") for s in stamps)
    assert (heard[1].at - heard[0].at).total_seconds() >= 0.15  # receipt time: the delay is visible
    listener.commit()
    assert listener.drain(1000) == []


def test_a_restarted_trackcheck_receives_what_was_published_while_it_was_away(
    make_source: Callable[..., MqttSource], listen: Callable[..., MqttListener], app: App, root: str
) -> None:
    stage = make_stage(f"{root}/events")
    first = listen(make_source(), stage)
    app.publish(f"{root}/events", EVENTS[:1])
    assert payloads(drain_until(first, 1)) == EVENTS[:1]
    first.commit()
    first.close(remove=False)  # the service stops

    app.publish(f"{root}/events", EVENTS[1:])  # nobody from trackcheck connected
    again = listen(make_source(), stage)  # a new process: same channel, same client id, same session

    assert again.client_id == first.client_id
    assert payloads(drain_until(again, 2)) == EVENTS[1:]
    again.commit()
    assert heard_before(again, app, f"{root}/events") == []


def test_what_was_drained_but_not_committed_is_delivered_again(
    source: MqttSource, listen: Callable[..., MqttListener], app: App, root: str
) -> None:
    stage = make_stage(f"{root}/events")
    listener = listen(source, stage)
    app.publish(f"{root}/events", EVENTS[:2])
    assert payloads(drain_until(listener, 2)) == EVENTS[:2]
    listener.close(remove=False)  # a crash before the buffer was stored: no commit

    again = listen(source, stage)
    redelivered = drain_until(again, 2)
    again.commit()
    again.close(remove=False)
    once_more = listen(source, stage)

    assert payloads(redelivered) == EVENTS[:2]
    assert heard_before(once_more, app, f"{root}/events") == []  # committed: not delivered a third time


def test_qos_0_keeps_no_session_so_a_restart_misses_what_was_published(
    source: MqttSource, listen: Callable[..., MqttListener], app: App, root: str
) -> None:
    stage = make_stage(f"{root}/events", qos=0)
    listener = listen(source, stage)
    assert not listener.durable
    assert source.channel(stage, {}) == f"topic {root}/events qos 0"
    listener.close(remove=False)

    app.publish(f"{root}/events", EVENTS)
    again = listen(source, stage)

    assert heard_before(again, app, f"{root}/events") == []


def test_close_with_remove_ends_the_session_for_good(
    source: MqttSource, listen: Callable[..., MqttListener], app: App, root: str
) -> None:
    stage = make_stage(f"{root}/events")
    listener = listen(source, stage)
    app.publish(f"{root}/events", EVENTS[:1])  # heard, never drained: removed with the session
    drain_until(listener, 0)
    listener.close(remove=True)  # no run needs the channel any more

    app.publish(f"{root}/events", EVENTS[1:])
    again = listen(source, stage)

    assert heard_before(again, app, f"{root}/events") == []


def test_topic_parameters_and_wildcards_pick_the_run_s_topics(
    source: MqttSource, listen: Callable[..., MqttListener], app: App, root: str
) -> None:
    stage = make_stage(f"{root}/{{device}}/#")
    listener = listen(source, stage, {"device": "d1"})
    app.publish(f"{root}/d1/events", [{"n": 1}])
    app.publish(f"{root}/d2/events", [{"n": 2}])
    app.publish(f"{root}/d1/events/deep/down", [{"n": 3}])
    app.publish(f"{root}/d1", [{"n": 4}])  # '#' also matches the parent level

    assert source.channel(stage, {"device": "d1"}) == f"topic {root}/d1/# qos 1"
    assert payloads(heard_before(listener, app, f"{root}/d1/x")) == [{"n": 1}, {"n": 3}, {"n": 4}]
    for widening in ("+", "#", "d1/#"):
        with pytest.raises(SourceQueryError) as caught:
            source.channel(stage, {"device": widening})
        assert caught.value.kind is ErrorKind.PERMANENT
        assert "would widen the subscription" in str(caught.value)


def test_stale_retained_messages_are_not_heard_fresh_ones_are_marked(
    source: MqttSource, listen: Callable[..., MqttListener], app: App, root: str
) -> None:
    topic = f"{root}/status"
    app.publish(topic, [{"state": "stale"}], retain=True)  # retained before the run: not an event of it
    try:
        listener = listen(source, make_stage(topic))
        app.publish(topic, [{"state": "online"}], retain=True)
        app.publish(topic, [{"state": "plain"}])
        heard = heard_before(listener, app, topic)
    finally:
        app.publish(topic, [b""], retain=True)  # clears the retained message

    assert payloads(heard) == [{"state": "online"}, {"state": "plain"}]
    assert [m.meta["_retain"] for m in heard] == [True, False]


def test_qos_2_messages_are_heard_once(
    source: MqttSource, listen: Callable[..., MqttListener], app: App, root: str
) -> None:
    stage = make_stage(f"{root}/events", qos=2)
    listener = listen(source, stage)
    app.publish(f"{root}/events", EVENTS, qos=2)
    heard = drain_until(listener, 3)
    listener.commit()
    listener.close(remove=False)
    again = listen(source, stage)

    assert listener.durable and payloads(heard) == EVENTS
    assert heard_before(again, app, f"{root}/events") == []  # acknowledged by protocol: never again


# -- what the application sees ---------------------------------------------------------------------------
def test_the_application_s_subscribers_still_receive_every_message(
    source: MqttSource, listen: Callable[..., MqttListener], app: App, root: str
) -> None:
    topic = f"{root}/events"
    online = App()
    online.subscribe(topic)
    offline = App(client_id=f"app-{uuid.uuid4().hex[:8]}", persistent=True)  # a consumer that is down now
    offline.subscribe(topic)
    offline.disconnect()
    try:
        listener = listen(source, make_stage(topic))
        app.publish(topic, EVENTS, delay=0.05)
        heard = drain_until(listener, 3)
        listener.commit()  # trackcheck acknowledged everything on its own session
        listener.close(remove=True)

        offline.connect()  # the application's consumer comes back
        deadline = time.monotonic() + 5
        while (len(offline.received) < 3 or len(online.received) < 3) and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        online.disconnect()
        offline.disconnect(remove=True)

    assert payloads(heard) == EVENTS
    assert [json.loads(p) for p in online.received] == EVENTS
    assert [json.loads(p) for p in offline.received] == EVENTS  # its queue was not touched


def test_shared_subscriptions_are_refused_they_would_take_turns_with_the_application() -> None:
    problem = MqttSource.check_stage(make_stage("$share/workers/devices/+/events"))
    assert problem is not None and "take messages away" in problem


# -- fetch: what was captured, decoded and compared --------------------------------------------------------
def captured_run(
    source: MqttSource, listen: Callable[..., MqttListener], app: App, root: str, sent: list[dict[str, Any]]
) -> tuple[StageSpec, FetchResult]:
    """Publish ``sent`` on the stage's wildcard topic, capture it with a real listener, fetch run abc's."""
    stage = make_stage(
        f"{root}/+/events", where={"test_id": "{test_id}"}, compare={"with": "expect", "fields": ["event", "price"]}
    )
    listener = listen(source, stage)
    for event in sent:
        app.publish(f"{root}/{event['test_id']}/events", [event])
    captured = drain_until(listener, len(sent))
    listener.commit()
    result = source.fetch(FetchRequest(plan="p", stage=stage, filters={"test_id": ["abc"]}, captured=captured))
    return stage, result


def test_fetch_of_the_captured_messages_passes_when_every_event_arrived(
    source: MqttSource, listen: Callable[..., MqttListener], app: App, root: str
) -> None:
    other_run = {"test_id": "def", "msg_id": "m9", "event": "boot", "price": 0}
    stage, result = captured_run(source, listen, app, root, [EVENTS[0], other_run, *EVENTS[1:]])

    assert [r["msg_id"] for r in result.records] == ["m1", "m2", "m3"]
    assert result.records[0]["_topic"] == f"{root}/abc/events"
    assert (result.unparsed, result.scanned) == (0, 4)
    assert evaluate_stage(stage, ["msg_id"], result.records, EVENTS).verdict == "passed"


def test_fetch_shows_a_missing_event_a_changed_field_and_a_duplicate(
    source: MqttSource, listen: Callable[..., MqttListener], app: App, root: str
) -> None:
    changed = {**EVENTS[1], "price": 20}
    stage, result = captured_run(source, listen, app, root, [EVENTS[0], changed, EVENTS[0]])

    comparison = evaluate_stage(stage, ["msg_id"], result.records, EVENTS)

    assert comparison.verdict == "failed"
    assert comparison.missing == ["m3"]
    assert comparison.duplicates == ["m1"]
    assert comparison.mismatches == [{"key": "m2", "field": "price", "expected": 19.99, "actual": 20}]


def test_payloads_that_are_not_json_or_too_large_are_counted_unparsed(
    make_source: Callable[..., MqttSource], listen: Callable[..., MqttListener], app: App, root: str
) -> None:
    source = make_source(max_message_bytes=1000)
    stage = make_stage(f"{root}/events")
    listener = listen(source, stage)
    app.publish(f"{root}/events", [b"not json {", {"blob": "x" * 2000}, [1, 2], EVENTS[0]])
    captured = drain_until(listener, 4)

    result = source.fetch(FetchRequest(plan="p", stage=stage, captured=captured))
    as_text = source.fetch(FetchRequest(plan="p", stage=make_stage(f"{root}/events", format="text"), captured=captured))

    assert [r["msg_id"] for r in result.records] == ["m1"]
    assert result.unparsed == 3
    assert len(result.notes) == 3 and all(note.startswith(f"message topic {root}/events: ") for note in result.notes)
    assert "not JSON" in result.notes[0]
    assert "more than max_message_bytes (1000)" in result.notes[1]
    assert "not a list of objects" in result.notes[2]
    assert as_text.records[0]["_value"] == "not json {"  # format: text reads any payload
    assert as_text.unparsed == 1  # only the oversized one


def test_fetch_without_captured_messages_says_mqtt_keeps_no_history(source: MqttSource, root: str) -> None:
    result = source.fetch(FetchRequest(plan="p", stage=make_stage(f"{root}/events")))
    assert result.records == [] and "MQTT keeps no history" in result.notes[0]


# -- publish ---------------------------------------------------------------------------------------------
def test_publish_sends_each_payload_and_waits_for_the_broker(source: MqttSource, app: App, root: str) -> None:
    app.subscribe(f"{root}/events")

    source.publish(Destination(topic=f"{root}/events"), [json.dumps(e).encode() for e in EVENTS], key="ignored")
    source.publish(Destination(topic=f"{root}/events", qos=2), [b'{"n": 4}'])
    deadline = time.monotonic() + 5
    while len(app.received) < 4 and time.monotonic() < deadline:
        time.sleep(0.02)

    assert [json.loads(p) for p in app.received] == [*EVENTS, {"n": 4}]
    with pytest.raises(SourceQueryError, match="holds a wildcard"):
        source.publish(Destination(topic=f"{root}/+/events"), [b"{}"])


# -- errors ----------------------------------------------------------------------------------------------
def test_an_unreachable_broker_is_a_transient_connect_error_without_the_password(
    make_source: Callable[..., MqttSource], root: str
) -> None:
    source = make_source(url=f"mqtt://alice:{PASSWORD}@127.0.0.1:{free_port()}", connect_timeout=2)

    with pytest.raises(SourceConnectError) as caught:
        source.listen(make_stage(f"{root}/events"), {})
    with pytest.raises(SourceConnectError) as publishing:
        source.publish(Destination(topic=f"{root}/events"), [b"{}"])

    assert caught.value.kind is ErrorKind.TRANSIENT
    assert "could not connect to the broker at 127.0.0.1" in str(caught.value)
    assert "source 'devices'" in str(caught.value) and "stage 'devices'" in str(caught.value)
    assert PASSWORD not in error_texts(caught.value) and PASSWORD not in error_texts(publishing.value)
    assert PASSWORD not in source.mask(f"connecting to {source.options.url}")


def test_a_broker_that_never_answers_is_a_timeout(make_source: Callable[..., MqttSource], root: str) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the TCP connection completes in the backlog; no CONNACK ever comes
    url = f"mqtt://alice:{PASSWORD}@127.0.0.1:{silent.getsockname()[1]}"
    source = make_source(url=url, connect_timeout=0.3)
    started = time.monotonic()
    try:
        with pytest.raises(SourceTimeoutError) as caught:
            source.listen(make_stage(f"{root}/events"), {})
    finally:
        silent.close()

    assert time.monotonic() - started < 2
    assert caught.value.kind is ErrorKind.TRANSIENT and "did not answer within 0.3s" in str(caught.value)
    assert PASSWORD not in error_texts(caught.value)


def test_refused_credentials_are_a_permanent_error_without_the_password(
    make_source: Callable[..., MqttSource], secured_port: int
) -> None:
    wrong = "wr0ng-pa55"
    source = make_source(url=f"mqtt://alice:{wrong}@127.0.0.1:{secured_port}")
    anonymous = make_source(url=f"mqtt://127.0.0.1:{secured_port}")

    with pytest.raises(SourceConnectError) as caught:
        source.listen(make_stage("open/events"), {})
    with pytest.raises(SourceConnectError) as nobody:
        anonymous.listen(make_stage("open/events"), {})

    assert caught.value.kind is ErrorKind.PERMANENT and nobody.value.kind is ErrorKind.PERMANENT
    assert "refused the connection: Not authorized (check the user and password" in str(caught.value)
    assert wrong not in error_texts(caught.value)


def test_a_refused_subscription_is_a_permanent_error_naming_the_topic(
    make_source: Callable[..., MqttSource], listen: Callable[..., MqttListener], secured_port: int
) -> None:
    source = make_source(url=f"mqtt://alice:{PASSWORD}@127.0.0.1:{secured_port}")
    allowed = listen(source, make_stage("open/+/events"))  # the same user may read open/#

    with pytest.raises(SourceQueryError) as caught:
        source.listen(make_stage("closed/{device}/events"), {"device": "d1"})
    with pytest.raises(SourceQueryError) as publishing:
        source.publish(Destination(topic="closed/d1/events"), [b"{}"])

    assert allowed.durable
    assert caught.value.kind is ErrorKind.PERMANENT
    assert "refused the subscription to topic 'closed/d1/events': Not authorized" in str(caught.value)
    assert publishing.value.kind is ErrorKind.PERMANENT
    assert "refused to publish to topic 'closed/d1/events'" in str(publishing.value)
    assert PASSWORD not in error_texts(caught.value)


def test_a_lost_connection_is_reported_after_what_was_heard(
    make_source: Callable[..., MqttSource], listen: Callable[..., MqttListener], tmp_path: Path
) -> None:
    process, port = start_mosquitto(tmp_path, "allow_anonymous true\n")
    try:
        source = make_source(url=f"mqtt://127.0.0.1:{port}")
        listener = listen(source, make_stage("events", qos=0))
        publisher = App(port)
        publisher.publish("events", EVENTS[:1], qos=0)
        publisher.disconnect()
        deadline = time.monotonic() + 5
        while not listener._buffer and time.monotonic() < deadline:  # heard, not yet drained
            time.sleep(0.01)
    finally:
        stop_mosquitto(process)
    wait_disconnected(listener)

    assert payloads(listener.drain(1000)) == EVENTS[:1]  # what was heard first
    with pytest.raises(SourceConnectError) as caught:
        listener.drain(1000)
    assert caught.value.kind is ErrorKind.TRANSIENT
    assert "lost the connection to the broker" in str(caught.value) and "qos 0 keeps no session" in str(caught.value)


def test_a_broker_restart_loses_nothing_and_repeats_nothing_at_qos_1(
    make_source: Callable[..., MqttSource], listen: Callable[..., MqttListener], tmp_path: Path
) -> None:
    settings = f"allow_anonymous true\npersistence true\npersistence_location {tmp_path}/\n"
    process, port = start_mosquitto(tmp_path, settings)
    source = make_source(url=f"mqtt://127.0.0.1:{port}")
    stage = make_stage("events")
    listener = listen(source, stage)
    publisher = App(port)
    publisher.publish("events", EVENTS[:1])
    assert payloads(drain_until(listener, 1)) == EVENTS[:1]
    listener.commit()
    publisher.publish("events", EVENTS[1:])  # heard by the listener, never drained nor acknowledged
    publisher.disconnect()
    deadline = time.monotonic() + 5
    while len(listener._buffer) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    stop_mosquitto(process)  # saves its sessions; the listener's two messages are still unacknowledged there
    wait_disconnected(listener)
    process, _ = start_mosquitto(tmp_path, settings, port)
    try:
        with pytest.raises(SourceConnectError) as caught:
            drain_until(listener, 1)  # what it held unacknowledged comes back with the session: not kept twice
        listener.close(remove=False)  # what the poller does with a listener it lost
        again = listen(source, stage)
        heard = drain_until(again, 2)
        again.commit()
    finally:
        stop_mosquitto(process)

    assert caught.value.kind is ErrorKind.TRANSIENT and "the broker keeps the session meanwhile" in str(caught.value)
    assert payloads(heard) == EVENTS[1:]


def test_a_listener_whose_session_another_client_takes_over_says_so(
    source: MqttSource, listen: Callable[..., MqttListener], root: str
) -> None:
    listener = listen(source, make_stage(f"{root}/events"))
    intruder = App(client_id=listener.client_id)  # e.g. another trackcheck with the same client_id_prefix
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                listener.drain(10)
            except SourceConnectError as exc:
                caught = exc
                break
            time.sleep(0.02)
        else:
            pytest.fail("the listener never noticed that it no longer hears anything")
    finally:
        intruder.disconnect()

    # Mosquitto 2.0.11 closes the old connection without a reason; a broker that sends "session taken over"
    # (0x8E) makes this a permanent error naming the client id
    assert "lost the connection to the broker at 127.0.0.1:1883" in str(caught)
    assert "the broker keeps the session meanwhile" in str(caught)


def test_two_listeners_on_one_channel_in_one_process_do_not_take_each_other_over(
    make_source: Callable[..., MqttSource], listen: Callable[..., MqttListener], app: App, root: str
) -> None:
    stage = make_stage(f"{root}/events")
    first = listen(make_source(), stage)  # e.g. runs of two versions of a plan
    second = listen(make_source(), stage)
    app.publish(f"{root}/events", EVENTS[:1])

    assert second.client_id == f"{first.client_id}-2"
    assert payloads(drain_until(first, 1)) == payloads(drain_until(second, 1)) == EVENTS[:1]


# -- plan checks -----------------------------------------------------------------------------------------
def test_stage_keys_are_checked_when_the_plan_loads() -> None:
    problem = MqttSource.check_stage(make_stage("devices/+/events", **{"from": "-10m"}))
    assert problem is not None and "MQTT keeps no history" in problem
    no_topic = StageSpec.model_validate({"name": "d", "source": "devices", "compare": {"with": "expect"}})
    assert "needs 'topic'" in str(MqttSource.check_stage(no_topic))
    assert "stream: unknown key" in str(MqttSource.check_stage(make_stage("a/b", stream="s")))
    assert "'#' must be a whole level" in str(MqttSource.check_stage(make_stage("a/#/b")))
    assert "'+' must be a whole level" in str(MqttSource.check_stage(make_stage("a/b+")))
    fine = make_stage("devices/{device}/#", qos=2, format="json", records="batch", select={"id": "id"})
    assert MqttSource.check_stage(fine) is None


def spec(**options: Any) -> SourceSpec:
    return SourceSpec.model_validate({"type": "mqtt", **options})


def test_source_options_name_the_host_and_never_quote_the_password() -> None:
    tls = build_source("b", spec(url="mqtts://u:p@broker.example"), plan="p")
    assert tls.hosts() == ["broker.example"]
    with pytest.raises(PlanError) as caught:
        build_source("b", spec(url=f"amqp://u:{PASSWORD}@h"), plan="p")
    assert "mqtt://" in str(caught.value) and PASSWORD not in str(caught.value)
    with pytest.raises(PlanError, match="client_id_prefix"):
        build_source("b", spec(url=BROKER, client_id_prefix="a b"), plan="p")


# -- the whole engine ------------------------------------------------------------------------------------
def test_verify_waits_for_events_published_after_the_run_started(
    tmp_path: Path, app: App, root: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = tmp_path / "devices.yaml"
    plan.write_text(
        f"""
name: mqtt-devices
key: msg_id
params:
  test_id: {{required: true}}
sources:
  broker: {{type: mqtt, url: "{BROKER}", client_id_prefix: tc-e2e-{uuid.uuid4().hex[:8]}}}
expect:
  - {{msg_id: m1, event: boot, price: 0}}
  - {{msg_id: m2, event: purchase, price: 19.99}}
  - {{msg_id: m3, event: shutdown, price: 0}}
stages:
  - name: devices
    source: broker
    topic: "{root}/{{test_id}}/events"
    where: {{test_id: "{{test_id}}"}}
    compare: {{with: expect, fields: [event, price]}}
"""
    )
    # MQTT keeps no history: the devices publish once trackcheck subscribed for the run (a spy on the real
    # listen says when), as a test suite's events are sent after it submitted the run
    listening: list[MqttListener] = []
    subscribed = threading.Event()
    real_listen = MqttSource.listen

    def spy(self: MqttSource, stage: StageSpec, params: Any, identity: str | None = None) -> MqttListener:
        listener = real_listen(self, stage, params, identity)
        listening.append(listener)
        subscribed.set()
        return listener

    monkeypatch.setattr(MqttSource, "listen", spy)

    def devices() -> None:
        if subscribed.wait(8):
            app.publish(f"{root}/abc/events", [{"test_id": "def", "msg_id": "m9", "event": "boot"}, *EVENTS], delay=0.1)

    sender = threading.Thread(target=devices)
    sender.start()
    try:
        result = trackcheck.verify(
            plan, params={"test_id": "abc"}, interval="200ms", timeout="8s", min_interval=MIN_INTERVAL
        )
    finally:
        sender.join()
        for listener in listening:  # its session, should the engine have stopped before removing it
            forget = App(client_id=listener.client_id)
            forget.disconnect()

    assert result.ok, result.to_dict()
    assert result.stage("devices").found == 3
