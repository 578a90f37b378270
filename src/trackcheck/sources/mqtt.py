"""The ``mqtt`` source: what devices and collectors publish on an MQTT broker, heard as it is published.

MQTT keeps no history, so this source *listens* (``listens = True``): when a run that reads an mqtt stage is
picked up, the poller calls ``listen`` and holds one subscription per channel (topic and QoS) for every run
waiting there; what it hears is stored in the state database and handed to ``fetch`` as
``request.captured``, which decodes it like every bus source (``bus.to_records``).

Reading takes nothing away: MQTT hands every message to every matching subscription, and trackcheck
subscribes with its own client id and session. Shared subscriptions (``$share/...``, EMQX ``$queue/...``),
whose members take turns, would take messages from the application's subscribers: they are refused.

Durability, for a stage with ``qos`` 1 or 2: the subscription lives in a persistent MQTT 5 session (clean
start off, ``session_expiry`` of the source) under a client id derived from the broker, the user and the
channel, so a trackcheck that restarts finds the broker kept what was published meanwhile (up to the
broker's queue limit). QoS 1 messages are acknowledged (``manual_ack``) only at ``commit``, once stored:
a crash between the two loses nothing, the broker delivers them again. QoS 2 is acknowledged by protocol at
receipt (PUBREC): duplicates never come back, but a message heard in the instant before a crash may be
lost. QoS 0 keeps no session: what is published while nobody listens is not heard.

Retained messages: the subscription asks the broker not to send what is retained at subscribe time (retain
handling 2): a retained message may be days old, not an event of the run. A message published *with* the
retain flag while trackcheck listens is an event like the others, marked ``_retain: true``.

This client speaks MQTT 5 only (Mosquitto >= 1.6, EMQX, HiveMQ, VerneMQ, AWS IoT): its session expiry,
retain handling and user properties (``_headers``) have no MQTT 3.1.1 equivalent.
"""

from __future__ import annotations

import hashlib
import logging
import ssl
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import unquote, urlsplit

from pydantic import Field, field_validator

from trackcheck.errors import SourceConnectError, SourceError, SourceQueryError, SourceTimeoutError
from trackcheck.plan.model import Duration, ReadSpec
from trackcheck.plan.templates import param_names, printable, render
from trackcheck.sources import missing_driver
from trackcheck.sources.base import (
    Destination,
    FetchRequest,
    FetchResult,
    Listener,
    Message,
    Source,
    SourceOptions,
)
from trackcheck.sources.bus import BusOptions, BusRead, timestamp, to_records

if TYPE_CHECKING:
    from types import ModuleType

    from paho.mqtt.client import Client, ConnectFlags, DisconnectFlags, MQTTMessage
    from paho.mqtt.properties import Properties
    from paho.mqtt.reasoncodes import ReasonCode

    from trackcheck.plan.model import StageSpec

log = logging.getLogger("trackcheck.sources.mqtt")

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
#: seconds between two keep-alive pings (the broker drops a silent client after 1.5 times this)
KEEPALIVE = 30
#: unacknowledged QoS 1/2 messages the broker may send before a ``commit`` (the MQTT 5 maximum: a broker's
#: own default, often 20, would stall delivery between two drains)
RECEIVE_MAXIMUM = 65535
#: the longest session expiry MQTT 5 can say short of "never" (0xFFFFFFFF)
MAX_SESSION_EXPIRY = 0xFFFFFFFE
#: CONNACK/DISCONNECT reasons the same connection gets every time: malformed or unsupported, a client id,
#: user or password the broker refuses, not authorized, banned, an authentication method it lacks
PERMANENT_REFUSALS = frozenset({0x81, 0x82, 0x84, 0x85, 0x86, 0x87, 0x8A, 0x8C})
CREDENTIAL_REFUSALS = frozenset({0x86, 0x87})
#: a SUBACK reason that may clear by itself (quota exceeded); every other failure is the same next time
TRANSIENT_SUBACK = frozenset({0x97})
SESSION_TAKEN_OVER = 0x8E
#: topic prefixes of shared subscriptions, whose members take turns with the application's
SHARED_PREFIXES = ("$share/", "$queue/")
#: the longest topic MQTT allows, in UTF-8 bytes
MAX_TOPIC_BYTES = 65535


