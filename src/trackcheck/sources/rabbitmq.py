"""The ``rabbitmq`` source: a stream queue read from an offset, or an exchange heard through trackcheck's own
queue. Nothing the application reads is ever consumed, acknowledged or requeued.

- ``stream: NAME`` (a stream queue, RabbitMQ 3.9+, over AMQP 0-9-1): a stream keeps its messages whoever
  reads them, so a consumer attached at an offset (``x-stream-offset``) and acknowledging what it gets takes
  nothing away from the application's consumers. A fetch first learns where the stream ends now (a consumer
  at ``last`` gets the last chunk at once), then reads up to that offset and stops. A queue that is not a
  stream is refused by the broker when a consumer asks for ``x-stream-offset`` (406), before it delivers.
- ``exchange: NAME`` (+ ``routing_key``): an exchange keeps nothing, so the source *listens* (``listens``):
  while a run needs the channel, trackcheck binds a queue of its own, ``trackcheck.<hash>``, to the
  exchange with that routing key; the engine drains it into its buffer and acknowledges what it stored.
  The queue is durable and outlives trackcheck's connection (``x-expires``: removed after a day unused),
  so a restart of trackcheck loses nothing the broker buffered meanwhile. ``fetch`` decodes what the
  engine captured.

Why a stream read ends by closing its channel, not by cancelling its consumer: pika's ``basic_cancel``
rejects the deliveries still in flight, and RabbitMQ before 3.13 answers a reject on a stream by closing
the connection (NOT_IMPLEMENTED; pika issue #1389, rabbitmq-server #9644). A channel closed as a whole
drops them unacknowledged, which a stream does not mind.

Errors: an unreachable broker is transient; refused credentials, a vhost or a queue the user may not use,
and a ``stream`` naming a queue that is not a stream are permanent; a stream or an exchange that does not
exist (404) is transient, since the pipeline under test often declares it when it first publishes.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

from pydantic import field_validator

from trackcheck.errors import SourceConnectError, SourceQueryError, SourceTimeoutError
from trackcheck.plan.model import ReadSpec
from trackcheck.plan.templates import render
from trackcheck.sources import missing_driver, network
from trackcheck.sources.base import Destination, FetchRequest, FetchResult, Listener, Message, Source, SourceOptions
from trackcheck.sources.bus import BusOptions, HistoryRead, from_millis, read_from, timestamp, to_records
from trackcheck.sources.network import LOCAL

if TYPE_CHECKING:
    import pika
    import pika.frame
    import pika.spec
    from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection

    from trackcheck.plan.model import StageSpec

#: deliveries a stream consumer may hold unacknowledged (streams require a prefetch)
PREFETCH = 1000
#: deliveries trackcheck's own queue may hold between two commits (the engine drains 5000 at a time)
LISTEN_PREFETCH = 5000
#: acknowledge a stream's deliveries in batches of this many (the broker then sends more)
ACK_EVERY = PREFETCH // 4
#: how long the ``last`` probe waits for the stream's last chunk; silence means an empty stream for now
PROBE_WAIT = 0.5
#: how long, at least, a consumer attached at a run's start waits for a first delivery before concluding
#: that nothing was published since (4x what the probe took, if more: a slow broker is given its time)
LOCATE_WAIT = 0.5
#: per stream, the newest messages kept between polls (count and payload bytes), and the streams kept
CACHE_MESSAGES = 100_000
CACHE_BYTES = 64 * 1024 * 1024
CACHE_STREAMS = 16
#: start instants whose first offset is remembered, per stream
STARTS_KEPT = 64
#: trackcheck's own queue of an exchange stage: removed by the broker after this long unused, and holds at
#: most this many messages while trackcheck is away (the oldest go first)
QUEUE_EXPIRES_MS = 24 * 3600 * 1000
QUEUE_MAX_LENGTH = 1_000_000
#: broker reply codes that the same operation gets every time: access refused, not allowed, precondition
PERMANENT_CODES = frozenset({403, 406, 530})
_STEP = 0.05


class RabbitmqOptions(BusOptions):
    """``type: rabbitmq``: ``url`` is ``amqp://user:password@host:port/vhost`` (``amqps://`` for TLS; the
    default vhost ``/`` is written ``%2F``, or left out)."""

    url: str

    @field_validator("url")
    @classmethod
    def _amqp(cls, value: str) -> str:
        if urlsplit(value).scheme not in ("amqp", "amqps"):
            raise ValueError("url must be an amqp:// or amqps:// URL")
        return value


@dataclass
class _Cached:
    """What was read of one stream: every message from offset ``low`` to ``next`` (excluded), oldest first."""

    low: int
    next: int
    messages: deque[tuple[int, Message]] = field(default_factory=deque)
    size: int = 0
    #: the first offset at or after each start instant read from (None: the stream's first message)
    starts: OrderedDict[datetime | None, int] = field(default_factory=OrderedDict)

    def add(self, got: list[tuple[int, Message]], *, older: bool = False) -> None:
        if older:
            self.messages.extendleft(reversed(got))
        else:
            self.messages.extend(got)
        self.size += sum(len(message.payload) for _, message in got)

    def trim(self) -> None:
        """Keep the newest messages within CACHE_MESSAGES and CACHE_BYTES."""
        while self.messages and (len(self.messages) > CACHE_MESSAGES or self.size > CACHE_BYTES):
            offset, message = self.messages.popleft()
            self.size -= len(message.payload)
            self.low = offset + 1


class RabbitmqRead(HistoryRead):
    """What a ``rabbitmq`` stage reads: a ``stream`` queue (from ``from``), or what is published to an
    ``exchange`` with a ``routing_key``; each may hold ``{param}``."""

    places: ClassVar[tuple[str, ...]] = ("stream", "exchange", "routing_key")

    stream: str | None = None
    exchange: str | None = None
    routing_key: str | None = None


class RabbitmqSource(Source):
    """Reads stream queues at an offset and listens to exchanges through a queue of its own."""

    type_name: ClassVar[str] = "rabbitmq"
    options_model: ClassVar[type[SourceOptions]] = RabbitmqOptions
    read_model: ClassVar[type[ReadSpec]] = RabbitmqRead
    #: exchange stages listen; a stream stage gets a listener that hears nothing (see ``listen``)
    listens: ClassVar[bool] = True

    options: RabbitmqOptions

    def __init__(self, name: str, options: SourceOptions) -> None:
        super().__init__(name, options)
        self._connection: BlockingConnection | None = None
        self._lock = threading.Lock()
        self._streams: OrderedDict[str, _Cached] = OrderedDict()

    @classmethod
    def check_stage(cls, stage: StageSpec) -> str | None:
        foreign = super().check_stage(stage)
        if foreign is not None:
            return foreign
        read = RabbitmqRead.of(stage)
        if read.stream is None and read.exchange is None:
            return "a rabbitmq stage needs 'stream' (a stream queue) or 'exchange' (with 'routing_key')"
        if read.stream is not None and read.exchange is not None:
            return "set 'stream' or 'exchange' on a rabbitmq stage, not both"
        if read.routing_key is not None and read.exchange is None:
            return "'routing_key' applies to an 'exchange' stage"
        if read.exchange is not None and read.from_ is not None:
            return "'from' applies to a stream: an exchange keeps no history, it is heard from the run's start"
        return None

    def hosts(self) -> list[str]:
        try:
            host = urlsplit(self.options.url).hostname
        except ValueError:
            return [LOCAL]
        return [host] if host else [LOCAL]

    # -- lifecycle -------------------------------------------------------------------------------------
    def open(self) -> None:
        """Check that the driver is installed; the broker is connected to at the first read."""
        try:
            import pika  # noqa: F401
        except ImportError as exc:
            raise missing_driver("rabbitmq", "pika", self.name, exc) from exc

    def close(self) -> None:
        with self._lock:
            connection, self._connection = self._connection, None
            self._streams.clear()
        if connection is not None and connection.is_open:
            with suppress(Exception):  # a connection the broker already dropped: nothing to release
                connection.close()

    # -- reading -----------------------------------------------------------------------------------------
    def fetch(self, request: FetchRequest) -> FetchResult:
        """A stream stage: the stream's messages from ``read_from(request)`` up to its end now. An exchange
        stage: what the engine captured (``request.captured``), decoded."""
        stage = request.stage
        read = RabbitmqRead.of(stage)
        if read.exchange is not None:
            if request.captured is None:
                raise self.error(
                    SourceQueryError,
                    "an exchange stage reads what trackcheck heard on it, and nothing was captured for this read",
                    stage,
                    permanent=True,
                )
            result = to_records(request.captured, request, read, self, self.options.max_message_bytes)
        else:
            self.open()
            stream = str(render(read.stream, request.params))
            start = read_from(request, read)
            # AMQP timestamps are whole seconds: the broker starts at the second the run started in
            anchor = None if start is None else start.replace(microsecond=0)
            with self._lock, self._translating(stage, f"stream {stream!r}"):
                messages = self._stream_messages(self._connect(stage), stream, anchor, stage)
            result = to_records(messages, request, read, self, self.options.max_message_bytes)
        return result

    def _stream_messages(
        self, connection: BlockingConnection, stream: str, anchor: datetime | None, stage: StageSpec
    ) -> list[Message]:
        """Every message of ``stream`` from ``anchor`` up to the stream's end when called, through the
        stream's cache: a poll reads from the broker only what is newer than the previous poll's end."""
        began = time.monotonic()
        tail = self._consume(
            connection, stream, "last", stage, until=None, wait=min(PROBE_WAIT, self.options.read_timeout)
        )
        if not tail:
            return []  # an empty stream, for now
        end = tail[-1][0]
        settle = min(self.options.read_timeout, max(LOCATE_WAIT, 4 * (time.monotonic() - began)))
        start: str | datetime = "first" if anchor is None else anchor
        cache = self._streams.get(stream)
        if cache is not None and end < cache.next - 1:
            cache = None  # offsets went back: the stream was deleted and declared again
        if cache is None:
            got = self._consume(connection, stream, start, stage, until=end, wait=settle)
            first = got[0][0] if got else end + 1
            cache = _Cached(low=first, next=got[-1][0] + 1 if got else end + 1)
            cache.add(got)
            older: list[tuple[int, Message]] = []
        else:
            known = cache.starts.get(anchor)
            if known is not None and known >= cache.low:
                first, older = known, []
            else:  # where the stream reaches ``anchor``: the first delivery of a consumer attached there
                located = self._consume(connection, stream, start, stage, until=cache.low - 1, wait=settle)
                first = located[0][0] if located else end + 1
                older = [item for item in located if item[0] < cache.low]
            if cache.next <= end:
                got = self._consume(connection, stream, cache.next, stage, until=end, wait=self.options.read_timeout)
                if not got:
                    raise self.error(
                        SourceTimeoutError,
                        f"stream {stream!r} did not deliver offsets {cache.next} to {end} within "
                        f"{self.options.read_timeout:g}s",
                        stage,
                    )
                cache.add(got)
                cache.next = got[-1][0] + 1
        found = [message for offset, message in older] + [m for offset, m in cache.messages if offset >= first]
        if older:
            cache.add(older, older=True)
            cache.low = older[0][0]
        cache.trim()
        cache.starts[anchor] = first
        cache.starts.move_to_end(anchor)
        while len(cache.starts) > STARTS_KEPT:
            cache.starts.popitem(last=False)
        self._streams[stream] = cache
        self._streams.move_to_end(stream)
        while len(self._streams) > CACHE_STREAMS:
            self._streams.popitem(last=False)
        return found

    def _consume(
        self,
        connection: BlockingConnection,
        stream: str,
        offset: int | str | datetime,
        stage: StageSpec,
        *,
        until: int | None,
        wait: float,
    ) -> list[tuple[int, Message]]:
        """(offset, message) pairs of ``stream`` from ``offset``: nothing if no delivery came within ``wait``
        seconds; else every delivery up to offset ``until``, or (``until`` None) those that came with the
        first. A stall of ``read_timeout`` in between is a SourceTimeoutError."""
        got: list[tuple[int, Message]] = []
        state = {"unacked": 0, "stopped": False, "cancelled": False}

        def deliver(
            channel: BlockingChannel,
            method: pika.spec.Basic.Deliver,
            properties: pika.spec.BasicProperties,
            body: bytes,
        ) -> None:
            if state["stopped"]:
                return
            headers = dict(properties.headers or {})
            position = int(headers.pop("x-stream-offset", -1))
            got.append((position, _message(method.routing_key, properties, headers, body, position)))
            state["unacked"] += 1
            if state["unacked"] >= ACK_EVERY:  # credit for the next deliveries; a stream removes nothing
                channel.basic_ack(method.delivery_tag, multiple=True)
                state["unacked"] = 0

        channel = connection.channel()
        try:
            channel.add_on_cancel_callback(lambda _frame: state.update(cancelled=True))
            channel.basic_qos(prefetch_count=PREFETCH)
            channel.basic_consume(stream, deliver, arguments={"x-stream-offset": offset})
            started = last = time.monotonic()
            while True:
                before = len(got)
                connection.process_data_events(time_limit=_STEP)
                now = time.monotonic()
                if len(got) > before:
                    last = now
                if state["cancelled"]:
                    raise self.error(SourceQueryError, f"stream {stream!r} was deleted while being read", stage)
                if not got:
                    if now - started >= wait:
                        return []
                elif until is None:
                    connection.process_data_events(time_limit=0)  # the rest of the first chunk
                    return got
                elif got[-1][0] >= until:
                    return got
                elif now - last >= self.options.read_timeout:
                    raise self.error(
                        SourceTimeoutError,
                        f"stream {stream!r} stopped delivering at offset {got[-1][0]}, before its end ({until})",
                        stage,
                    )
        finally:
            state["stopped"] = True
            _abandon(connection, channel)

    # -- listening ---------------------------------------------------------------------------------------
    def channel(self, stage: StageSpec, params: Mapping[str, Any]) -> str:
        read = RabbitmqRead.of(stage)
        if read.exchange is None:
            return f"stream {render(read.stream, params)}"
        return f"exchange {render(read.exchange, params)} routing_key {render(read.routing_key or '', params)}"

    @classmethod
    def listens_to(cls, stage: StageSpec) -> bool:
        """An exchange keeps nothing: its stages are read from what trackcheck's queue heard; a stream is
        read back by ``fetch``."""
        return RabbitmqRead.of(stage).exchange is not None

    def listen(self, stage: StageSpec, params: Mapping[str, Any], identity: str | None = None) -> Listener:
        """Bind trackcheck's own queue (declared if need be) to the stage's exchange with its routing key."""
        read = RabbitmqRead.of(stage)
        if read.exchange is None:
            raise ValueError("a stream stage is read back by fetch; only exchange stages listen")
        self.open()
        exchange = str(render(read.exchange, params))
        routing_key = str(render(read.routing_key or "", params))
        queue = self.queue_name(stage, params, identity)
        connection: BlockingConnection | None = None
        with self._translating(stage, f"exchange {exchange!r}"):
            try:
                connection = self._new_connection()
                channel = connection.channel()
                channel.exchange_declare(exchange, passive=True)  # never declares the application's exchange
                arguments = {"x-expires": QUEUE_EXPIRES_MS, "x-max-length": QUEUE_MAX_LENGTH}
                channel.queue_declare(queue, durable=True, exclusive=False, auto_delete=False, arguments=arguments)
                channel.queue_bind(queue, exchange, routing_key=routing_key)
                return _QueueListener(self, stage, connection, channel, queue)
            except BaseException:
                if connection is not None and connection.is_open:
                    connection.close()
                raise

    def queue_name(self, stage: StageSpec, params: Mapping[str, Any], identity: str | None = None) -> str:
        """trackcheck's own queue for an exchange stage: the same for the same ``identity`` (the poller's,
        kept in the state database: a restart finds what the broker kept), else one per source and channel."""
        seed = identity if identity is not None else f"{self.name}\x00{self.channel(stage, params)}"
        return "trackcheck." + hashlib.sha256(seed.encode()).hexdigest()[:16]

    # -- publishing --------------------------------------------------------------------------------------
    def publish(self, destination: Destination, payloads: Sequence[bytes], key: str | None = None) -> None:
        """Publish to a stream (through the default exchange) or to an exchange with a routing key, as
        persistent messages whose ``message_id`` is ``key``; publisher confirms say each was taken."""
        import pika.exceptions

        if destination.stream:
            exchange, routing_key, what = "", destination.stream, f"stream {destination.stream!r}"
        elif destination.exchange is not None:
            exchange, routing_key = destination.exchange, destination.routing_key or ""
            what = f"exchange {exchange!r}"
        else:
            raise self.error(SourceQueryError, "publishing needs a 'stream' or an 'exchange'", None, permanent=True)
        self.open()
        properties = pika.BasicProperties(message_id=key, delivery_mode=2, timestamp=int(time.time()))
        with self._lock, self._translating(None, what):
            channel = self._connect(None).channel()
            try:
                channel.confirm_delivery()
                for payload in payloads:
                    try:
                        channel.basic_publish(exchange, routing_key, payload, properties, mandatory=True)
                    except pika.exceptions.UnroutableError as exc:
                        raise self.error(SourceQueryError, f"no queue is bound to receive it on {what}", None) from exc
                    except pika.exceptions.NackError as exc:
                        raise self.error(
                            SourceQueryError, f"the broker did not take a message for {what}", None
                        ) from exc
            finally:
                if channel.is_open:
                    channel.close()

    # -- connections and errors --------------------------------------------------------------------------
    def _connect(self, stage: StageSpec | None) -> BlockingConnection:
        """The source's connection (for streams and publishing), opened again if the broker dropped it."""
        import pika.exceptions

        if self._connection is not None and self._connection.is_open:
            try:
                self._connection.process_data_events(time_limit=0)  # notices a connection dropped while idle
                return self._connection
            except pika.exceptions.AMQPError:
                pass
        self._connection = None
        self._connection = self._new_connection()
        return self._connection

    def _new_connection(self) -> BlockingConnection:
        import pika

        if self.network is not None and not self.network.allow_private:
            problem = network.check_hosts(self, allow_private=False)
            if problem:
                raise self.error(SourceConnectError, problem, None, permanent=True)
        try:
            parameters = pika.URLParameters(self.options.url)
        except ValueError as exc:
            raise self.error(SourceConnectError, "the source url is not a valid amqp:// URL", None, exc) from exc
        parameters.connection_attempts = 1
        parameters.socket_timeout = self.options.connect_timeout
        parameters.stack_timeout = self.options.connect_timeout
        parameters.blocked_connection_timeout = self.options.read_timeout
        parameters.client_properties = {"connection_name": f"trackcheck source {self.name}"}
        return pika.BlockingConnection(parameters)

    @contextmanager
    def _translating(self, stage: StageSpec | None, what: str) -> Iterator[None]:
        """pika's errors as SourceErrors, permanent when the broker will refuse the same operation again."""
        import pika.exceptions as amqp

        try:
            yield
        except (amqp.ProbableAuthenticationError, amqp.AuthenticationError) as exc:
            raise self.error(
                SourceConnectError, "the broker refused the credentials", stage, exc, permanent=True
            ) from exc
        except amqp.ProbableAccessDeniedError as exc:
            message = "the broker refused access to the url's vhost"
            raise self.error(SourceConnectError, message, stage, exc, permanent=True) from exc
        except amqp.ChannelClosedByBroker as exc:
            if exc.reply_code == 404:
                raise self.error(SourceQueryError, f"{what} does not exist (yet)", stage, exc) from exc
            permanent = exc.reply_code in PERMANENT_CODES
            raise self.error(
                SourceQueryError, f"the broker refused to read {what}", stage, exc, permanent=permanent
            ) from exc
        except amqp.ConnectionClosedByBroker as exc:
            permanent = exc.reply_code in PERMANENT_CODES
            raise self.error(
                SourceConnectError, "the broker closed the connection", stage, exc, permanent=permanent
            ) from exc
        except amqp.AMQPConnectionError as exc:
            raise self.error(SourceConnectError, "could not connect to the broker", stage, exc) from exc
        except amqp.AMQPError as exc:
            raise self.error(SourceQueryError, f"reading {what} failed", stage, exc) from exc


