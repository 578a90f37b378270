"""The values a poll tick reads and writes: typed rows, so that the engine and the store agree by type.

``Waiting`` is what a tick reads of a run waiting at a stage (plain columns, not ORM objects: a tick reads
tens of thousands of them). ``TickWrite`` is everything one tick changes, applied by ``Store.apply`` with a
few bulk statements: the rows of ``tc_polls`` (``PollRow``), the updates of ``tc_run_stages``
(``StageUpdate``), the polls that changed nothing but a stage's count (``QuietPolls``), the snapshots
(``SnapshotRow``), the next stages made active (``Activation``), the later stages skipped and the runs that
ended (``RunEnd``).

They are slotted dataclasses, and not frozen although nothing changes them once built: a frozen
dataclass's ``__init__`` sets each field through ``object.__setattr__``, eight times the cost of a plain one
(3.1 µs against 0.4 µs for ``Waiting``'s 17 fields), and a tick builds several of them for each run it
polls (benchmark B7: 100,000 runs).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any, Self

import orjson


def aware(moment: datetime | None) -> datetime | None:
    """SQLite and MariaDB hand back naive datetimes; every time trackcheck stores is UTC."""
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


@dataclass(slots=True)
class Waiting:
    """A run waiting at a stage: the columns of ``tc_run_stages`` and ``tc_runs`` that a poll uses.

    The run's ``params``, ``expect`` and ``overrides`` are kept as the JSON text stored and parsed when read
    (properties; ``expect`` once): a quiet poll (``QuietPolls``) reads none of them, and in a large group that
    is most runs, where parsing them was about a third of the time a tick spent reading its chunks (B7)."""

    stage_id: int
    run_id: str
    idx: int
    attempts: int
    errors_in_row: int
    where: dict[str, Any] | None
    started_at: datetime | None
    deadline: datetime | None
    expected: int | None
    found: int | None
    plan_id: int
    params_json: str | None
    expect_json: str | None
    overrides_json: str | None
    created_at: datetime
    #: when each record was first found at this stage (its snapshot keeps it), for stages that read events
    first_seen: dict[str, str] | None = None
    #: the last poll found nothing and said nothing else (``StageUpdate.quiet``)
    quiet: bool = False
    #: ``expect`` once read
    parsed_expect: list[dict[str, Any]] | None = field(default=None, repr=False, compare=False)
    #: the expected events in columns (Arrow IPC bytes), for a run that has them so: ``expect_json`` is then
    #: not read (None), and the engine reads these (``expect_table`` keeps what it made of them)
    expect_arrow: bytes | None = field(default=None, repr=False)
    expect_table: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> Self:
        """From a row of ``Store.waiting`` (JSON columns selected as text); datetimes made aware."""
        return cls(
            stage_id=row["stage_id"],
            run_id=row["run_id"],
            idx=row["idx"],
            attempts=row["attempts"],
            errors_in_row=row["errors_in_row"],
            where=_parsed(row["where"]),
            started_at=aware(row["started_at"]),
            deadline=aware(row["deadline"]),
            expected=row["expected"],
            found=row["found"],
            plan_id=row["plan_id"],
            params_json=row["params"],
            expect_json=row["expect"],
            overrides_json=row["overrides"],
            created_at=aware(row["created_at"]) or datetime.now(UTC),
            first_seen=_parsed(row["first_seen"]) or None,
            quiet=bool(row["quiet"]),
            expect_arrow=row["expect_arrow"],
        )

    @property
    def params(self) -> dict[str, Any]:
        """The run's parameters (parsed at each use)."""
        return _parsed(self.params_json) or {}

    @property
    def expect(self) -> list[dict[str, Any]]:
        """The run's expected events (parsed at their first use: a poll may read them twice, to know how many
        rows to expect and to compare, and a million of them take seconds to parse)."""
        if self.parsed_expect is None:
            self.parsed_expect = _parsed(self.expect_json) or []
        return self.parsed_expect

    @property
    def overrides(self) -> dict[str, Any]:
        """The run's ``interval``/``timeout`` overrides (parsed at each use)."""
        return _parsed(self.overrides_json) or {}


def _parsed(text: str | None) -> Any:
    """A JSON column's value from its text (SQL NULL and JSON null alike: None).

    By orjson (a tick parses each waiting run's ``where``, and the expected events of each run whose rows
    came: B7), except for what orjson reads differently from the standard library: an integer of 19 digits
    or more, which may not fit 64 bits and would become a float, and ``NaN``/``Infinity``, which it refuses.
    """
    if text is None:
        return None
    if _LONG_NUMBER.search(text) is None:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text)