class MqttOptions(BusOptions):
    """``type: mqtt``: ``mqtt://[user:password@]host[:1883]`` (``mqtts://`` for TLS, port 8883 by default)."""

    url: str
    #: the start of every client id trackcheck uses; give each trackcheck service sharing a broker its own
    client_id_prefix: str = Field(default="trackcheck", pattern=r"^[A-Za-z0-9_.-]{1,40}$")
    #: how long the broker keeps a QoS 1/2 subscription's session (and queues for it) while trackcheck is away
    session_expiry: Duration = timedelta(days=1)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        _endpoint(value)  # never quotes the url: it may hold a password
        return value

    @field_validator("session_expiry")
    @classmethod
    def _expiry(cls, value: timedelta) -> timedelta:
        if not timedelta(seconds=1) <= value <= timedelta(seconds=MAX_SESSION_EXPIRY):
            raise ValueError("session_expiry must be from 1s to about 136 years (MQTT's limit)")
        return value


@dataclass(frozen=True)
class _Endpoint:
    tls: bool
    host: str
    port: int
    username: str | None
    password: str | None


def _endpoint(url: str) -> _Endpoint:
    """The broker a ``mqtt://``/``mqtts://`` url names; ValueError saying what is wrong (never quoting it)."""
    parts = urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS:
        raise ValueError("the url must be mqtt://[user:password@]host[:port], or mqtts://... for TLS")
    try:
        port = parts.port or DEFAULT_PORTS[parts.scheme]
    except ValueError:
        raise ValueError("the url's port is not a number from 1 to 65535") from None
    if not parts.hostname:
        raise ValueError("the url names no broker host")
    username = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    return _Endpoint(parts.scheme == "mqtts", parts.hostname, port, username, password)


def topic_problem(topic: str, *, wildcards: bool) -> str | None:
    """Why ``topic`` is not a valid MQTT topic filter (``wildcards``) or topic name, or None."""
    if not topic:
        return "the topic is empty"
    if "\x00" in topic:
        return "the topic holds a NUL character"
    if len(topic.encode()) > MAX_TOPIC_BYTES:
        return f"the topic is longer than MQTT's {MAX_TOPIC_BYTES} bytes"
    if topic.startswith(SHARED_PREFIXES):
        return (
            f"{printable(topic)!r} is a shared subscription: its members take turns with the application's "
            "subscribers, so trackcheck would take messages away; subscribe to the topic itself"
        )
    levels = topic.split("/")
    for index, level in enumerate(levels):
        if ("+" in level or "#" in level) and not wildcards:
            return f"{printable(topic)!r} holds a wildcard (+ or #): messages are published to one topic"
        if "#" in level and (level != "#" or index != len(levels) - 1):
            return f"{printable(topic)!r}: '#' must be a whole level, the last one (devices/#)"
        if "+" in level and level != "+":
            return f"{printable(topic)!r}: '+' must be a whole level (devices/+/events)"
    return None


class MqttRead(BusRead):
    """What an ``mqtt`` stage reads: what is published on ``topic`` (a filter: ``devices/+/events``; it may
    hold ``{param}``) while its run waits, subscribed at ``qos`` (1 by default)."""

    places: ClassVar[tuple[str, ...]] = ("topic",)

    topic: str | None = None
    qos: int | None = Field(default=None, ge=0, le=2)
    #: refused with the reason: a plan's author who writes it expects history that MQTT does not keep
    from_: None = Field(default=None, alias="from")

    @field_validator("from_", mode="before")
    @classmethod
    def _no_history(cls, value: object) -> None:
        if value is not None:
            raise ValueError(
                "MQTT keeps no history: an mqtt stage hears what is published from when its run is picked "
                "up, never before"
            )

    @property
    def subscribed_qos(self) -> int:
        return 1 if self.qos is None else self.qos


