"""The buffers of listening bus sources (``tc_capture_channels``, ``tc_captures``): the only place that talks
SQL about them. See ``engine/capture.py`` for who fills and reads them.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, insert, select, update

from trackcheck.states import RunStatus, StageStatus
from trackcheck.store.models import Capture, CaptureChannel, PlanVersion, Run, RunStage
from trackcheck.store.repository import Store, aware

#: a channel not drained for longer than this was not listened to (the service was down, or its poller)
GAP_AFTER = timedelta(seconds=5)


#: a message as the buffer keeps it: (when, payload, what the bus said of it)
Heard = tuple[datetime, bytes, dict[str, Any]]


@dataclass(frozen=True)
class ChannelState:
    """What a fetch needs to know about a channel besides its messages."""

    description: str
    durable: bool
    listening_since: datetime
    gaps: list[tuple[datetime, datetime]]
    dropped: int


@dataclass(frozen=True)
class WaitingRun:
    """A running run, and the first stage it still has to pass (the stages from there on may listen)."""

    run_id: str
    plan_id: int
    params: dict[str, Any]
    created_at: datetime
    stage_idx: int


class CaptureStore:
    """Reads and writes the capture buffers through the state database's ``Store``."""

    def __init__(self, store: Store, limit: int = 100_000) -> None:
        self.store = store
        #: messages kept per channel; beyond, the oldest are deleted (and counted in ``dropped``)
        self.limit = limit

    def plan_ids(self) -> list[int]:
        """Every plan version's id: a small table, read about every second (``tc_runs`` holds every run)."""
        with self.store.session() as s:
            return list(s.scalars(select(PlanVersion.id)))

    def waiting_runs(self, plan_ids: Sequence[int]) -> list[WaitingRun]:
        """The running runs of these plan versions, each with the stage it waits at."""
        if not plan_ids:
            return []
        query = (
            select(Run.id, Run.plan_id, Run.params, Run.created_at, RunStage.idx)
            .join(RunStage, RunStage.run_id == Run.id)
            .where(
                Run.status == RunStatus.RUNNING,
                Run.plan_id.in_(list(plan_ids)),
                RunStage.status == StageStatus.WAITING,
            )
        )
        with self.store.session() as s:
            return [
                WaitingRun(run_id, plan_id, dict(params or {}), aware(created) or created, idx)
                for run_id, plan_id, params, created, idx in s.execute(query)
            ]

    def token(self, key: str, description: str, now: datetime) -> str:
        """The identity of ``key``'s subscription at the broker: a new channel gets a random one and listens
        from now; a known one keeps its own (a restart finds its queue or session again)."""
        with self.store.session(write=True) as s:
            row = s.get(CaptureChannel, key)
            if row is None:
                row = CaptureChannel(
                    key=key,
                    description=description,
                    token=secrets.token_hex(16),
                    durable=False,
                    listening_since=now,
                    heard_at=now,
                    gaps=[],
                    dropped=0,
                )
                s.add(row)
            return row.token

    def opened(self, key: str, durable: bool, now: datetime) -> None:
        """A listener for ``key`` was opened now: a channel that nobody drained for a while has a gap from its
        last drain until now, unless the broker kept the messages for it."""
        with self.store.session(write=True) as s:
            row = s.get(CaptureChannel, key)
            if row is None:
                return
            heard = aware(row.heard_at) or now
            if not durable and now - heard > GAP_AFTER:
                row.gaps = [*row.gaps, [heard.isoformat(), now.isoformat()]]
            row.durable, row.heard_at = durable, now

    def keep(self, key: str, messages: Iterable[Heard], now: datetime) -> None:
        """Keep what a listener heard (``(at, payload, meta)``), and note that the channel was drained now; the
        oldest messages beyond ``limit`` go, counted in the channel's ``dropped``."""
        rows = [
            {"channel": key, "at": at, "heard": now, "payload": payload, "meta": meta} for at, payload, meta in messages
        ]
        with self.store.session(write=True) as s:
            if rows:
                s.execute(insert(Capture), rows)
            s.execute(update(CaptureChannel).where(CaptureChannel.key == key).values(heard_at=now))
            if not rows:
                return
            count = s.scalar(select(func.count()).select_from(Capture).where(Capture.channel == key)) or 0
            if count > self.limit:
                excess = count - self.limit
                oldest = list(
                    s.scalars(select(Capture.id).where(Capture.channel == key).order_by(Capture.id).limit(excess))
                )
                s.execute(delete(Capture).where(Capture.id.in_(oldest)))
                s.execute(
                    update(CaptureChannel)
                    .where(CaptureChannel.key == key)
                    .values(dropped=CaptureChannel.dropped + len(oldest))
                )

    def read(self, key: str, since: datetime) -> tuple[list[Heard], ChannelState | None]:
        """The messages heard on ``key`` from ``since`` on, oldest first, and the channel's state (None while
        nobody listens to it yet)."""
        with self.store.session() as s:
            row = s.get(CaptureChannel, key)
            if row is None:
                return [], None
            found = s.execute(
                select(Capture.at, Capture.payload, Capture.meta)
                .where(Capture.channel == key, Capture.heard >= since)
                .order_by(Capture.id)
            )
            messages = [(aware(at) or at, bytes(payload), dict(meta)) for at, payload, meta in found]
            state = ChannelState(
                description=row.description,
                durable=row.durable,
                listening_since=aware(row.listening_since) or row.listening_since,
                gaps=[(datetime.fromisoformat(a), datetime.fromisoformat(b)) for a, b in row.gaps],
                dropped=row.dropped,
            )
        return messages, state

    def drop(self, keys: Sequence[str]) -> None:
        """No run needs these channels any more: their messages and state go."""
        if not keys:
            return
        with self.store.session(write=True) as s:
            s.execute(delete(Capture).where(Capture.channel.in_(list(keys))))
            s.execute(delete(CaptureChannel).where(CaptureChannel.key.in_(list(keys))))

    def channels(self) -> list[str]:
        with self.store.session() as s:
            return list(s.scalars(select(CaptureChannel.key)))