def json_text(value: Any) -> str:
    """``value`` as JSON text for PostgreSQL's bulk writes, by orjson: a tenth of the standard library's time,
    which was a quarter of submitting 10,000 runs (benchmark B7). What orjson refuses (an integer beyond 64
    bits, a key that is not text) is written by the standard library, as ``_parsed`` reads it back."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value)


#: digits enough for an integer beyond 64 bits (anywhere, a string's included: then the slower parser reads)
_LONG_NUMBER = re.compile(r"\d{19}")


#: the row of ``tc_poller_epochs`` that counts the poller's leases
POLLER_LEASE = "poller"


@dataclass(frozen=True, slots=True)
class Claim:
    """A poll's right to write its group's tick: the leader's ``epoch`` (``Store.take_epoch``), the tick
    (microseconds, increasing per leader) and the ``attempt`` of a retried job.

    ``Store.claim`` records it as the group's newest if it is newer than the one recorded, by ``(epoch,
    tick, attempt)``, and its epoch is still the current one; every write of the poll (``Store.apply``)
    checks, in its transaction, that both are still true. A poller frozen mid-tick (SIGSTOP, a long GC,
    a lost network) that wakes after another took over therefore writes nothing: the fencing token of
    Kleppmann's "How to do distributed locking", with the database as the storage that checks it."""

    group: str
    epoch: int
    tick: int
    attempt: int = 0

    @property
    def token(self) -> tuple[int, int, int]:
        return (self.epoch, self.tick, self.attempt)

    def describe(self, chunk: int) -> str:
        """The read of ``chunk`` (0, 1, ... for the group's runs ``batch_size`` at a time) under this claim, in
        one ASCII line: no two reads of a poll, nor two polls, share it; a retried job reads again under
        a higher attempt."""
        return f"group={self.group}; epoch={self.epoch}; tick={self.tick}; attempt={self.attempt}; chunk={chunk}"


@dataclass(slots=True)
class NewRun:
    """A run being submitted: its ``tc_runs`` row."""

    id: str
    plan_id: int
    plan_name: str
    status: str
    params: dict[str, Any]
    expect: list[dict[str, Any]]
    overrides: dict[str, Any]
    created_at: datetime
    #: ``expect`` in columns too (Arrow IPC), when it is long and a stage compares with it by rows
    expect_arrow: bytes | None = None


@dataclass(slots=True)
class NewStage:
    """A stage of a run being submitted: its ``tc_run_stages`` row (the first one active, the others
    pending, without a group yet)."""

    run_id: str
    idx: int
    name: str
    status: str
    group_key: str | None = None
    where: dict[str, Any] | None = None
    started_at: datetime | None = None
    deadline: datetime | None = None
    attempts: int = 0
    errors_in_row: int = 0


@dataclass(slots=True)
class PollRow:
    """A row of ``tc_polls``: one poll of one run's stage."""

    run_id: str
    stage_idx: int
    polled_at: datetime
    outcome: str
    found: int | None
    expected: int | None
    duration_ms: float
    error: str | None
    error_kind: str | None


@dataclass(slots=True)
class StageUpdate:
    """What a poll changes in a run's ``tc_run_stages`` row (by ``id``; ``run_id`` lets a tick split per run)."""

    id: int
    run_id: str
    status: str
    attempts: int
    errors_in_row: int
    finished_at: datetime | None
    reason: str | None
    error: str | None
    error_kind: str | None
    expected: int | None
    found: int | None
    #: None with ``keep_evidence``: the poll could not compare, the stage keeps what it showed before
    evidence: dict[str, Any] | None
    #: this poll compared, found nothing, and its reason says nothing that can change while nothing is found
    #: (no source notes, not an ``absent`` stage's time so far): the next poll that finds nothing again
    #: would write the same verdict, reason, counts and evidence, so it is a ``QuietPolls`` entry instead
    quiet: bool = False
    keep_evidence: bool = False


@dataclass(slots=True)
class QuietPolls:
    """Polls of one source read that found nothing, at stages whose previous poll was ``quiet`` too.

    Each is a poll all the same (a ``tc_polls`` row, the stage's ``attempts`` counted), but nothing else of
    the stage changes, so the store writes them with two set-based statements over the stage ids instead of
    a row of values per run: in a large group most runs wait for events that have not arrived, and these
    rows were most of a tick's write (benchmark B7).
    """

    polled_at: datetime
    duration_ms: float
    #: (stage id, run id) of each quiet poll
    stages: tuple[tuple[int, str], ...]


@dataclass(slots=True)
class SnapshotRow:
    """The records a stage read (up to ``snapshot_limit``; all of them in ``arrow`` too, when kept in columns),
    replacing the run's earlier snapshot of it."""

    run_id: str
    stage_idx: int
    records: list[dict[str, Any]]
    total: int
    truncated: bool
    taken_at: datetime
    first_seen: dict[str, str] | None
    #: every row in columns (Arrow IPC) when ``records`` keeps fewer and a later stage compares with them
    arrow: bytes | None = None