class MqttSource(Source):
    """Subscribes to a stage's topic while runs wait there; decodes what was heard when they poll."""

    type_name: ClassVar[str] = "mqtt"
    options_model: ClassVar[type[SourceOptions]] = MqttOptions
    read_model: ClassVar[type[ReadSpec]] = MqttRead
    listens: ClassVar[bool] = True

    options: MqttOptions

    def __init__(self, name: str, options: SourceOptions) -> None:
        super().__init__(name, options)
        self._publisher: _Publisher | None = None
        self._lock = threading.Lock()

    @classmethod
    def check_stage(cls, stage: StageSpec) -> str | None:
        foreign = super().check_stage(stage)
        if foreign is not None:
            return foreign
        topic = MqttRead.of(stage).topic
        if not topic:
            return "an mqtt stage needs 'topic' (wildcards + and # allowed: devices/+/events)"
        return topic_problem(topic, wildcards=True)

    def hosts(self) -> list[str]:
        return [_endpoint(self.options.url).host]

    def close(self) -> None:
        with self._lock:
            publisher, self._publisher = self._publisher, None
        if publisher is not None:
            publisher.stop()

    # -- listening -------------------------------------------------------------------------------------
    def topic(self, stage: StageSpec, params: Mapping[str, Any]) -> str:
        """The stage's topic filter with the run's parameters; a parameter holding ``+``, ``#`` or NUL is
        refused (MQTT has no escaping, and it would widen the subscription)."""
        filter_ = MqttRead.of(stage).topic
        if not filter_:
            raise self.error(SourceQueryError, "the stage has no 'topic'", stage, permanent=True)
        for name in sorted(param_names(filter_)):
            value = str(params.get(name, ""))
            if any(c in value for c in "+#\x00"):
                message = (
                    f"run parameter {{{name}}} = {printable(value)!r} holds an MQTT wildcard (+ or #) or NUL, "
                    f"which would widen the subscription to {printable(filter_)!r}"
                )
                raise self.error(SourceQueryError, message, stage, permanent=True)
        topic = str(render(filter_, params))
        problem = topic_problem(topic, wildcards=True)
        if problem is not None:
            raise self.error(SourceQueryError, problem, stage, permanent=True)
        return topic

    def channel(self, stage: StageSpec, params: Mapping[str, Any]) -> str:
        return f"topic {self.topic(stage, params)} qos {MqttRead.of(stage).subscribed_qos}"

    def listen(self, stage: StageSpec, params: Mapping[str, Any], identity: str | None = None) -> MqttListener:
        """Subscribe to the stage's topic; returns once the broker granted the subscription.

        Raises SourceConnectError (broker unreachable: transient; credentials refused: permanent),
        SourceTimeoutError (no CONNACK/SUBACK in time), SourceQueryError (subscription refused: permanent).
        """
        topic = self.topic(stage, params)
        qos = MqttRead.of(stage).subscribed_qos
        endpoint = _endpoint(self.options.url)
        seed = f"{endpoint.username or ''}@{endpoint.host}:{endpoint.port}\x00topic {topic} qos {qos}"
        if identity is not None:  # the poller's, kept in the state database: one session per installation
            seed = f"{seed}\x00{identity}"
        client_id = _CLIENT_IDS.reserve(
            f"{self.options.client_id_prefix}-{hashlib.sha256(seed.encode()).hexdigest()[:12]}"
        )
        try:
            listener = MqttListener(self, stage, topic, qos, client_id)
        except BaseException:
            _CLIENT_IDS.release(client_id)
            raise
        listener.start()
        return listener

    # -- reading ---------------------------------------------------------------------------------------
    def fetch(self, request: FetchRequest) -> FetchResult:
        """Decode what the poller captured on the stage's channel (``request.captured``) into records."""
        if request.captured is None:
            note = (
                "MQTT keeps no history: an mqtt stage reads what trackcheck heard while its run waited, and "
                "nothing was captured for this read"
            )
            return FetchResult([], notes=[note], scanned=0)
        return to_records(request.captured, request, MqttRead.of(request.stage), self, self.options.max_message_bytes)

    def publish(self, destination: Destination, payloads: Sequence[bytes], key: str | None = None) -> None:
        """Publish each payload to ``destination.topic`` at ``destination.qos`` (1 by default) and wait until
        the broker acknowledged it (QoS 1/2) or it was sent (QoS 0). MQTT messages have no key: ``key`` is
        not sent."""
        topic = destination.topic
        if not topic:
            raise self.error(SourceQueryError, "publishing to mqtt needs a 'topic'", None, permanent=True)
        problem = topic_problem(topic, wildcards=False)
        if problem is not None:
            raise self.error(SourceQueryError, problem, None, permanent=True)
        qos = 1 if destination.qos is None else destination.qos
        with self._lock:
            if self._publisher is not None and not self._publisher.client.is_connected():
                self._publisher.stop()
                self._publisher = None
            if self._publisher is None:
                publisher = _Publisher(self, f"{self.options.client_id_prefix}-pub-{uuid.uuid4().hex[:8]}")
                publisher.connect()
                self._publisher = publisher
            self._publisher.send(topic, payloads, qos)


