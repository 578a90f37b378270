"""The ``kafka`` source: the messages of a topic, read without taking anything from the application.

A stage names a ``topic`` (which may hold ``{param}``) and where to start: ``from: run_start`` (the default),
``earliest`` or a duration back from the run's start (``-10m``). Each message is decoded by
``bus.to_records`` (``format: json`` or ``text``, ``records``, ``select``, ``where``) and carries the bus's
fields ``_key``, ``_partition``, ``_offset``, ``_timestamp``, ``_headers`` and ``_topic``.

Non-destructive by construction: the consumer ``assign()``s partitions at offsets it looked up itself
(``offsets_for_times``); it never ``subscribe()``s, so it never joins a consumer group, and it never commits
(``enable.auto.commit`` and ``enable.auto.offset.store`` off). The client insists on a ``group.id``: each
reader gets a unique ``trackcheck-reader-<uuid>`` that no broker ever sees a join or a commit for. It never
creates a topic either (``allow.auto.create.topics`` off).

One reader per (source, topic), shared by every run and stage reading that topic. It keeps the messages
it read (per partition: the offsets it holds, up to where the next read continues) and answers each fetch
from that cache after reading only what is new since the last one, up to the high watermarks taken when the
fetch began (so a fetch always ends). A fetch that starts before what the cache covers reads the gap. Per
stage decoding, the reader keeps an index from the stage's first ``where`` field to the offsets holding it,
so that a poll decodes the messages of the runs it is for, not the whole topic again; messages that could
not be decoded are in every answer (their count is the stage's ``unparsed``). What a poll costs does not
grow with the number of runs: one read from the broker per batch, of the messages new since the last.

The cache is bounded twice: messages older than the earliest start any fetch asked for within the last
``CACHE_IDLE`` seconds are dropped (when that frees at least half a partition, so that indexes are rebuilt
rarely), a topic nobody fetched for that long is dropped whole, and at most ``cache_messages`` are kept per
topic (the oldest go first; a poll that needs them reads them again, and says so in a note).

Errors: a broker that cannot be reached is a transient SourceConnectError naming the bootstrap servers; a
topic that does not exist is transient (pipelines often create a topic with its first message), refused
credentials or TLS are permanent, and no progress within ``read_timeout`` while reading is a
SourceTimeoutError. ``sasl_password`` never appears in a message.
"""

from __future__ import annotations

import heapq
import logging
import re
import threading
import time
import uuid
from array import array
from bisect import bisect_left
from collections import Counter, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice, repeat
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from trackcheck.compare.values import canonical
from trackcheck.errors import SourceConnectError, SourceError, SourceQueryError, SourceTimeoutError
from trackcheck.plan.model import ReadSpec
from trackcheck.plan.templates import param_names, render
from trackcheck.sources import missing_driver
from trackcheck.sources.base import Destination, FetchRequest, FetchResult, Message, Source, SourceOptions
from trackcheck.sources.bus import BusOptions, HistoryRead, from_millis, read_from, timestamp, to_records

if TYPE_CHECKING:
    from confluent_kafka import Consumer, KafkaError, Producer

    from trackcheck.plan.model import StageSpec

#: seconds a topic's cache (and a start some fetch asked for) is kept without a fetch asking for it
CACHE_IDLE = 600.0
#: messages taken from the client per call while reading
CONSUME_BATCH = 5_000
#: "from the start of the log" as a cache bound and a read start (below any real timestamp)
EARLIEST = -(2**63)
#: Kafka's rule for topic names
TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
#: broker or client errors that the same read meets every time: credentials, TLS, missing permissions
_PERMANENT_CODES = frozenset(
    {"_AUTHENTICATION", "SASL_AUTHENTICATION_FAILED", "_SSL", "TOPIC_AUTHORIZATION_FAILED",
     "CLUSTER_AUTHORIZATION_FAILED", "GROUP_AUTHORIZATION_FAILED", "TOPIC_EXCEPTION", "_INVALID_ARG",
     "UNSUPPORTED_SASL_MECHANISM", "ILLEGAL_SASL_STATE", "MSG_SIZE_TOO_LARGE", "INVALID_CONFIG"}
)  # fmt: skip
#: the client's log line for a connection that was made, then got no answer while being set up
_SETUP_TIMEOUT = re.compile(r"timed out in state (?!CONNECT\b)[A-Z_]+")
_UNKNOWN_TOPIC = frozenset({"UNKNOWN_TOPIC_OR_PART", "_UNKNOWN_TOPIC", "_UNKNOWN_PARTITION"})


