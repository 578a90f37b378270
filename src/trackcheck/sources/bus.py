"""What the message bus sources (kafka, rabbitmq, nats, mqtt) share: where a stage starts reading, and how
messages become records.

A bus is read without taking anything from the application: no consumer group joined, no offset committed,
no message acknowledged on a queue the application reads. What a message holds is data, never trusted: a
payload that is not JSON, too large or not an object is counted as unparsed with a note naming the message,
and the other messages are read as usual.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from trackcheck.plan.durations import parse_duration
from trackcheck.sources.base import (
    FetchRequest,
    FetchResult,
    Message,
    Record,
    RecordsRead,
    Source,
    SourceOptions,
    apply_select,
    extract_records,
    filter_records,
)

#: how many per-message notes a fetch keeps (the count of unparsed messages is always exact)
NOTES_KEPT = 20


class BusOptions(SourceOptions):
    """Options every bus source has besides its address."""

    #: seconds (or a duration such as ``10s``) to wait for the broker to accept a connection
    connect_timeout: float = Field(default=10.0, gt=0)
    #: seconds to wait for an answer while reading
    read_timeout: float = Field(default=10.0, gt=0)
    #: a message larger than this is not decoded (counted as unparsed, with a note)
    max_message_bytes: int = Field(default=1_048_576, gt=0)


class BusRead(RecordsRead):
    """The stage keys every bus backend reads besides ``records``: ``format``, and the keys that say where
    it reads (``places``: a topic, a subject...), each of which may hold ``{param}``."""

    #: the keys of this backend that name where a stage reads, rendered per run
    places: ClassVar[tuple[str, ...]] = ()

    format: Literal["json", "text"] | None = None

    def templates(self, source: str, options: Mapping[str, Any]) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.places if getattr(self, name) is not None}


class HistoryRead(BusRead):
    """A bus that keeps what was published (a Kafka topic, a JetStream stream, a RabbitMQ stream): ``from``,
    where a stage starts reading: ``run_start`` (the default), ``earliest``, or a duration back from the
    run's start (``-10m``: a producer's clock may run behind, or the event was sent just before)."""

    from_: str | None = Field(default=None, alias="from")

    @field_validator("from_")
    @classmethod
    def _from(cls, value: str | None) -> str | None:
        if value is not None:
            read_back(value)
        return value


def read_back(start: str | None) -> timedelta | None:
    """How far before a run's start a bus stage reads (its ``from``): ``run_start`` (or unset) is zero,
    ``-10m`` ten minutes, ``earliest`` None (everything the bus still holds); ValueError otherwise."""
    if start is None or start == "run_start":
        return timedelta(0)
    if start == "earliest":
        return None
    if not start.startswith("-"):
        raise ValueError(f"'from' is run_start, earliest or a duration back from the run's start (-10m), not {start!r}")
    return parse_duration(start[1:])


def read_from(request: FetchRequest, read: HistoryRead) -> datetime | None:
    """The instant a bus stage reads from: the run's start (``request.since``) moved back by the stage's
    ``from``; None for ``from: earliest`` (all the bus still holds). Without a run, from now."""
    back = read_back(read.from_)
    if back is None:
        return None
    since = request.since or datetime.now(UTC)
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    return since - back


def timestamp(at: datetime) -> str:
    """``_timestamp`` as every bus source writes it: ISO 8601, UTC, milliseconds."""
    return at.astimezone(UTC).isoformat(timespec="milliseconds")


def from_millis(millis: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=millis)


def to_records(
    messages: Iterable[Message],
    request: FetchRequest,
    read: BusRead,
    source: Source,
    max_bytes: int,
    *,
    scanned: int | None = None,
) -> FetchResult:
    """Decode ``messages`` (``format: json`` by default, or ``text``: the payload as ``_value``), take the
    stage's ``records`` out of each JSON payload, add the bus's fields (``_key``, ``_offset``...), apply
    ``select`` and keep what matches ``request.filters``."""
    stage = request.stage
    fmt = read.format or "json"
    records: list[Record] = []
    unparsed = 0
    notes: list[str] = []
    count = 0
    for message in messages:
        count += 1
        problem: str | None = None
        found: list[Record] = []
        if len(message.payload) > max_bytes:
            problem = f"{len(message.payload)} bytes, more than max_message_bytes ({max_bytes})"
        elif fmt == "text":
            found = [{"_value": message.payload.decode("utf-8", errors="replace")}]
        else:
            try:
                document = json.loads(message.payload)
            except (ValueError, UnicodeDecodeError) as exc:
                problem = f"not JSON ({type(exc).__name__}: {str(exc)[:80]})"
            else:
                try:
                    found = extract_records(document, read.records, source, stage)
                except Exception as exc:  # a payload of another shape: counted, the others still read
                    problem = str(exc)[:160]
        if problem is not None:
            unparsed += 1
            if len(notes) < NOTES_KEPT:
                notes.append(f"{describe(message)}: {problem}")
            continue
        records.extend({**record, **message.meta} for record in found)
    selected = filter_records(apply_select(records, stage.select), request.filters)
    return FetchResult(selected, unparsed, notes, scanned=count if scanned is None else scanned)


def describe(message: Message) -> str:
    """Which message a note is about: ``partition 0 offset 17``, ``stream offset 5``, ``topic a/b``..."""
    meta = message.meta
    named = ("_topic", "_subject", "_partition", "_offset")
    parts = [f"{name.lstrip('_')} {meta[name]}" for name in named if name in meta]
    return "message " + (", ".join(parts) if parts else f"at {timestamp(message.at)}")
