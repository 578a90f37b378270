"""Listening to the buses that keep no history (MQTT, a RabbitMQ exchange) for the runs that will read them.

The poller holds one ``Listener`` per channel that a running run still has to check (at the stage it waits
at or a later one). It opens it when it first sees such a run (at once for a run submitted in its own
process, within a second otherwise) and closes it, with what the broker kept for it, once no run needs it.
About twice a second each listener is drained into the state database (``store/captures.py``) and only then
acknowledged, so a crash loses nothing already heard, and a poll in any process reads the buffer from there.

What is published while nobody listens (the service down, no poller) is lost unless the broker keeps it for
trackcheck (a queue, a persistent MQTT session: ``Listener.durable``); such a gap is recorded on the channel
and every run it concerns says so in its stage's reason.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from trackcheck.errors import SourceError, StoreError, TrackcheckError
from trackcheck.sources import source_class
from trackcheck.sources.base import Listener, Message, Source
from trackcheck.store.captures import CaptureStore
from trackcheck.store.repository import utcnow

if TYPE_CHECKING:
    from trackcheck.engine.core import Engine
    from trackcheck.plan.model import StageSpec

log = logging.getLogger("trackcheck.capture")
#: seconds between two drains of every listener
EVERY = 0.5
#: seconds between two looks for channels to open or close
REFRESH = 1.0
#: messages taken from one listener per drain
DRAIN_LIMIT = 5000
#: the most of a message's payload the buffer keeps when its source does not say (``max_message_bytes``)
DEFAULT_KEEP = 1_048_577
#: seconds between two "still listening" marks of a quiet channel (a gap is measured from the last one)
MARK_EVERY = 2.0


def channel_key(plan_id: int, source: str, channel: str) -> str:
    """The buffer's key for a channel of a plan version's source (a hash: no user text in keys)."""
    return hashlib.sha256(f"{plan_id}\x00{source}\x00{channel}".encode()).hexdigest()[:40]


class Capturer:
    """The poller's listeners, and the buffer's reading for polls (``input``)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.store = CaptureStore(engine.store)
        self._listeners: dict[str, Listener] = {}
        self._marked: dict[str, float] = {}
        self._keep_bytes: dict[str, int] = {}
        #: whether each plan version has a listening stage
        self._listening: dict[int, bool] = {}
        #: why a channel could not be listened to (read by the polls of this process as the source's error)
        self._failures: dict[str, SourceError] = {}
        self._lock = threading.Lock()
        #: one opening at a time: the capture thread and an emit stage may both want a channel
        self._opening = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> None:
        """Listen from now on (the poller); idempotent."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="trackcheck-capture", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop listening. What brokers hold for channels that running runs still need is kept (another
        poller, or this one after a restart, picks them up again); the others are removed, and all of them
        when the state database is in memory (nobody could pick them up)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        with self._lock:
            listeners, self._listeners = self._listeners, {}
        if not listeners:
            return
        needed: set[str] = set()
        if not self.engine.store.in_memory:
            try:
                needed = set(self.needed())
            except Exception:  # the state database is away: keep everything rather than lose a queue
                log.warning("cannot tell which channels runs still need: keeping them all", exc_info=True)
                needed = set(listeners)
        for key, listener in listeners.items():
            _close(listener, remove=key not in needed)
        gone = [key for key in listeners if key not in needed]
        try:
            self.store.drop(gone)
        except StoreError:
            log.warning("cannot drop the buffers of %d channel(s)", len(gone))

    @property
    def running(self) -> bool:
        """Whether this process listens (it leads the polling)."""
        return self._thread is not None and self._thread.is_alive()

    def wake(self) -> None:
        """A run was submitted here: look for channels to open now rather than at the next refresh."""
        self._wake.set()

    def _loop(self) -> None:
        refreshed = 0.0
        while not self._stop.is_set():
            woken = self._wake.is_set()
            self._wake.clear()
            try:
                if woken or time.monotonic() - refreshed >= REFRESH:
                    self.refresh()
                    refreshed = time.monotonic()
                self.drain()
            except StoreError as exc:  # the state database is away: listeners keep what they hold, unacknowledged
                log.warning("cannot store what the listeners heard: %s", exc)
            except Exception:
                log.exception("capture loop")
            self._wake.wait(EVERY)

    # -- listening -------------------------------------------------------------------------------------
    def needed(self) -> dict[str, tuple[int, StageSpec, dict[str, Any], str]]:
        """Every channel a running run still has to read: key → (plan id, stage, parameters, description)."""
        listening = [plan_id for plan_id in self.store.plan_ids() if self._listens(plan_id)]
        if not listening:  # the common case: no plan reads a bus without history, and no run is read for it
            return {}
        needed: dict[str, tuple[int, StageSpec, dict[str, Any], str]] = {}
        for run in self.store.waiting_runs(listening):
            for key, wanted in self._channels(run.plan_id, run.params, run.stage_idx).items():
                needed.setdefault(key, wanted)
        return needed

    def _channels(
        self, plan_id: int, params: dict[str, Any], first: int
    ) -> dict[str, tuple[int, StageSpec, dict[str, Any], str]]:
        """The channels a run reads at stage ``first`` and after."""
        found: dict[str, tuple[int, StageSpec, dict[str, Any], str]] = {}
        for stage in self.engine.plan(plan_id).stages[first:]:
            try:
                source = self.engine.source(plan_id, stage.source)
                if not source.listens_to(stage):
                    continue
                channel = source.channel(stage, params)
            except TrackcheckError:  # the poll says why (a source it may not reach, a missing parameter)
                continue
            description = f"{source.type_name} {channel}"
            found[channel_key(plan_id, stage.source, channel)] = (plan_id, stage, params, description)
        return found

    def ensure(self, plan_id: int, params: dict[str, Any], first: int) -> str | None:
        """Listen now to every channel a run reads from stage ``first`` on (the emit stage calls it before it
        sends, so that nothing it sends is published before anyone listens); why one cannot be, or None."""
        for key, (_, stage, wanted, description) in self._channels(plan_id, params, first).items():
            failure = self._open(key, plan_id, stage, wanted, description)
            if failure is not None:
                return f"cannot listen to {description} yet: {failure}"
        return None

    def _listens(self, plan_id: int) -> bool:
        """Whether a plan version has a stage that listens: worked out once per version (versions do not
        change; ``forget_plans`` when a connection did), from the source types, opening nothing."""
        if plan_id not in self._listening:
            try:
                plan = self.engine.plan(plan_id)
                found = any(source_class(plan.sources[stage.source].type).listens_to(stage) for stage in plan.stages)
            except (TrackcheckError, KeyError):  # a plan that no longer loads: its runs end at their next poll
                found = False
            self._listening[plan_id] = found
        return self._listening[plan_id]

    def forget_plans(self) -> None:
        """A connection changed: which plan versions listen is worked out again."""
        self._listening.clear()

    def refresh(self) -> None:
        """Open a listener for every channel needed, close (and remove) those no run needs any more."""
        needed = self.needed()
        for key, (plan_id, stage, params, description) in needed.items():
            self._open(key, plan_id, stage, params, description)
        with self._lock:
            gone = [key for key in self._listeners if key not in needed]
            for key in gone:
                _close(self._listeners.pop(key), remove=True)
                self._marked.pop(key, None)
                self._keep_bytes.pop(key, None)
        for key in [key for key in self._failures if key not in needed]:
            del self._failures[key]
        self.store.drop([key for key in self.store.channels() if key not in needed])

    def _open(
        self, key: str, plan_id: int, stage: StageSpec, params: dict[str, Any], description: str
    ) -> SourceError | None:
        """Listen to ``key`` unless this process already does; the error if the bus refused."""
        with self._opening:
            if key in self._listeners:
                return None
            source = self.engine.source(plan_id, stage.source)
            token = self.store.token(key, description, utcnow())
            try:
                listener = source.listen(stage, params, identity=token)
            except SourceError as exc:
                if key not in self._failures:
                    log.warning("cannot listen to %s: %s", description, exc)
                self._failures[key] = exc
                return exc
            self._failures.pop(key, None)
            self.store.opened(key, listener.durable, utcnow())
            with self._lock:
                self._listeners[key] = listener
                # a message larger than the source decodes is kept cut one byte beyond: counted as too large
                self._keep_bytes[key] = getattr(source.options, "max_message_bytes", DEFAULT_KEEP) + 1
            log.info("listening to %s for the runs that read it", description)
            return None

    def drain(self) -> None:
        """Store what every listener heard, then acknowledge it."""
        with self._lock:
            listeners = list(self._listeners.items())
        for key, listener in listeners:
            try:
                messages = listener.drain(DRAIN_LIMIT)
            except SourceError as exc:  # reconnected at the next refresh; the gap is recorded then
                log.warning("listener lost: %s", exc)
                self._failures[key] = exc
                with self._lock:
                    if self._listeners.get(key) is listener:
                        del self._listeners[key]
                _close(listener, remove=False)
                continue
            now = time.monotonic()
            if not messages and now - self._marked.get(key, 0.0) < MARK_EVERY:
                continue
            keep = self._keep_bytes.get(key, DEFAULT_KEEP)
            self.store.keep(key, [(m.at, m.payload[:keep], dict(m.meta)) for m in messages], utcnow())
            self._marked[key] = now
            listener.commit()

    # -- reading, for polls ----------------------------------------------------------------------------
    def input(
        self, plan_id: int, stage: StageSpec, source: Source, params: dict[str, Any], since: datetime
    ) -> tuple[list[Message], list[str]]:
        """What was heard on the stage's channel since ``since``, and notes on what may have been missed."""
        key = channel_key(plan_id, stage.source, source.channel(stage, params))
        failure = self._failures.get(key)
        if failure is not None:
            raise failure
        rows, state = self.store.read(key, since)
        notes: list[str] = []
        if state is not None:
            for began, ended in state.gaps:
                if ended > since:
                    notes.append(
                        f"nobody listened to {state.description} from {began:%Y-%m-%d %H:%M:%S} to "
                        f"{ended:%H:%M:%S} UTC (trackcheck was not polling): what was published then was not seen"
                    )
            if state.dropped:
                notes.append(
                    f"the {state.dropped} oldest message(s) heard on {state.description} were dropped: the buffer "
                    f"keeps {self.store.limit}"
                )
        return [Message(payload, meta, at) for at, payload, meta in rows], notes


def _close(listener: Listener, *, remove: bool) -> None:
    try:
        listener.close(remove=remove)
    except Exception:  # a broker gone away: nothing left to release
        log.debug("closing a listener", exc_info=True)