@dataclass(slots=True)
class Activation:
    """A run's next stage made active: it joins ``group_key`` and waits there until ``deadline``."""

    run_id: str
    idx: int
    status: str
    group_key: str
    where: dict[str, Any]
    started_at: datetime
    deadline: datetime


@dataclass(slots=True)
class RunEnd:
    """A run that ended in this tick, and its webhook notification's state (due at once, or none)."""

    run_id: str
    status: str
    finished_at: datetime
    notify: dict[str, Any] | None
    notify_due: datetime | None


@dataclass
class TickWrite:
    """Everything one poll tick changes, applied by ``Store.apply`` in one transaction."""

    polls: list[PollRow] = field(default_factory=list)
    stages: list[StageUpdate] = field(default_factory=list)
    quiet: list[QuietPolls] = field(default_factory=list)
    snapshots: list[SnapshotRow] = field(default_factory=list)
    activate: list[Activation] = field(default_factory=list)
    #: (run id, stage index): the stages after that one are skipped (it failed or errored)
    skip: list[tuple[str, int]] = field(default_factory=list)
    runs: list[RunEnd] = field(default_factory=list)

    def for_run(self, run_id: str) -> TickWrite:
        """The part of this tick that concerns one run."""
        return TickWrite(
            polls=[p for p in self.polls if p.run_id == run_id],
            stages=[s for s in self.stages if s.run_id == run_id],
            quiet=[
                replace(q, stages=mine)
                for q in self.quiet
                if (mine := tuple(pair for pair in q.stages if pair[1] == run_id))
            ],
            snapshots=[s for s in self.snapshots if s.run_id == run_id],
            activate=[a for a in self.activate if a.run_id == run_id],
            skip=[k for k in self.skip if k[0] == run_id],
            runs=[r for r in self.runs if r.run_id == run_id],
        )

    def escaped(self) -> TickWrite:
        """This tick with every text made storable anywhere: a NUL character (PostgreSQL refuses it in text
        and JSON) becomes the six characters ``\\u0000``, a lone surrogate (no database can encode it) its
        ``\\udXXX`` escape. The stage reason of a run whose values changed says so."""
        changed: set[str] = set()

        def clean(value: Any, run_id: str) -> Any:
            if isinstance(value, str):
                fixed = storable_text(value)
                if fixed is not value:
                    changed.add(run_id)
                return fixed
            if isinstance(value, dict):
                return {clean(k, run_id): clean(v, run_id) for k, v in value.items()}
            if isinstance(value, list | tuple):
                return [clean(v, run_id) for v in value]
            return value

        def cleaned(row: Any) -> Any:
            return replace(row, **{f.name: clean(getattr(row, f.name), row.run_id) for f in fields(row)})

        polls = [cleaned(p) for p in self.polls]
        snapshots = [cleaned(s) for s in self.snapshots]
        stages = [cleaned(s) for s in self.stages]
        note = " (values holding a NUL character or a lone surrogate are stored escaped)"
        stages = [replace(s, reason=(s.reason or "") + note) if s.run_id in changed else s for s in stages]
        return TickWrite(
            polls, stages, list(self.quiet), snapshots, list(self.activate), list(self.skip), list(self.runs)
        )


def storable_text(text: str) -> str:
    """``text`` itself when every database can store it, else a copy with NUL and lone surrogates escaped:
    ``\\u0000`` (six characters) and ``\\udXXX``. ASCII text without NUL, nearly all text, is checked in C."""
    if "\x00" not in text:
        if text.isascii():
            return text
        try:
            text.encode("utf-8")
            return text
        except UnicodeEncodeError:
            pass
    fixed = text.replace("\x00", "\\u0000")
    return fixed.encode("utf-8", "backslashreplace").decode("utf-8")


def field_names(row: Any) -> tuple[str, ...]:
    """The fields of a row dataclass, looked up once per class (``fields()`` per row cost as much as writing
    the rows of a large insert)."""
    names = _FIELDS.get(type(row))
    if names is None:
        names = _FIELDS[type(row)] = tuple(f.name for f in fields(row))
    return names


def column_values(row: Any) -> dict[str, Any]:
    """A row dataclass as the column values of an insert."""
    return {name: getattr(row, name) for name in field_names(row)}


def bind_values(row: Any, *names: str) -> dict[str, Any]:
    """``row``'s fields (or only ``names``) as bind parameters ``b_<field>`` of a Core executemany."""
    return {f"b_{name}": getattr(row, name) for name in (names or field_names(row))}


_FIELDS: dict[type, tuple[str, ...]] = {}
