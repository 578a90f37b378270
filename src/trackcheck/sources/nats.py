"""The ``nats`` source: the messages a NATS JetStream stream holds, read without consuming any of them.

A stage names a ``subject`` (``{param}`` rendered, ``*`` and ``>`` wildcards allowed) and, optionally, the
``stream`` that stores it; without one, the stream whose subjects cover it is looked up at each fetch. A
fetch asks the stream for its last sequence and reads the subject's messages from the stage's ``from`` up
to there, so it always ends. How it reads depends on the stream's retention:

- **Limits** and **Interest**: an ordered ephemeral pull consumer (no durable name, AckPolicy none, memory
  storage, one replica, ``filter_subject`` = the subject, delivered from ``read_from(request)`` by start
  time, or from the first message for ``from: earliest``), deleted when the fetch ends, and removed by the
  server after ``CONSUMER_IDLE_SECONDS`` should trackcheck stop mid-fetch. Nothing is acknowledged and no
  durable consumer is created or bound, so the application's consumers (pending, delivered, ack floor)
  are untouched. On an Interest stream the short-lived consumer is interest while it exists: a message
  published then on a subject only it covers is kept until the consumer is deleted, then removed.
- **WorkQueue**: the server refuses a consumer without acknowledgements (10084) and a second consumer whose
  filter overlaps the application's (10100), and a consumer that got in first would take the messages meant
  for the application. So no consumer is created there: the messages are read one by one with the stream's
  get-message API (``next_by_subj``), which neither delivers nor removes anything.

What can be verified is what the stream still holds: Limits keeps messages until its limits drop them;
Interest removes a message once every consumer interested in it acknowledged it (and stores none published
while no consumer is interested); WorkQueue removes it once the application acknowledged it.

Cache: per (stream, subject) the source keeps a window of the messages it read (from the ``from`` instant
it was first asked for, up to a stream sequence), so a poll reads only the messages stored since the last
one. An earlier ``from``, a stream that was deleted and created again, or a window trimmed past the
instant asked for is read again from the server. At most ``CACHE_WINDOWS`` windows and ``CACHE_BYTES`` of
payloads per source (least recently used first, then the oldest messages of the window being read).

nats-py is asyncio-only while the engine calls ``fetch`` from its worker threads: each source object runs a
private event loop in its own thread, every call is a coroutine submitted to it with a timeout, and reads
of one (stream, subject) are serialised by a lock of that loop. Errors: an unreachable server or a timeout
is transient; refused credentials (authorization violation) or a permissions violation is permanent; a
stream that does not exist (yet) is transient, as applications commonly create their stream when they
start, possibly after the run was submitted.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar
from urllib.parse import unquote, urlsplit

from pydantic import field_validator, model_validator

from trackcheck.errors import SourceConnectError, SourceError, SourceQueryError, SourceTimeoutError
from trackcheck.plan.model import ReadSpec
from trackcheck.plan.templates import param_names, printable, render
from trackcheck.sources import missing_driver
from trackcheck.sources.base import Destination, FetchRequest, FetchResult, Message, Source, SourceOptions
from trackcheck.sources.bus import BusOptions, HistoryRead, read_from, timestamp, to_records

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.js import JetStreamContext

    from trackcheck.plan.model import StageSpec

T = TypeVar("T")

SCHEMES = frozenset({"nats", "tls"})
#: messages asked for per pull request
PULL_BATCH = 256
#: a fetch reads new messages for at most this many read timeouts; what it read is kept for the next poll
READ_ROUNDS = 6
#: (stream, subject) windows a source keeps, least recently used dropped first
CACHE_WINDOWS = 64
#: payload bytes a source keeps over all its windows
CACHE_BYTES = 64 * 1024 * 1024
#: an ephemeral consumer left behind (trackcheck stopped mid-fetch) is removed by the server after this long
CONSUMER_IDLE_SECONDS = 30.0
#: connections tried when the server resets one during the handshake (as it may when refusing credentials)
HANDSHAKE_ATTEMPTS = 5
#: JetStream's error code for "no message found" (the get-message API past the last match)
NO_MESSAGE_FOUND = 10037


class NatsOptions(BusOptions):
    """``type: nats``: ``url`` ``nats://[user:password@|token@]host:4222`` (or ``tls://``; the servers of
    one cluster separated by commas), the credentials either in it or as ``user``/``password`` or ``token``."""

    url: str
    user: str | None = None
    password: str | None = None
    token: str | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        servers = split_servers(value)
        for server in servers:
            try:
                parts = urlsplit(server)
                parts.port  # noqa: B018 - raises ValueError for a port that is not a number
            except ValueError:
                raise ValueError("url is not a nats:// URL (is the port a number?)") from None
            if parts.scheme not in SCHEMES or not parts.hostname:
                raise ValueError("url must be nats://host:port (or tls://host:port), several separated by commas")
        if not servers:
            raise ValueError("url names no server")
        return value

    @model_validator(mode="after")
    def _credentials(self) -> NatsOptions:
        if self.token and (self.user or self.password):
            raise ValueError("set 'token' or 'user' and 'password', not both")
        if self.password and not self.user:
            raise ValueError("'password' needs 'user'")
        return self


def split_servers(url: str) -> list[str]:
    return [part.strip() for part in url.split(",") if part.strip()]


def subject_problem(subject: str) -> str | None:
    """Why ``subject`` is not a NATS subject a stage can read (``*`` and ``>`` whole tokens, ``>`` last)."""
    if not subject or any(c.isspace() or not c.isprintable() for c in subject):
        return "is empty or holds white space"
    tokens = subject.split(".")
    if "" in tokens:
        return "has an empty token (a leading, trailing or doubled '.')"
    for index, part in enumerate(tokens):
        if part == ">" and index != len(tokens) - 1:
            return "has '>' before its last token"
        if part not in ("*", ">") and ("*" in part or ">" in part):
            return "has '*' or '>' inside a token: a wildcard is a whole token"
    return None


def subjects_overlap(one: str, other: str) -> bool:
    """Whether some subject matches both ``one`` and ``other`` (either may hold wildcards)."""
    left, right = one.split("."), other.split(".")
    for mine, theirs in zip(left, right, strict=False):
        if ">" in (mine, theirs):
            return True
        if mine != theirs and "*" not in (mine, theirs):
            return False
    return len(left) == len(right)


def stream_problem(name: str) -> str | None:
    """Why ``name`` cannot be a JetStream stream name, or None."""
    if not name or any(c.isspace() or not c.isprintable() or c in ".*>/\\" for c in name):
        return "is not a stream name (no white space, '.', '*', '>', '/' or '\\')"
    return None


@dataclass
class _Window:
    """What one (stream, subject) showed: every message of the subject stored from ``since`` (None: the
    stream's first) up to stream sequence ``last_seq``, of the stream created at ``created``."""

    since: datetime | None
    created: datetime | None
    last_seq: int = 0
    messages: list[Message] = field(default_factory=list)
    size: int = 0

    def covers(self, since: datetime | None) -> bool:
        return self.since is None or (since is not None and since >= self.since)

    def add(self, message: Message, seq: int) -> None:
        self.messages.append(message)
        self.size += len(message.payload)
        self.last_seq = seq


@dataclass(frozen=True)
class _Pass:
    """One pass reading the new messages of a window, up to stream sequence ``target`` (when the fetch
    began), until the loop's clock passes ``deadline``."""

    js: JetStreamContext
    stream: str
    subject: str
    window: _Window
    target: int
    deadline: float
    stage: StageSpec


@dataclass
class _Read:
    messages: list[Message]
    #: messages read from the server by this fetch (the others came from the cache)
    fetched: int


class NatsRead(HistoryRead):
    """What a ``nats`` stage reads: a ``subject`` (wildcards allowed), stored by ``stream`` if it names one;
    both may hold ``{param}``."""

    places: ClassVar[tuple[str, ...]] = ("stream", "subject")

    stream: str | None = None
    subject: str | None = None


class NatsSource(Source):
    """Reads the messages of a JetStream subject without consuming them (see the module docstring)."""

    type_name: ClassVar[str] = "nats"
    options_model: ClassVar[type[SourceOptions]] = NatsOptions
    read_model: ClassVar[type[ReadSpec]] = NatsRead

    options: NatsOptions

    def __init__(self, name: str, options: SourceOptions) -> None:
        super().__init__(name, options)
        self._guard = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        # used on the loop's thread only
        self._client: Client | None = None
        self._connecting: asyncio.Lock | None = None
        self._windows: OrderedDict[tuple[str, str], _Window] = OrderedDict()
        self._locks: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = weakref.WeakValueDictionary()
        # written by nats-py's error callback, read when an error is translated
        self._last_error: Exception | None = None
        self._denied: tuple[float, str] | None = None

    @classmethod
    def check_stage(cls, stage: StageSpec) -> str | None:
        foreign = super().check_stage(stage)
        if foreign is not None:
            return foreign
        read = NatsRead.of(stage)
        if not read.subject:
            return "a nats stage needs 'subject' (the subject its events are published on, e.g. events.{test_id})"
        for key, value, problem_of in (
            ("subject", read.subject, subject_problem),
            ("stream", read.stream, stream_problem),
        ):
            if value is not None:
                problem = problem_of(str(render(value, {name: "x" for name in param_names(value)})))
                if problem:
                    return f"'{key}: {printable(value)}' {problem}"
        return None

    def hosts(self) -> list[str]:
        found: list[str] = []
        for server in split_servers(self.options.url):
            host = urlsplit(server).hostname
            if host and host not in found:
                found.append(host)
        return found

    def secrets(self) -> list[str]:
        """The base's (passwords, ``token``...), and the user part of a server URL without a password: NATS
        reads it as a token (``nats://TOKEN@host``)."""
        found = super().secrets()
        for server in split_servers(self.options.url):
            parts = urlsplit(server)
            secret = parts.password if parts.password is not None else parts.username
            if secret:
                found.extend({secret, unquote(secret)})
        return found

    # -- lifecycle -------------------------------------------------------------------------------------
    def open(self) -> None:
        """Start the source's event loop thread; the connection is made at the first read."""
        with self._guard:
            if self._loop is not None:
                return
            try:
                import nats  # noqa: F401
            except ImportError as exc:
                raise missing_driver("nats", "nats", self.name, exc) from exc
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name=f"trackcheck-nats-{self.name}", daemon=True)
            thread.start()
            self._loop, self._thread = loop, thread

    def close(self) -> None:
        with self._guard:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        done = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
        with contextlib.suppress(Exception):
            done.result(timeout=self.options.connect_timeout)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=self.options.connect_timeout)
        if not thread.is_alive():
            loop.close()

    async def _shutdown(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.close()
        current = asyncio.current_task()
        others = [task for task in asyncio.all_tasks() if task is not current]  # reads still under way
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        self._windows.clear()
        self._connecting = None

    # -- the contract ----------------------------------------------------------------------------------
    def fetch(self, request: FetchRequest) -> FetchResult:
        """The subject's messages from ``read_from(request)`` on, as records with ``_subject``, ``_offset``
        (stream sequence), ``_timestamp`` and ``_headers``; those matching ``request.filters``.

        An unreachable server, a stream that does not exist (yet) or no answer in ``read_timeout`` is a
        transient SourceError; refused credentials or permissions, or a subject a parameter would widen, a
        permanent one.
        """
        stage = request.stage
        spec = NatsRead.of(stage)
        if not spec.subject:
            raise self.error(SourceQueryError, "the stage has no 'subject'", stage, permanent=True)
        subject = self._render(spec.subject, request.params, stage, "subject")
        stream = self._render(spec.stream, request.params, stage, "stream") if spec.stream else None
        budget = self._connect_budget() + (READ_ROUNDS + 2) * self.options.read_timeout
        read = self._call(self._read(stage, stream, subject, read_from(request, spec)), stage, budget)
        return to_records(read.messages, request, spec, self, self.options.max_message_bytes, scanned=read.fetched)

    def publish(self, destination: Destination, payloads: Sequence[bytes], key: str | None = None) -> None:
        """Publish each payload to ``destination.subject`` through JetStream and wait for every ack.

        ``destination.stream``, when set, is the stream the server must store them in. ``key`` is not sent:
        a NATS message has no key, its subject routes it.
        """
        subject = destination.subject or ""
        problem = subject_problem(subject)
        if problem is None and any(token in ("*", ">") for token in subject.split(".")):
            problem = "holds a wildcard"
        if problem:
            raise self.error(
                SourceQueryError,
                f"cannot publish to subject {printable(subject)!r}: it {problem}",
                None,
                permanent=True,
            )
        budget = self._connect_budget() + self.options.read_timeout + 1
        self._call(self._publish(subject, destination.stream, list(payloads)), None, budget)

    # -- rendering -------------------------------------------------------------------------------------
    def _render(self, template: str, params: Mapping[str, Any], stage: StageSpec, what: str) -> str:
        """``template`` with the run parameters; a value that would widen a subject (``*``, ``>``), split a
        stream name or hold white space is refused rather than read."""
        forbidden = "*>" if what == "subject" else "*>./\\"
        for name in sorted(param_names(template)):
            value = str(params.get(name, ""))
            if name in params and (not value or any(c.isspace() or c in forbidden for c in value)):
                shown = printable(value)
                message = f"run parameter {{{name}}} = {shown!r} cannot be part of a NATS {what}"
                raise self.error(SourceQueryError, message, stage, permanent=True)
        rendered = str(render(template, params))
        problem = subject_problem(rendered) if what == "subject" else stream_problem(rendered)
        if problem:
            raise self.error(SourceQueryError, f"{what} {printable(rendered)!r} {problem}", stage, permanent=True)
        return rendered

    # -- calls into the loop ---------------------------------------------------------------------------
    def _connect_budget(self) -> float:
        """How long connecting may take: nats-py tries each server twice."""
        return 2 * len(split_servers(self.options.url)) * self.options.connect_timeout + 1

    def _call(self, work: Coroutine[Any, Any, T], stage: StageSpec | None, seconds: float) -> T:
        """Run ``work`` on the source's loop and wait for it at most ``seconds``; nats-py's errors become
        SourceErrors."""
        self.open()
        with self._guard:
            loop = self._loop
        if loop is None:  # closed by another thread meanwhile
            work.close()
            raise self.error(SourceConnectError, "the source was closed while reading", stage)
        future = asyncio.run_coroutine_threadsafe(work, loop)
        try:
            return future.result(timeout=seconds)
        except SourceError:
            raise
        except Exception as exc:
            if not future.done():  # this wait ran out, not a request inside
                future.cancel()
                raise self.error(SourceTimeoutError, f"no answer within {seconds:g}s", stage, exc) from exc
            error = self._translate(exc, stage)
            if error is None:
                raise
            raise error from exc

    def _where(self) -> str:
        addresses = [urlsplit(server).netloc.rpartition("@")[2] for server in split_servers(self.options.url)]
        return ("nats server " if len(addresses) == 1 else "nats servers ") + ", ".join(addresses)

    def _translate(self, exc: Exception, stage: StageSpec | None) -> SourceError | None:
        """The SourceError for an error of nats-py, or None for one that is not (a bug: raised as is)."""
        from nats import errors
        from nats.js import errors as js_errors

        text = str(exc).lower()
        if isinstance(exc, errors.AuthorizationError) or "authorization violation" in text:
            message = f"{self._where()} refused the credentials (authorization violation)"
            return self.error(SourceConnectError, message, stage, exc, permanent=True)
        denied = self._denied
        if "permissions violation" in text or (
            isinstance(exc, TimeoutError) and denied and time.monotonic() - denied[0] < self.options.read_timeout + 1
        ):
            said = denied[1] if denied and "permissions violation" not in text else str(exc)
            message = f"the user may not use what this read needs ({said}): grant it in the server's authorization"
            return self.error(SourceQueryError, message, stage, permanent=True)
        if isinstance(exc, js_errors.ServiceUnavailableError | errors.NoRespondersError):
            message = "JetStream did not answer: is it enabled on the server, for this account?"
            return self.error(SourceQueryError, message, stage, exc)
        if isinstance(exc, js_errors.APIError):
            # 400/403: the request itself is wrong or forbidden; 404 (a stream deleted meanwhile), 408, 409 and
            # 5xx may pass at the next poll
            permanent = exc.code in (400, 403)
            return self.error(SourceQueryError, "JetStream refused the request", stage, exc, permanent=permanent)
        if isinstance(exc, TimeoutError):
            seconds = self.options.read_timeout
            return self.error(SourceTimeoutError, f"no answer within {seconds:g}s", stage, exc)
        if isinstance(exc, OSError | errors.Error):
            return self.error(SourceConnectError, f"lost the connection to {self._where()}", stage, exc)
        return None

    # -- on the loop -----------------------------------------------------------------------------------
    async def _on_error(self, exc: Exception) -> None:
        """nats-py reports here what it does not raise: why a connect attempt failed, and a permissions
        violation (the server drops the request, which then merely times out)."""
        self._last_error = exc
        if "permissions violation" in str(exc).lower():
            self._denied = (time.monotonic(), str(exc))

    async def _connection(self, stage: StageSpec | None) -> Client:
        """The source's connection, made (again) if there is none: nats-py's own reconnecting is off, so a
        server that went away is an error of this read and the next read connects anew."""
        from nats.aio.client import Client

        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            client = self._client
            if client is not None and client.is_connected:
                return client
            self._client = None
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.close()
            options = self.options
            attempt = 1
            probing = False
            while True:
                client = Client()
                self._last_error = None
                connect = client.connect(
                    servers=split_servers(options.url),
                    name="trackcheck",
                    connect_timeout=max(1, math.ceil(options.connect_timeout)),
                    allow_reconnect=False,
                    max_reconnect_attempts=1,  # nats-py's own loop: each server is tried twice, then it gives up
                    reconnect_time_wait=0,
                    error_cb=self._on_error,
                    user=options.user,
                    password=options.password,
                    token=options.token,
                    verbose=probing,
                )
                try:
                    await asyncio.wait_for(connect, self._connect_budget())
                except Exception as exc:
                    with contextlib.suppress(Exception):
                        await client.close()
                    cause = self._last_error or exc
                    if any("authorization violation" in str(said).lower() for said in (cause, exc)):
                        message = f"{self._where()} refused the credentials (authorization violation)"
                        raise self.error(SourceConnectError, message, stage, cause, permanent=True) from exc
                    if isinstance(cause, ConnectionResetError) and attempt < HANDSHAKE_ATTEMPTS:
                        # A server refusing credentials answers -ERR and closes at once; nats-py has sent its PING
                        # by then, unread, so the server's close may be a reset that discards the -ERR. The next
                        # attempt is verbose: the client waits for the answer to CONNECT before it sends anything
                        # else, so a refusal arrives as -ERR.
                        attempt += 1
                        probing = True
                        continue
                    message = f"could not connect to {self._where()}"
                    raise self.error(SourceConnectError, message, stage, cause) from exc
                if probing:
                    # the credentials were accepted: connect again without verbose, which would make the server
                    # acknowledge every message of the connection
                    with contextlib.suppress(Exception):
                        await client.close()
                    probing = False
                    continue
                self._client = client
                return client

    async def _read(self, stage: StageSpec, stream: str | None, subject: str, since: datetime | None) -> _Read:
        from nats.js.api import RetentionPolicy
        from nats.js.errors import NotFoundError

        client = await self._connection(stage)
        js = client.jetstream(timeout=self.options.read_timeout)
        if stream is None:
            try:
                stream = await js.find_stream_name_by_subject(subject)
            except NotFoundError:
                message = f"no JetStream stream stores subject {subject!r} (yet): it is read once one does"
                raise self.error(SourceQueryError, message, stage) from None
        key = (stream, subject)
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        async with lock:
            try:
                info = await js.stream_info(stream)
            except NotFoundError:
                message = f"no JetStream stream named {stream!r} (yet): it is read once it exists"
                raise self.error(SourceQueryError, message, stage) from None
            stored = info.config.subjects or []  # none: a mirror, whose messages keep their origin's subjects
            if stored and not any(subjects_overlap(subject, pattern) for pattern in stored):
                message = f"stream {stream!r} does not store subject {subject!r} (its subjects: {', '.join(stored)})"
                raise self.error(SourceQueryError, message, stage, permanent=True)
            window = self._window(key, info.created, info.state.last_seq, since)
            fetched = 0
            if info.state.last_seq > window.last_seq:
                deadline = asyncio.get_running_loop().time() + READ_ROUNDS * self.options.read_timeout
                reading = _Pass(js, stream, subject, window, info.state.last_seq, deadline, stage)
                if info.config.retention == RetentionPolicy.WORK_QUEUE:
                    fetched = await self._get_each(reading, info.state.first_seq)
                else:
                    fetched = await self._consume(reading)
                window.last_seq = max(window.last_seq, info.state.last_seq)
            messages = [m for m in window.messages if since is None or m.at >= since]
            self._trim(key)
        return _Read(messages, fetched)

    def _window(self, key: tuple[str, str], created: datetime | None, last_seq: int, since: datetime | None) -> _Window:
        """The cached window of ``key`` if it holds what a read from ``since`` needs, else a new one."""
        window = self._windows.get(key)
        if window is None or window.created != created or last_seq < window.last_seq or not window.covers(since):
            window = self._windows[key] = _Window(since, created)
        self._windows.move_to_end(key)
        return window

    async def _consume(self, reading: _Pass) -> int:
        """Read the window's new messages up to the target sequence with an ordered ephemeral pull consumer
        that acknowledges nothing, then delete it; returns how many were read."""
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        js, window = reading.js, reading.window
        config = ConsumerConfig(
            ack_policy=AckPolicy.NONE,
            filter_subject=reading.subject,
            mem_storage=True,
            num_replicas=1,
            inactive_threshold=CONSUMER_IDLE_SECONDS,
            deliver_policy=DeliverPolicy.ALL,
        )
        if window.last_seq:
            config.deliver_policy, config.opt_start_seq = DeliverPolicy.BY_START_SEQUENCE, window.last_seq + 1
        elif window.since is not None:
            config.deliver_policy, config.opt_start_time = DeliverPolicy.BY_START_TIME, window.since
        consumer = await js.add_consumer(reading.stream, config)
        try:
            if not consumer.num_pending:
                return 0
            pull = await js.pull_subscribe_bind(consumer=consumer.name, stream=reading.stream)
            try:
                return await self._pull(reading, pull, consumer.num_pending)
            finally:
                with contextlib.suppress(Exception):
                    await pull.unsubscribe()
        finally:
            with contextlib.suppress(Exception):
                await js.delete_consumer(reading.stream, consumer.name)

    async def _pull(self, reading: _Pass, pull: JetStreamContext.PullSubscription, pending: int) -> int:
        window, read = reading.window, 0
        while pending > 0:
            self._in_time(reading, read)
            try:
                batch = await pull.fetch(min(pending, PULL_BATCH), timeout=self.options.read_timeout)
            except TimeoutError:
                # what was pending may be gone since (acknowledged by the application on an Interest stream)
                if not (await pull.consumer_info()).num_pending:
                    break
                raise
            for msg in batch:
                meta = msg.metadata
                if meta.sequence.consumer != read + 1:  # ordered: a gap means a lost delivery
                    message = (
                        f"a message of {reading.subject!r} was lost in delivery: "
                        f"the next poll reads again after stream sequence {window.last_seq}"
                    )
                    raise self.error(SourceQueryError, message, reading.stage)
                window.add(_message(msg, meta.sequence.stream, meta.timestamp), meta.sequence.stream)
                read += 1
                pending = 0 if meta.sequence.stream >= reading.target else meta.num_pending
        return read

    async def _get_each(self, reading: _Pass, first_seq: int) -> int:
        """Read the window's new messages up to the target one by one with the get-message API (a WorkQueue
        stream, where no second consumer may read); returns how many were read."""
        from nats.js.errors import NotFoundError

        window, read = reading.window, 0
        seq = max(window.last_seq + 1, first_seq)
        while seq <= reading.target:
            self._in_time(reading, read)
            try:
                raw = await reading.js.get_msg(reading.stream, seq=seq, subject=reading.subject, next=True)
            except NotFoundError as exc:
                if exc.err_code == NO_MESSAGE_FOUND:
                    break
                raise
            if raw.seq is None or raw.time is None:
                break
            read += 1
            if window.since is None or raw.time >= window.since:
                message = _raw_message(raw.subject or reading.subject, raw.seq, raw.time, raw.data, raw.headers)
                window.add(message, raw.seq)
            window.last_seq = raw.seq
            seq = raw.seq + 1
        return read

    def _in_time(self, reading: _Pass, read: int) -> None:
        if asyncio.get_running_loop().time() > reading.deadline:
            seconds = READ_ROUNDS * self.options.read_timeout
            message = (
                f"read {read} new messages in {seconds:g}s and there are more: "
                f"the next poll goes on after stream sequence {reading.window.last_seq}"
            )
            raise self.error(SourceTimeoutError, message, reading.stage)

    def _trim(self, current: tuple[str, str]) -> None:
        """Hold the cache to CACHE_WINDOWS windows and CACHE_BYTES of payloads: least recently used windows
        go first, then the oldest messages of ``current`` (its window then starts after them)."""
        total = sum(w.size for w in self._windows.values())
        while len(self._windows) > 1 and (len(self._windows) > CACHE_WINDOWS or total > CACHE_BYTES):
            _, dropped = self._windows.popitem(last=False)
            total -= dropped.size
        window = self._windows.get(current)
        if window is None or window.size <= CACHE_BYTES:
            return
        cut = 0
        while window.size > CACHE_BYTES:
            window.size -= len(window.messages[cut].payload)
            cut += 1
        window.since = window.messages[cut - 1].at + timedelta(microseconds=1)
        del window.messages[:cut]

    async def _publish(self, subject: str, stream: str | None, payloads: list[bytes]) -> None:
        from nats.js.errors import NoStreamResponseError

        client = await self._connection(None)
        js = client.jetstream(timeout=self.options.read_timeout)
        acks = [await js.publish_async(subject, payload, stream=stream) for payload in payloads]
        try:
            answers = await asyncio.wait_for(asyncio.gather(*acks, return_exceptions=True), self.options.read_timeout)
        except TimeoutError as exc:
            message = f"not every message to {subject!r} was acknowledged within {self.options.read_timeout:g}s"
            raise self.error(SourceTimeoutError, message, None, exc) from exc
        failed = [answer for answer in answers if isinstance(answer, BaseException)]
        if not failed:
            return
        first = failed[0]
        if isinstance(first, NoStreamResponseError):
            message = (
                f"no JetStream stream stores subject {subject!r}: "
                f"{len(failed)} of {len(payloads)} messages were not stored"
            )
            raise self.error(SourceQueryError, message, None, first) from first
        if isinstance(first, Exception):
            error = self._translate(first, None)
            if error is not None:
                raise error from first
        raise first


def _message(msg: Msg, seq: int, at: datetime) -> Message:
    return _raw_message(msg.subject, seq, at, msg.data, msg.headers)


def _raw_message(
    subject: str, seq: int, at: datetime, data: bytes | None, headers: Mapping[str, str] | None
) -> Message:
    meta = {"_subject": subject, "_offset": seq, "_timestamp": timestamp(at), "_headers": dict(headers or {})}
    return Message(data or b"", meta, at)


__all__ = ["NatsOptions", "NatsSource", "stream_problem", "subject_problem", "subjects_overlap"]