class _QueueListener(Listener):
    """trackcheck's own queue bound to an exchange, consumed with a prefetch (one round trip per message,
    as ``basic.get`` takes, would cap a distant broker at a few hundred messages a second). What ``drain``
    returns is acknowledged by ``commit`` only: a crash in between puts it back in the queue."""

    durable = True

    def __init__(
        self,
        source: RabbitmqSource,
        stage: StageSpec,
        connection: BlockingConnection,
        channel: BlockingChannel,
        queue: str,
    ) -> None:
        self.source = source
        self.stage = stage
        self.queue = queue
        self._connection = connection
        self._channel = channel
        self._heard: deque[tuple[int, Message]] = deque()
        self._taken: int | None = None
        self._cancelled = False
        channel.add_on_cancel_callback(self._on_cancel)
        channel.basic_qos(prefetch_count=LISTEN_PREFETCH)
        self._consumer = channel.basic_consume(queue, self._deliver)

    def _on_cancel(self, _frame: pika.frame.Method) -> None:
        self._cancelled = True

    def _deliver(
        self,
        channel: BlockingChannel,
        method: pika.spec.Basic.Deliver,
        properties: pika.spec.BasicProperties,
        body: bytes,
    ) -> None:
        headers = dict(properties.headers or {})
        self._heard.append((method.delivery_tag, _message(method.routing_key, properties, headers, body, None)))

    def drain(self, limit: int) -> list[Message]:
        with self.source._translating(self.stage, f"trackcheck's queue {self.queue!r}"):
            while len(self._heard) < limit:  # what the socket holds, without waiting for more
                before = len(self._heard)
                self._connection.process_data_events(time_limit=0)
                if len(self._heard) == before:
                    break
        if self._cancelled and not self._heard:  # someone deleted trackcheck's queue: listen again (declares it)
            raise self.source.error(SourceQueryError, f"trackcheck's queue {self.queue!r} was deleted", self.stage)
        taken: list[Message] = []
        while self._heard and len(taken) < limit:
            tag, message = self._heard.popleft()
            self._taken = tag
            taken.append(message)
        return taken

    def commit(self) -> None:
        if self._taken is not None:
            with self.source._translating(self.stage, f"trackcheck's queue {self.queue!r}"):
                self._channel.basic_ack(self._taken, multiple=True)
            self._taken = None

    def close(self, *, remove: bool) -> None:
        """Disconnect (what was not acknowledged goes back to the queue); ``remove`` deletes the queue."""
        try:
            if remove and self._channel.is_open:
                self._channel.basic_cancel(self._consumer)  # what it still held goes back, then is deleted
                self._channel.queue_delete(self.queue)
        finally:
            if self._connection.is_open:
                self._connection.close()