class KafkaOptions(BusOptions):
    """``type: kafka``: the bootstrap servers, optional SASL/TLS, and how many messages a topic's cache holds."""

    #: ``host:port`` entries, as a YAML list or one comma-separated string
    bootstrap: list[str]
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    #: a PEM file of the CA certificates that sign the brokers' (the system's store otherwise)
    ssl_ca_location: str | None = None
    #: the most messages kept per topic between polls (about 80 bytes each, plus the payload and the key)
    cache_messages: int = Field(default=1_000_000, gt=0)

    @field_validator("bootstrap", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.split(",")
        if isinstance(value, list):
            value = [v.strip() if isinstance(v, str) else v for v in value]
            if not value or any(not v for v in value):
                raise ValueError("bootstrap: give host:port entries, e.g. [broker-1:9092, broker-2:9092]")
            for entry in value:
                if isinstance(entry, str) and _host_port(entry) is None:
                    raise ValueError(f"bootstrap: {entry!r} is not host:port")
        return value

    @field_validator("security_protocol", "sasl_mechanism", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _sasl(self) -> KafkaOptions:
        sasl = self.security_protocol.startswith("SASL_")
        given = [k for k in ("sasl_mechanism", "sasl_username", "sasl_password") if getattr(self, k) is not None]
        if given and not sasl:
            raise ValueError(f"{given[0]} needs security_protocol SASL_PLAINTEXT or SASL_SSL")
        if sasl and (self.sasl_username is None or self.sasl_password is None):
            raise ValueError(f"security_protocol {self.security_protocol} needs sasl_username and sasl_password")
        if self.ssl_ca_location is not None and not self.security_protocol.endswith("SSL"):
            raise ValueError("ssl_ca_location needs security_protocol SSL or SASL_SSL")
        return self


class KafkaRead(HistoryRead):
    """What a ``kafka`` stage reads: a ``topic`` (it may hold ``{param}``), from ``from``."""

    places: ClassVar[tuple[str, ...]] = ("topic",)

    topic: str | None = None


class KafkaSource(Source):
    """Reads a stage's topic from its start instant, through one cached reader per topic."""

    type_name: ClassVar[str] = "kafka"
    options_model: ClassVar[type[SourceOptions]] = KafkaOptions
    read_model: ClassVar[type[ReadSpec]] = KafkaRead

    options: KafkaOptions

    def __init__(self, name: str, options: SourceOptions) -> None:
        super().__init__(name, options)
        self._lock = threading.Lock()
        self._readers: dict[str, _TopicReader] = {}
        self._producer: Producer | None = None
        #: messages fetched from the broker by every reader of this source (the benchmark and tests read it)
        self.messages_read = 0

    @classmethod
    def check_stage(cls, stage: StageSpec) -> str | None:
        foreign = super().check_stage(stage)
        if foreign is not None:
            return foreign
        topic = KafkaRead.of(stage).topic
        if not topic:
            return "a kafka stage needs 'topic' (the topic to read)"
        if not param_names(topic) and not TOPIC_NAME.match(topic):
            return f"topic {topic!r} is not a Kafka topic name (letters, digits, . _ -; at most 249)"
        return None

    def hosts(self) -> list[str]:
        return [found[0] for entry in self.options.bootstrap if (found := _host_port(entry))]

    # -- lifecycle -------------------------------------------------------------------------------------
    def open(self) -> None:
        """Only checks that the driver is installed: readers connect when a topic is first fetched."""
        try:
            import confluent_kafka  # noqa: F401
        except ImportError as exc:
            raise missing_driver("kafka", "confluent_kafka", self.name, exc) from exc

    def close(self) -> None:
        with self._lock:
            readers, self._readers = list(self._readers.values()), {}
            producer, self._producer = self._producer, None
        for reader in readers:
            with reader.lock:
                reader.close()
        if producer is not None:
            producer.flush(self.options.connect_timeout)

    # -- the contract ----------------------------------------------------------------------------------
    def fetch(self, request: FetchRequest) -> FetchResult:
        """The stage's messages from ``read_from(request)`` up to the end of the topic when the fetch began,
        decoded and filtered by ``request.filters``.

        A broker that cannot be reached is a transient SourceConnectError, a topic that does not exist a
        transient SourceQueryError, refused credentials a permanent SourceConnectError, no progress within
        ``read_timeout`` a SourceTimeoutError.
        """
        stage = request.stage
        spec = KafkaRead.of(stage)
        topic = str(render(spec.topic or "", request.params))
        if not TOPIC_NAME.match(topic):
            message = f"topic {topic!r} is not a Kafka topic name (letters, digits, . _ -; at most 249)"
            raise self.error(SourceQueryError, message, stage, permanent=True)
        self.open()
        instant = read_from(request, spec)
        start = EARLIEST if instant is None else int(instant.timestamp() * 1000)
        reader = self._reader(topic)
        with reader.lock:
            read = reader.refresh(start, stage)
            with self._lock:
                self.messages_read += read
            result = reader.answer(start, request)
            reader.prune(self.options.cache_messages)
            if reader.covers_after(start):
                result.notes.append(
                    f"topic {topic!r}: more messages since the start than cache_messages "
                    f"({self.options.cache_messages:,}) keeps: the next poll reads the oldest again"
                )
        return result

    def publish(self, destination: Destination, payloads: Sequence[bytes], key: str | None = None) -> None:
        """Produce each payload to ``destination.topic`` and wait until the broker acknowledged all of them."""
        if not destination.topic or not TOPIC_NAME.match(destination.topic):
            raise self.error(SourceQueryError, f"cannot publish to topic {destination.topic!r}", None, permanent=True)
        self.open()
        from confluent_kafka import KafkaException

        topic = destination.topic
        failures: list[KafkaError] = []

        def delivered(error: KafkaError | None, _message: Any) -> None:
            if error is not None:
                failures.append(error)

        seconds = self.options.connect_timeout + self.options.read_timeout
        try:
            producer = self._producer_client(seconds)
            encoded = key.encode() if key is not None else None
            for payload in payloads:
                while True:
                    try:
                        producer.produce(topic, payload, key=encoded, on_delivery=delivered)
                        break
                    except BufferError:  # the client's queue is full: let it send
                        producer.poll(0.1)
            remaining = producer.flush(seconds)
        except KafkaException as exc:
            raise self._translate(exc.args[0], f"publishing to topic {topic!r}", None, exc) from exc
        if failures:
            error = failures[0]
            what = f"{len(failures)} of {len(payloads)} message(s) to topic {topic!r} were not delivered"
            raise self._translate(error, what, None, None)
        if remaining:
            what = f"{remaining} message(s) to topic {topic!r} not acknowledged within {seconds:g}s"
            raise self.error(SourceTimeoutError, what, None)

    # -- clients ---------------------------------------------------------------------------------------
    def _reader(self, topic: str) -> _TopicReader:
        """The topic's reader; readers of other topics that nobody fetched for ``CACHE_IDLE`` are closed."""
        now = time.monotonic()
        with self._lock:
            for other, idle in list(self._readers.items()):
                if other != topic and now - idle.used > CACHE_IDLE and idle.lock.acquire(blocking=False):
                    try:
                        idle.close()
                    finally:
                        idle.lock.release()
                    del self._readers[other]
            reader = self._readers.get(topic)
            if reader is None:
                reader = self._readers[topic] = _TopicReader(self, topic)
            reader.used = now
        return reader

    def client_config(self) -> dict[str, Any]:
        """What consumers and the producer share: servers, security, timeouts, quiet logging."""
        options = self.options
        config: dict[str, Any] = {
            "bootstrap.servers": ",".join(options.bootstrap),
            "client.id": "trackcheck",
            "security.protocol": options.security_protocol,
            "socket.connection.setup.timeout.ms": max(1000, int(options.connect_timeout * 1000)),
            # the client wants a request's timeout at least 1 s above how long a fetch may wait for data
            "socket.timeout.ms": max(1_100, int(options.read_timeout * 1000)),
            "fetch.wait.max.ms": 100,
            "reconnect.backoff.ms": 500,
            "reconnect.backoff.max.ms": 5_000,
            "logger": _ClientLog(logging.getLogger(f"{__name__}.librdkafka")),
        }
        optional = {
            "sasl.mechanism": options.sasl_mechanism or ("PLAIN" if options.sasl_username is not None else None),
            "sasl.username": options.sasl_username,
            "sasl.password": options.sasl_password,
            "ssl.ca.location": options.ssl_ca_location,
        }
        config.update({k: v for k, v in optional.items() if v is not None})
        return config

    def _producer_client(self, seconds: float) -> Producer:
        with self._lock:
            if self._producer is None:
                from confluent_kafka import Producer

                self._producer = Producer(
                    {**self.client_config(), "message.timeout.ms": int(seconds * 1000), "linger.ms": 5}
                )
            return self._producer

    def _translate(
        self, error: KafkaError, what: str, stage: StageSpec | None, cause: BaseException | None
    ) -> SourceError:
        """A client error as the SourceError a user can act on (permanent for credentials, TLS, permissions)."""
        name = error.name()
        text = f"{what}: {name}: {error.str()}"
        if name in _PERMANENT_CODES or error.fatal():
            kind: type[SourceError] = SourceConnectError if name in ("_AUTHENTICATION", "_SSL") else SourceQueryError
            if name in ("_AUTHENTICATION", "SASL_AUTHENTICATION_FAILED"):
                text = f"{what}: the broker refused the credentials ({name}: {error.str()})"
            return self.error(kind, text, stage, cause, permanent=True)
        if name in ("_TIMED_OUT", "REQUEST_TIMED_OUT", "_MSG_TIMED_OUT"):
            return self.error(SourceTimeoutError, text, stage, cause)
        if name in ("_TRANSPORT", "_ALL_BROKERS_DOWN", "_RESOLVE", "BROKER_NOT_AVAILABLE"):
            text = f"{what}: could not connect to bootstrap {','.join(self.options.bootstrap)} ({name}: {error.str()})"
            return self.error(SourceConnectError, text, stage, cause)
        return self.error(SourceQueryError, text, stage, cause)


@dataclass
class _Partition:
    """What a reader holds of one partition: every message from the first offset it holds to ``next``.

    ``covers``: the earliest read start (ms) answered from here: a read from any later instant needs no
    message before the first one held (Kafka positions a read by the first offset whose timestamp is at
    or after the instant, so ``peaks``, the running maximum of the timestamps, finds it by bisection).
    """

    covers: int
    next: int
    offsets: array[int] = field(default_factory=lambda: array("q"))
    times: array[int] = field(default_factory=lambda: array("q"))
    peaks: array[int] = field(default_factory=lambda: array("q"))
    payloads: list[bytes] = field(default_factory=list)
    keys: list[bytes | None] = field(default_factory=list)
    #: by offset, only for messages that have headers
    headers: dict[int, list[tuple[str, bytes | None]]] = field(default_factory=dict)

    @property
    def first(self) -> int:
        return self.offsets[0] if self.offsets else self.next

    def start_index(self, start: int) -> int:
        return 0 if start == EARLIEST else bisect_left(self.peaks, start)

    def append(self, batch: _Batch) -> None:
        peak = self.peaks[-1] if self.peaks else EARLIEST
        for ms in batch.times:
            peak = max(peak, ms)
            self.peaks.append(peak)
        self.offsets.extend(batch.offsets)
        self.times.extend(batch.times)
        self.payloads.extend(batch.payloads)
        self.keys.extend(batch.keys)
        self.headers.update(batch.headers)

    def prepend(self, batch: _Batch) -> None:
        self.offsets = batch.offsets + self.offsets
        self.times = batch.times + self.times
        self.payloads = batch.payloads + self.payloads
        self.keys = batch.keys + self.keys
        self.headers.update(batch.headers)
        self._repeak()

    def drop_before(self, index: int) -> None:
        """Forget the ``index`` oldest messages; reads from before the newest of them are no longer covered."""
        self.covers = max(self.covers, self.peaks[index - 1] + 1)
        for offset in self.offsets[:index]:
            self.headers.pop(offset, None)
        del self.offsets[:index], self.times[:index], self.payloads[:index], self.keys[:index]
        self._repeak()

    def _repeak(self) -> None:
        peaks, peak = array("q"), EARLIEST
        for ms in self.times:
            peak = max(peak, ms)
            peaks.append(peak)
        self.peaks = peaks


@dataclass
class _Batch:
    """Messages of one partition as one read returned them, and the offset the next read continues from."""

    reached: int
    offsets: array[int] = field(default_factory=lambda: array("q"))
    times: array[int] = field(default_factory=lambda: array("q"))
    payloads: list[bytes] = field(default_factory=list)
    keys: list[bytes | None] = field(default_factory=list)
    headers: dict[int, list[tuple[str, bytes | None]]] = field(default_factory=dict)


@dataclass
class _Index:
    """For one way of decoding (format, records, select) and one ``where`` field, in one partition: which
    offsets hold a record with each value of the field (canonical), and which could not be decoded. A value
    held once (a test id, most often) maps to its offset, saving an array per value."""

    upto: int
    values: dict[Any, int | array[int]] = field(default_factory=dict)
    unparsed: list[int] = field(default_factory=list)


class _TopicReader:
    """The one reader of a topic for a source: its consumer, what it read, and the decoding indexes.

    Used under ``lock`` only (a consumer's assignment is one state; fetches of the topic wait for each other
    and then find what the previous one read in the cache).
    """

    def __init__(self, source: KafkaSource, topic: str) -> None:
        self.source = source
        self.topic = topic
        self.lock = threading.Lock()
        self.used = time.monotonic()
        self.partitions: dict[int, _Partition] = {}
        self.indexes: dict[tuple[Any, ...], dict[int, _Index]] = {}
        self.index_used: dict[tuple[Any, ...], float] = {}
        #: (when, start) of recent fetches: what the cache must keep
        self.asked: deque[tuple[float, int]] = deque()
        self._consumer: Consumer | None = None
        #: set by ``close``: a fetch that got this reader just before the source closed must not reconnect
        self.closed = False
        self._errors: deque[KafkaError] = deque(maxlen=20)
        self._log = _ClientLog(logging.getLogger(f"{__name__}.librdkafka"))

    # -- reading ---------------------------------------------------------------------------------------
    def refresh(self, start: int, stage: StageSpec) -> int:
        """Read from the broker what a fetch from ``start`` needs and the cache lacks; returns how many
        messages were read."""
        self.asked.append((time.monotonic(), start))
        self._errors.clear()
        self._log.timed_out = 0
        consumer = self._client(stage)
        ids = self._partition_ids(consumer, stage)
        highs = self._offsets(consumer, dict.fromkeys(ids, -1), stage)  # -1: the end of each partition
        for pid in ids:
            held = self.partitions.get(pid)
            if held is not None and highs[pid] < held.next:  # the topic was deleted and created again
                self._forget(pid)
        uncovered = [pid for pid in ids if pid not in self.partitions or self.partitions[pid].covers > start]
        targets = self._offsets(consumer, dict.fromkeys(uncovered, -2 if start == EARLIEST else start), stage)
        gaps: dict[int, tuple[int, int]] = {}
        for pid in uncovered:
            target = highs[pid] if targets[pid] < 0 else targets[pid]  # -1: nothing at or after start
            held = self.partitions.get(pid)
            if held is None:
                self.partitions[pid] = _Partition(covers=start, next=target)
            elif target < held.first:
                gaps[pid] = (target, held.first)
        read = 0
        for pid, batch in self._read(consumer, gaps, stage).items():
            self.partitions[pid].prepend(batch)
            self._drop_indexes(pid)
            read += len(batch.offsets)
        for pid in uncovered:
            self.partitions[pid].covers = min(self.partitions[pid].covers, start)
        tails = {pid: (self.partitions[pid].next, highs[pid]) for pid in ids}
        for pid, batch in self._read(consumer, tails, stage).items():
            self.partitions[pid].append(batch)
            self.partitions[pid].next = max(self.partitions[pid].next, batch.reached)
            read += len(batch.offsets)
        return read

    def _partition_ids(self, consumer: Consumer, stage: StageSpec) -> list[int]:
        """The topic's partitions; waits up to ``connect_timeout`` for the broker, and stops early when it
        refused the credentials."""
        from confluent_kafka import KafkaException

        source = self.source
        # a little past the connection setup timeout, so that a setup that timed out has been reported
        deadline = time.monotonic() + source.options.connect_timeout + 0.5
        while True:
            try:
                metadata = consumer.list_topics(self.topic, timeout=min(0.5, source.options.connect_timeout))
                break
            except KafkaException as exc:
                self._serve_errors(consumer)
                refused = next((e for e in self._errors if e.name() in _PERMANENT_CODES), None)
                if refused is not None:
                    raise source._translate(refused, f"reading topic {self.topic!r}", stage, None) from exc
                if time.monotonic() >= deadline:
                    error: KafkaError = self._errors[-1] if self._errors else exc.args[0]
                    if self._log.timed_out or exc.args[0].name() == "_TIMED_OUT":
                        # connected, then no answer: not the same as a refused connection
                        seconds = source.options.connect_timeout
                        bootstrap = ",".join(source.options.bootstrap)
                        message = f"reading topic {self.topic!r}: the broker at {bootstrap} did not answer"
                        message += f" within {seconds:g}s"
                        raise source.error(SourceTimeoutError, message, stage) from exc
                    raise source._translate(error, f"reading topic {self.topic!r}", stage, None) from exc
        found = metadata.topics.get(self.topic)
        problem = found.error if found is not None else None
        if found is None or (problem is not None and problem.name() in _UNKNOWN_TOPIC):
            message = (
                f"topic {self.topic!r} does not exist (yet): waiting for the pipeline to create it "
                "(trackcheck never creates topics)"
            )
            raise source.error(SourceQueryError, message, stage)
        if problem is not None:
            raise source._translate(problem, f"reading topic {self.topic!r}", stage, None)
        return sorted(found.partitions)

    def _offsets(self, consumer: Consumer, wanted: Mapping[int, int], stage: StageSpec) -> dict[int, int]:
        """``offsets_for_times`` for each partition: the first offset at or after a timestamp (ms), or
        -1 for the end and -2 for the start of the log."""
        if not wanted:
            return {}
        from confluent_kafka import KafkaException, TopicPartition

        asked = [TopicPartition(self.topic, pid, ms) for pid, ms in wanted.items()]
        try:
            answers = consumer.offsets_for_times(asked, timeout=self.source.options.read_timeout)
        except KafkaException as exc:
            raise self.source._translate(
                exc.args[0], f"looking up offsets of topic {self.topic!r}", stage, exc
            ) from exc
        found: dict[int, int] = {}
        for answer in answers:
            if answer.error is not None:
                what = f"looking up offsets of topic {self.topic!r}"
                raise self.source._translate(answer.error, what, stage, None)
            found[answer.partition] = answer.offset
        return found

    def _read(self, consumer: Consumer, ranges: Mapping[int, tuple[int, int]], stage: StageSpec) -> dict[int, _Batch]:
        """Read offsets [from, to) of each partition. Fails with SourceTimeoutError when nothing arrives for
        ``read_timeout`` seconds while some partition is not read to its end."""
        from confluent_kafka import KafkaError, TopicPartition

        pending = {pid: bounds for pid, bounds in ranges.items() if bounds[0] < bounds[1]}
        batches = {pid: _Batch(reached=bounds[0]) for pid, bounds in pending.items()}
        if not pending:
            return {}
        timeout = self.source.options.read_timeout
        assigned = [TopicPartition(self.topic, pid, bounds[0]) for pid, bounds in pending.items()]
        consumer.assign(assigned)
        try:
            last = time.monotonic()
            while pending:
                messages = consumer.consume(CONSUME_BATCH, timeout=min(0.2, timeout))
                if not messages:
                    if time.monotonic() - last > timeout:
                        left = ", ".join(str(pid) for pid in sorted(pending))
                        detail = f"; last client error: {self._errors[-1].str()}" if self._errors else ""
                        what = f"topic {self.topic!r}: no message within {timeout:g}s from partition(s) {left}"
                        raise self.source.error(SourceTimeoutError, what + detail, stage)
                    self._serve_errors(consumer)
                    continue
                last = time.monotonic()
                finished: list[int] = []
                for message in messages:
                    pid = message.partition()
                    offset = message.offset()
                    if pid is None or offset is None or pid not in pending:
                        continue
                    batch, end = batches[pid], pending[pid][1]
                    error = message.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            batch.reached = max(batch.reached, min(offset, end))
                            finished.append(pid)
                        elif error.fatal() or error.name() in _PERMANENT_CODES | _UNKNOWN_TOPIC:
                            raise self.source._translate(error, f"reading topic {self.topic!r}", stage, None)
                        else:
                            self._errors.append(error)
                        continue
                    if offset >= end:
                        batch.reached = end
                        finished.append(pid)
                        continue
                    _add(batch, message, offset)
                    if batch.reached >= end:
                        finished.append(pid)
                for pid in dict.fromkeys(finished):
                    pending.pop(pid, None)
                if finished:
                    consumer.pause([TopicPartition(self.topic, pid) for pid in finished])
        finally:
            consumer.resume(assigned)  # a pause outlives the assignment: the next read would get nothing
            consumer.unassign()
        return batches

    # -- answering -------------------------------------------------------------------------------------
    def answer(self, start: int, request: FetchRequest) -> FetchResult:
        """The fetch's records from the cache: through the index of its first ``where`` field when it has
        one, else by decoding every message from ``start``."""
        firsts = {pid: part.start_index(start) for pid, part in self.partitions.items()}
        window = sum(len(part.offsets) - firsts[pid] for pid, part in self.partitions.items())
        options = self.source.options
        if not request.filters:
            chosen = [(pid, i) for pid, part in self.partitions.items() for i in range(firsts[pid], len(part.offsets))]
        else:
            chosen = self._candidates(request, firsts)
        chosen.sort(key=lambda at: (self.partitions[at[0]].times[at[1]], at))
        messages = [self._message(pid, i) for pid, i in chosen]
        read = KafkaRead.of(request.stage)
        return to_records(messages, request, read, self.source, options.max_message_bytes, scanned=window)

    def _candidates(self, request: FetchRequest, firsts: Mapping[int, int]) -> list[tuple[int, int]]:
        stage = request.stage
        name = sorted(request.filters)[0]
        read = KafkaRead.of(stage)
        signature = (read.format, read.records, tuple(sorted((stage.select or {}).items())), name)
        self.index_used[signature] = time.monotonic()
        by_partition = self.indexes.setdefault(signature, {})
        wanted = {canonical(value) for value in request.filters[name]}
        plain = FetchRequest(plan=request.plan, stage=stage, params=request.params, since=request.since)
        chosen: list[tuple[int, int]] = []
        for pid, part in self.partitions.items():
            index = by_partition.get(pid)
            if index is None:
                index = by_partition[pid] = _Index(upto=part.first)
            self._extend(index, pid, part, plain, name)
            offsets = set(index.unparsed)
            for value in wanted:
                found = index.values.get(value)
                if found is not None:
                    offsets.update((found,) if isinstance(found, int) else found)
            lowest = part.offsets[firsts[pid]] if firsts[pid] < len(part.offsets) else part.next
            for offset in offsets:
                if offset >= lowest:
                    chosen.append((pid, bisect_left(part.offsets, offset)))
        return chosen

    def _extend(self, index: _Index, pid: int, part: _Partition, plain: FetchRequest, name: str) -> None:
        """Index the messages held since the index was last extended (decoding each once per signature)."""
        options = self.source.options
        for i in range(bisect_left(part.offsets, index.upto), len(part.offsets)):
            message = self._message(pid, i)
            decoded = to_records([message], plain, KafkaRead.of(plain.stage), self.source, options.max_message_bytes)
            offset = part.offsets[i]
            if decoded.unparsed:
                index.unparsed.append(offset)
            for value in {canonical(record.get(name)) for record in decoded.records}:
                found = index.values.get(value)
                if found is None:
                    index.values[value] = offset
                elif isinstance(found, int):
                    index.values[value] = array("q", (found, offset))
                else:
                    found.append(offset)
        index.upto = part.next

    def _message(self, pid: int, i: int) -> Message:
        part = self.partitions[pid]
        at = from_millis(part.times[i])
        key = part.keys[i]
        offset = part.offsets[i]
        headers = part.headers.get(offset) or []
        meta = {
            "_key": key.decode("utf-8", errors="replace") if key is not None else None,
            "_partition": pid,
            "_offset": offset,
            "_timestamp": timestamp(at),
            "_headers": {n: v.decode("utf-8", errors="replace") if v is not None else None for n, v in headers},
            "_topic": self.topic,
        }
        return Message(part.payloads[i], meta, at)

    # -- bounding the cache ----------------------------------------------------------------------------
    def prune(self, cap: int) -> None:
        """Drop what no recent fetch needs (in steps of at least half a partition), then keep at most
        ``cap`` messages, and forget decoding indexes nobody used for ``CACHE_IDLE``."""
        now = time.monotonic()
        while self.asked and now - self.asked[0][0] > CACHE_IDLE:
            self.asked.popleft()
        keep_from = min((start for _, start in self.asked), default=EARLIEST)
        for pid, part in self.partitions.items():
            index = part.start_index(keep_from)
            if index and index * 2 >= len(part.offsets):
                part.drop_before(index)
                self._drop_indexes(pid)
        extra = sum(len(part.offsets) for part in self.partitions.values()) - cap
        if extra > 0:  # the oldest messages of the topic go, whichever partition holds them
            by_age = heapq.merge(*(zip(part.peaks, repeat(pid)) for pid, part in self.partitions.items()))
            for pid, count in Counter(pid for _, pid in islice(by_age, extra)).items():
                self.partitions[pid].drop_before(count)
                self._drop_indexes(pid)
        for signature in [s for s, used in self.index_used.items() if now - used > CACHE_IDLE]:
            self.indexes.pop(signature, None)
            self.index_used.pop(signature, None)

    def covers_after(self, start: int) -> bool:
        """Whether some partition no longer holds all a fetch from ``start`` needs (the cap cut it)."""
        return any(part.covers > start for part in self.partitions.values())

    def _forget(self, pid: int) -> None:
        self.partitions.pop(pid, None)
        self._drop_indexes(pid)

    def _drop_indexes(self, pid: int) -> None:
        for by_partition in self.indexes.values():
            by_partition.pop(pid, None)

    # -- the client ------------------------------------------------------------------------------------
    def _client(self, stage: StageSpec) -> Consumer:
        if self.closed:
            raise self.source.error(SourceConnectError, "the source was closed while a poll waited for it", stage)
        if self._consumer is None:
            from confluent_kafka import Consumer, KafkaException

            config = {
                **self.source.client_config(),
                # required by the client; never used to join a group or commit: see the module docstring
                "group.id": f"trackcheck-reader-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",
                "allow.auto.create.topics": False,
                "isolation.level": "read_committed",  # what the application's consumers see by default
                "queued.max.messages.kbytes": 16_384,
                "error_cb": self._errors.append,
                "logger": self._log,
            }
            try:
                self._consumer = Consumer(config)
            except (KafkaException, ValueError) as exc:
                message = "the source's options are refused by the Kafka client"
                raise self.source.error(SourceConnectError, message, stage, exc, permanent=True) from exc
        return self._consumer

    def _serve_errors(self, consumer: Consumer) -> None:
        """Let the client call ``error_cb`` with what it noticed (it does so only inside poll calls); the
        consumer holds no assignment here, so this takes no message."""
        if not consumer.assignment():
            consumer.poll(0)

    def close(self) -> None:
        self.closed = True
        consumer, self._consumer = self._consumer, None
        self.partitions.clear()
        self.indexes.clear()
        if consumer is not None:
            consumer.close()  # nothing to commit (auto commit is off) and no group to leave


class _ClientLog(logging.LoggerAdapter[logging.Logger]):
    """The client's own log lines, at DEBUG: while a broker is down it logs every reconnection attempt, and
    the stage's error already says what a user needs. Counts what timed out after the TCP connection was
    made (a request, facility REQTMOUT, or the connection's setup past CONNECT: the version query, TLS,
    SASL): the sign that a broker accepted the connection but did not answer."""

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__(logger, {})
        self.timed_out = 0

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if args and (args[0] == "REQTMOUT" or _SETUP_TIMEOUT.search(str(args[-1]))):
            self.timed_out += 1
        self.logger.log(logging.DEBUG, msg, *args, **kwargs)


def _add(batch: _Batch, message: Any, offset: int) -> None:
    kind, ms = message.timestamp()
    batch.offsets.append(offset)
    batch.times.append(ms if kind else int(time.time() * 1000))  # no broker timestamp: when it was read
    batch.payloads.append(message.value() or b"")
    batch.keys.append(message.key())
    headers = message.headers()
    if headers:
        batch.headers[offset] = list(_header_pairs(headers))
    batch.reached = offset + 1


def _header_pairs(headers: Any) -> Iterable[tuple[str, bytes | None]]:
    items = headers.items() if isinstance(headers, dict) else headers
    for name, value in items:
        yield str(name), value if value is None or isinstance(value, bytes) else str(value).encode()


def _host_port(entry: str) -> tuple[str, int | None] | None:
    """``host:port`` (``[v6]:port``, an optional ``PROTOCOL://`` prefix) as (host, port); None if malformed."""
    text = entry.split("://", 1)[-1]
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::(\d{1,5}))?|([^\s:/\[\]@,]+)(?::(\d{1,5}))?", text)
    if match is None:
        return None
    host = match.group(1) or match.group(3)
    port = match.group(2) or match.group(4)
    if port is not None and not 0 < int(port) < 65536:
        return None
    return host, int(port) if port else None


__all__ = ["KafkaOptions", "KafkaSource"]