class _ClientIds:
    """The client ids this process's listeners hold. Two listeners on equal channels (runs of two versions
    of a plan) derive the same id; a broker lets one client per id connect, so the second gets ``-2``. Both
    subscribe to the same topic, so whichever session each finds after a restart holds the same messages."""

    def __init__(self) -> None:
        self._held: set[str] = set()
        self._lock = threading.Lock()

    def reserve(self, base: str) -> str:
        with self._lock:
            candidate, n = base, 1
            while candidate in self._held:
                n += 1
                candidate = f"{base}-{n}"
            self._held.add(candidate)
            return candidate

    def release(self, client_id: str) -> None:
        with self._lock:
            self._held.discard(client_id)


_CLIENT_IDS = _ClientIds()


def _driver(source: Source) -> ModuleType:
    try:
        import paho.mqtt.client as mqtt
    except ImportError as exc:
        raise missing_driver("mqtt", "paho.mqtt", source.name, exc) from exc
    return mqtt


class _Connection:
    """One paho client (MQTT 5, its network loop in a thread) connected to the source's broker; the CONNACK
    is waited for and judged. Never reconnects by itself: its owner decides (a listener reports the loss)."""

    def __init__(
        self, source: MqttSource, stage: StageSpec | None, client_id: str, *, persistent: bool, manual_ack: bool
    ) -> None:
        mqtt = _driver(source)
        self.source = source
        self.stage = stage
        self.client_id = client_id
        self.persistent = persistent
        self.endpoint = _endpoint(source.options.url)
        client: Client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            reconnect_on_failure=False,
            manual_ack=manual_ack,
        )
        if self.endpoint.username is not None:
            client.username_pw_set(self.endpoint.username, self.endpoint.password)
        if self.endpoint.tls:
            client.tls_set()  # the system's CA certificates, the host name checked
        client.connect_timeout = source.options.connect_timeout
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        self.client = client
        self._connack = threading.Event()
        self._refusal: ReasonCode | None = None
        self._early_close: ReasonCode | None = None
        self._closing = False

    @property
    def where(self) -> str:
        return f"the broker at {self.endpoint.host}:{self.endpoint.port}"

    def connect(self, *, clean_start: bool | None = None, expiry: int | None = None) -> None:
        """Connect and wait for the CONNACK; SourceError (the client stopped) if it does not come or refuses."""
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        options = self.source.options
        if expiry is None:
            expiry = int(options.session_expiry.total_seconds()) if self.persistent else 0
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = expiry
        properties.ReceiveMaximum = RECEIVE_MAXIMUM
        start = not self.persistent if clean_start is None else clean_start
        try:
            self.client.connect(
                self.endpoint.host, self.endpoint.port, KEEPALIVE, clean_start=start, properties=properties
            )
        except ssl.SSLCertVerificationError as exc:
            message = f"{self.where} has a TLS certificate that is not trusted"
            raise self._error(SourceConnectError, message, exc, permanent=True) from exc
        except (OSError, ValueError) as exc:  # refused, unreachable, no such host, TLS handshake failed
            raise self._error(SourceConnectError, f"could not connect to {self.where}", exc) from exc
        self.client.loop_start()
        if not self._connack.wait(options.connect_timeout):
            self.stop()
            raise self._error(SourceTimeoutError, f"{self.where} did not answer within {options.connect_timeout:g}s")
        if self._early_close is not None:
            self.stop()
            message = f"{self.where} closed the connection before accepting it ({self._early_close})"
            raise self._error(SourceConnectError, message)
        refusal = self._refusal
        if refusal is not None:
            self.stop()
            hint = " (check the user and password of the source's url)" if refusal.value in CREDENTIAL_REFUSALS else ""
            message = f"{self.where} refused the connection: {refusal}{hint}"
            raise self._error(SourceConnectError, message, permanent=refusal.value in PERMANENT_REFUSALS)

    def stop(self, properties: Properties | None = None) -> None:
        """Disconnect (``properties``: of the DISCONNECT packet) and end the network thread."""
        self._closing = True
        self.client.disconnect(properties=properties)
        self.client.loop_stop()

    def _error(
        self, kind: type[SourceError], message: str, cause: BaseException | None = None, *, permanent: bool = False
    ) -> SourceError:
        return self.source.error(kind, message, self.stage, cause, permanent=permanent)

    # -- paho callbacks (its network thread) ------------------------------------------------------------
    def _on_connect(
        self, client: Client, userdata: Any, flags: ConnectFlags, reason: ReasonCode, properties: Properties | None
    ) -> None:
        if reason.is_failure:
            self._refusal = reason
        self._connack.set()

    def _on_disconnect(
        self, client: Client, userdata: Any, flags: DisconnectFlags, reason: ReasonCode, properties: Properties | None
    ) -> None:
        if not self._connack.is_set():
            self._early_close = reason
            self._connack.set()
        elif not self._closing:
            self.lost(reason)

    def lost(self, reason: ReasonCode) -> None:
        """The broker or the network ended an accepted connection."""


