"""How late each event reached a stage: its first-seen poll time minus when it was sent.

The engine keeps, per run and stage, when each record's key was first found (``first_seen``: the key's text
→ the ISO instant of that poll tick), with the stage's snapshot, across polls. A stage with ``time_field``
names the field that says when each event was sent; ``measure`` turns both into seconds per event and their
nearest-rank percentiles, and ``judge_latency`` holds them against the stage's ``latency:`` bounds once the
main check passed (every record is there, so the numbers are final).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from trackcheck.compare import apply_severity
from trackcheck.compare.checks import SHOWN, Record, keys_of
from trackcheck.compare.values import as_instant, as_number, display_key
from trackcheck.plan.durations import format_duration

if TYPE_CHECKING:
    from trackcheck.compare.result import Comparison
    from trackcheck.compare.tables import TableRecords
    from trackcheck.plan.model import LatencySpec, StageSpec

#: the percentiles a latency summary gives (besides ``max``), by name
PERCENTILES = (("p50", 50.0), ("p95", 95.0), ("p99", 99.0))
#: epoch numbers at least this large are milli-, micro- or nanoseconds (1e11 s is the year 5138)
_EPOCH_UNITS = ((1e17, 1e9), (1e14, 1e6), (1e11, 1e3))
#: rows made records at a time when keys are streamed from columns
_KEY_BATCH = 4096


def keeps_first_seen(stage: StageSpec) -> bool:
    """Whether the engine keeps first-seen times for this stage: one that reads events (``compare``) or says
    when they were sent (``time_field``). Counts and aggregates read groups, not events."""
    return stage.compare is not None or stage.time_field is not None


def key_texts(found: list[Record], key: list[str]) -> list[str]:
    """Each record's canonical key (``values.key_of``) as JSON text: the first-seen map's keys."""
    dumps = json.JSONEncoder(separators=(",", ":"), default=str).encode
    return [dumps(k) for k in keys_of(found, key)]


def streamed_key_texts(found: TableRecords, key: list[str]) -> Iterator[str]:
    """``key_texts`` of rows held in columns, made a batch at a time as they are read: ``merge_first_seen``
    stops reading once its map is full, so a million rows cost about ``snapshot_limit`` of them."""
    table = found.table
    for batch in table.select([f for f in key if f in table.column_names]).to_batches(max_chunksize=_KEY_BATCH):
        yield from key_texts(batch.to_pylist(), key)


def merge_first_seen(
    previous: Mapping[str, str] | None, keys: Iterable[str], now: datetime, limit: int
) -> tuple[dict[str, str], bool]:
    """The first-seen map after a poll at ``now`` that found ``keys``, and whether it gained a key.

    A key keeps the time it was first found, also when a later poll does not find it; at most ``limit`` keys
    are kept (the plan's ``snapshot_limit``), the earliest first."""
    merged = dict(previous or {})
    stamp: str | None = None
    gained = False
    for text in keys:
        if len(merged) >= limit:  # full: no later key can enter (and streamed keys need not be made)
            break
        if text not in merged:
            stamp = stamp or now.isoformat()
            merged[text] = stamp
            gained = True
    return merged, gained


def sent_instant(value: Any) -> datetime | None:
    """When an event was sent: an ISO time, a datetime, or epoch seconds (milli-, micro-, nanoseconds when
    the number is that large). None when the value is none of these."""
    if (type(value) is str and ":" in value) or isinstance(value, datetime):
        return as_instant(value)  # an ISO time (an epoch number has no colon)
    number = as_number(value)
    if number is None:
        return as_instant(value)
    seconds = float(number)
    for threshold, per_second in _EPOCH_UNITS:
        if abs(seconds) >= threshold:
            seconds /= per_second
            break
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def percentile(ordered: list[float], share: float) -> float:
    """The nearest-rank percentile ``share`` (0-100] of ``ordered`` (ascending, not empty): the smallest value
    that at least ``share`` percent of the values do not exceed."""
    rank = max(1, math.ceil(share / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass
class Lateness:
    """One run's events at one stage: seconds from sent to first seen, per distinct key, ascending."""

    seconds: list[float] = field(default_factory=list)
    #: keys (as users read them) of events whose ``time_field`` is missing or not a time
    unreadable: list[Any] = field(default_factory=list)
    #: events beyond the first-seen map's ``snapshot_limit``: not timed
    untracked: int = 0

    @property
    def n(self) -> int:
        return len(self.seconds)

    def summary(self) -> dict[str, Any]:
        """``{"n", "p50", "p95", "p99", "max", "unreadable"}`` in seconds (None without a timed event)."""
        values: dict[str, Any] = {"n": self.n}
        for name, share in PERCENTILES:
            values[name] = round(percentile(self.seconds, share), 3) if self.seconds else None
        values["max"] = round(self.seconds[-1], 3) if self.seconds else None
        values["unreadable"] = len(self.unreadable)
        return values

    def later_than(self, seconds: float) -> int:
        return sum(1 for value in self.seconds if value > seconds)

    def notes(self, time_field: str) -> list[str]:
        """What was left out of the numbers, and why."""
        notes = []
        if self.unreadable:
            shown = ", ".join(json.dumps(k, default=str) for k in self.unreadable[:SHOWN])
            more = f" and {len(self.unreadable) - SHOWN} more" if len(self.unreadable) > SHOWN else ""
            notes.append(
                f"{len(self.unreadable)} event(s) without a readable {time_field} (an ISO time or epoch seconds "
                f"or milliseconds), not counted in lateness: {shown}{more}"
            )
        if self.untracked:
            notes.append(
                f"{self.untracked} event(s) beyond defaults.snapshot_limit have no first-seen time, not counted "
                "in lateness"
            )
        return notes


def measure(
    found: list[Record], key: list[str], time_field: str, first_seen: Mapping[str, str], keys: list[str] | None = None
) -> Lateness:
    """The lateness of each distinct event of ``found``: first seen (``first_seen`` by key text) minus sent
    (``time_field``; the earliest readable one when a key was found more than once). ``keys``: the records'
    ``key_texts`` when the caller has them already."""
    texts = keys if keys is not None else key_texts(found, key)
    sent: dict[str, datetime | None] = {}
    shown: dict[str, Record] = {}
    for text, record in zip(texts, found, strict=True):
        moment = sent_instant(record.get(time_field))
        earlier = sent.get(text)
        if text not in sent or (moment is not None and (earlier is None or moment < earlier)):
            sent[text] = moment
            shown.setdefault(text, record)
    result = Lateness()
    parsed: dict[Any, datetime | None] = {}  # a tick's one instant is shared by the events it found
    for text, moment in sent.items():
        seen = first_seen.get(text)
        if seen not in parsed:
            parsed[seen] = as_instant(seen)
        stamp = parsed[seen]
        if stamp is None:
            result.untracked += 1
        elif moment is None:
            result.unreadable.append(display_key(shown[text], key))
        else:
            result.seconds.append((stamp - moment).total_seconds())
    result.seconds.sort()
    return result


def exceeded(spec: LatencySpec, lateness: Lateness) -> list[str]:
    """Each bound of ``spec`` the lateness exceeds, worded for the stage's reason."""
    problems = []
    summary = lateness.summary()
    for name in ("p50", "p95", "p99", "max"):
        bound = getattr(spec, name)
        value = summary[name]
        if bound is None or value is None or value <= bound.total_seconds():
            continue
        limit = format_duration(bound)
        problems.append(
            f"{name} lateness {span(value)} exceeds {limit} "
            f"({lateness.later_than(bound.total_seconds())} of {lateness.n} events later than {limit})"
        )
    return problems


def judge_latency(
    stage: StageSpec,
    comparison: Comparison,
    found: list[Record],
    key: list[str],
    first_seen: Mapping[str, str],
    keys: list[str] | None = None,
) -> Comparison:
    """Add the lateness of ``found`` to ``comparison`` (for a stage with ``time_field``) and, once the main
    check passed, hold it against the stage's ``latency`` bounds: a bound exceeded fails the stage naming it,
    or with ``severity: warn`` becomes a warning (``compare.apply_severity``). While records are still
    missing the numbers are shown but not judged: they are final only when every record is there."""
    if stage.time_field is None:
        return comparison
    lateness = measure(found, key, stage.time_field, first_seen, keys)
    notes = lateness.notes(stage.time_field)
    measured = replace(comparison, latency=lateness.summary(), reason=_joined(comparison.reason, *notes))
    spec = stage.latency
    if spec is None or comparison.verdict != "passed":
        return measured
    problems = exceeded(spec, lateness)
    if not lateness.n and found:
        problems.append(f"no event has a readable {stage.time_field}: lateness cannot be judged")
    if not problems:
        return measured
    # ``severity: warn`` follows the rule of every main check: what would fail becomes one warning
    judged = apply_severity(spec, replace(measured, verdict="failed", reason="; ".join(problems)))
    after = comparison.reason if judged.verdict == "failed" else None
    return replace(judged, reason=_joined(judged.reason, *notes, after))


def span(seconds: float) -> str:
    """A lateness as people say it: ``350ms``, ``12.5s``, ``7m12s``, ``2h05m``, ``3d4h``."""
    if seconds < 0:
        return "-" + span(-seconds)
    if seconds == 0:
        return "0s"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.0f}s" if seconds == int(seconds) else f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 3600:
        minutes, rest = divmod(whole, 60)
        return f"{minutes}m{rest:02d}s" if rest else f"{minutes}m"
    if whole < 86400:
        hours, rest = divmod(whole // 60, 60)
        return f"{hours}h{rest:02d}m" if rest else f"{hours}h"
    days, rest = divmod(whole // 3600, 24)
    return f"{days}d{rest}h" if rest else f"{days}d"


def _joined(*parts: str | None) -> str | None:
    text = "; ".join(p for p in parts if p)
    return text or None