def _message(
    routing_key: str, properties: pika.spec.BasicProperties, headers: dict[str, Any], body: bytes, offset: int | None
) -> Message:
    """A delivery as a Message. RabbitMQ gives AMQP 0-9-1 consumers no broker timestamp: ``at`` is the
    publisher's ``timestamp`` property (whole seconds) if it set one, else when trackcheck received it."""
    at = datetime.now(UTC)
    if properties.timestamp:
        with suppress(OverflowError, ValueError):  # a publisher's nonsense: when it arrived will do
            at = from_millis(int(properties.timestamp) * 1000)
    meta: dict[str, Any] = {}
    if offset is not None:
        meta["_offset"] = offset
    meta.update(
        _timestamp=timestamp(at),
        _routing_key=routing_key,
        _headers={str(k): _text(v) for k, v in headers.items()},
        _key=properties.message_id,
    )
    return Message(body, meta, at)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _abandon(connection: BlockingConnection, channel: BlockingChannel) -> None:
    """Close a stream consumer's channel without pika's consumer cancellation (see the module docstring):
    through the channel pika wraps, which sends basic.cancel and channel.close and drops, never rejects,
    what still arrives."""
    import pika.exceptions

    if not channel.is_open or not connection.is_open:
        return
    try:
        channel._impl.close()
        deadline = time.monotonic() + 5
        while not channel.is_closed and connection.is_open and time.monotonic() < deadline:
            connection.process_data_events(time_limit=_STEP / 10)  # close-ok is no event that ends a wait
    except pika.exceptions.AMQPError:  # a connection gone: the next read opens another (``_connect``)
        pass


__all__ = ["RabbitmqOptions", "RabbitmqSource"]