class MqttListener(_Connection, Listener):
    """One subscription, with what it heard buffered until the poller drains it."""

    def __init__(self, source: MqttSource, stage: StageSpec, topic: str, qos: int, client_id: str) -> None:
        super().__init__(source, stage, client_id, persistent=qos > 0, manual_ack=qos > 0)
        self.topic = topic
        self.qos = qos
        self.durable = qos > 0
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self._lock = threading.Lock()
        self._buffer: deque[tuple[int, int, Message]] = deque()
        #: QoS 1 messages handed out by ``drain``, acknowledged by ``commit``
        self._pending: list[int] = []
        self._lost: SourceError | None = None
        self._suback = threading.Event()
        self._granted: ReasonCode | None = None
        self._closed = False

    def start(self) -> None:
        """Connect and subscribe (see ``MqttSource.listen``); on failure nothing is left running."""
        from paho.mqtt.client import MQTTErrorCode
        from paho.mqtt.subscribeoptions import SubscribeOptions

        try:
            self.connect()
            options = SubscribeOptions(
                qos=self.qos,
                retainAsPublished=True,  # an event published with retain while listening says so (_retain)
                retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND,  # not what was retained before
            )
            result, _ = self.client.subscribe(self.topic, options=options)
            if result != MQTTErrorCode.MQTT_ERR_SUCCESS:
                raise self._error(SourceConnectError, f"could not subscribe to {self.topic!r}: {result.name}")
            seconds = self.source.options.read_timeout
            if not self._suback.wait(seconds):
                raise self._error(SourceTimeoutError, f"{self.where} did not answer SUBSCRIBE within {seconds:g}s")
            if self._lost is not None:
                raise self._lost
            granted = self._granted
            assert granted is not None
            if granted.is_failure:
                message = f"{self.where} refused the subscription to topic {self.topic!r}: {granted}"
                raise self._error(SourceQueryError, message, permanent=granted.value not in TRANSIENT_SUBACK)
            self.durable = granted.value > 0  # a broker may grant less QoS than asked (max_qos)
        except BaseException:
            self.close(remove=False)
            raise

    def drain(self, limit: int) -> list[Message]:
        """Buffered messages, oldest first; once the buffer is empty after the connection was lost, the
        SourceError saying why (the poller then closes this listener and listens again)."""
        with self._lock:
            taken = [self._buffer.popleft() for _ in range(min(limit, len(self._buffer)))]
            self._pending.extend(mid for mid, qos, _ in taken if qos == 1)
            if not taken and self._lost is not None:
                raise self._lost
        return [message for _, _, message in taken]

    def commit(self) -> None:
        """Acknowledge the QoS 1 messages drained so far: the broker forgets them only now."""
        with self._lock:
            mids, self._pending = self._pending, []
        for mid in mids:
            self.client.ack(mid, 1)  # lost if disconnected: the broker delivers the message again

    def close(self, *, remove: bool) -> None:
        """Disconnect; ``remove`` also ends the persistent session, so the broker stops queuing for it.
        Undrained and uncommitted QoS 1 messages stay with the broker unless the session is removed."""
        if self._closed:
            return
        self._closed = True
        try:
            if remove and self.persistent:
                self._remove_session()
            else:
                self.stop()
        finally:
            _CLIENT_IDS.release(self.client_id)

    def _remove_session(self) -> None:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        if self.client.is_connected():
            ending = Properties(PacketTypes.DISCONNECT)
            ending.SessionExpiryInterval = 0  # MQTT 5: the broker discards the session on this DISCONNECT
            self.stop(ending)
            return
        self.stop()
        # the connection is gone: a clean start with no expiry replaces the session, and ends with it
        cleaner = _Connection(self.source, self.stage, self.client_id, persistent=False, manual_ack=False)
        try:
            cleaner.connect(clean_start=True, expiry=0)
        except SourceError as exc:
            log.warning(
                "could not remove the MQTT session %s (the broker drops it after session_expiry): %s",
                self.client_id,
                exc,
            )
            return
        cleaner.stop()

    # -- paho callbacks (its network thread) ------------------------------------------------------------
    def _on_message(self, client: Client, userdata: Any, message: MQTTMessage) -> None:
        at = datetime.now(UTC)
        try:
            topic = message.topic
        except UnicodeDecodeError:  # a broker should refuse it; read it anyway
            topic = message._topic.decode("utf-8", errors="replace")
        headers: dict[str, str] = {}
        for name, value in getattr(message.properties, "UserProperty", None) or []:
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        meta = {
            "_topic": topic,
            "_timestamp": timestamp(at),
            "_headers": headers,
            "_key": None,
            "_retain": bool(message.retain),
        }
        if message.qos == 2 and self.persistent:
            client.ack(message.mid, 2)  # the broker let it go at PUBREC: holding PUBCOMP keeps nothing safe
        with self._lock:
            self._buffer.append((message.mid, message.qos, Message(bytes(message.payload), meta, at)))

    def _on_subscribe(
        self, client: Client, userdata: Any, mid: int, reasons: list[ReasonCode], properties: Properties | None
    ) -> None:
        self._granted = reasons[0]
        self._suback.set()

    def lost(self, reason: ReasonCode) -> None:
        if reason.value == SESSION_TAKEN_OVER:
            message = (
                f"another client connected to {self.where} with this listener's client id {self.client_id!r} "
                "and took its session over (another trackcheck with the same client_id_prefix?)"
            )
            error = self._error(SourceConnectError, message, permanent=True)
        else:
            kept = (
                "the broker keeps the session meanwhile"
                if self.durable
                else "what is published until trackcheck listens again is not heard (qos 0 keeps no session)"
            )
            message = f"lost the connection to {self.where} ({reason}); {kept}"
            error = self._error(SourceConnectError, message, permanent=reason.value in PERMANENT_REFUSALS)
        with self._lock:
            self._lost = error
            if self.durable:  # unacknowledged: the broker delivers them again to the session
                self._buffer = deque(item for item in self._buffer if item[1] != 1)
        self._suback.set()


class _Publisher(_Connection):
    """A clean-session client that publishes for ``emit:``; reused while connected."""

    def __init__(self, source: MqttSource, client_id: str) -> None:
        super().__init__(source, None, client_id, persistent=False, manual_ack=False)
        self.client.on_publish = self._on_publish
        self._refused: dict[int, ReasonCode] = {}
        self._gone: ReasonCode | None = None

    def send(self, topic: str, payloads: Sequence[bytes], qos: int) -> None:
        seconds = self.source.options.read_timeout
        try:
            sent = [self.client.publish(topic, payload, qos=qos) for payload in payloads]
        except ValueError as exc:  # a payload larger than MQTT allows
            raise self._error(SourceQueryError, f"could not publish to {topic!r}", exc, permanent=True) from exc
        deadline = time.monotonic() + seconds
        for info in sent:
            while not info.is_published():
                if self._gone is not None:
                    raise self._error(SourceConnectError, f"lost the connection to {self.where} ({self._gone})")
                if time.monotonic() > deadline:
                    message = f"{self.where} did not acknowledge a message to {topic!r} within {seconds:g}s"
                    raise self._error(SourceTimeoutError, message)
                try:
                    info.wait_for_publish(0.1)
                except (RuntimeError, ValueError) as exc:
                    raise self._error(SourceConnectError, f"could not publish to {topic!r}", exc) from exc
            refusal = self._refused.pop(info.mid, None)
            if refusal is not None:
                message = f"{self.where} refused to publish to topic {topic!r}: {refusal}"
                raise self._error(SourceQueryError, message, permanent=refusal.value != 0x97)

    def _on_publish(
        self, client: Client, userdata: Any, mid: int, reason: ReasonCode, properties: Properties | None
    ) -> None:
        if reason.is_failure:
            self._refused[mid] = reason

    def lost(self, reason: ReasonCode) -> None:
        self._gone = reason


__all__ = ["MqttListener", "MqttOptions", "MqttSource", "topic_problem"]
