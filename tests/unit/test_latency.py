"""Lateness per event (first seen minus sent), its nearest-rank percentiles, and ``latency:`` bounds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from trackcheck.compare import evaluate_stage
from trackcheck.compare.latency import (
    judge_latency,
    keeps_first_seen,
    key_texts,
    measure,
    merge_first_seen,
    percentile,
    sent_instant,
    span,
)
from trackcheck.compare.result import Comparison, Verdict
from trackcheck.plan.model import StageSpec

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


def stage(**declared: Any) -> StageSpec:
    return StageSpec.model_validate(
        {"name": "wh", "source": "x", "compare": {"with": "expect", "fields": []}, **declared}
    )


def events(lateness: list[float]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Records sent at T0 - lateness and all first seen at T0, with their first-seen map."""
    found = [{"id": f"e{i}", "sent_at": (T0 - timedelta(seconds=s)).isoformat()} for i, s in enumerate(lateness)]
    first_seen, _ = merge_first_seen(None, key_texts(found, ["id"]), T0, 10_000)
    return found, first_seen


def judged(declared: dict[str, Any], lateness: list[float], verdict: Verdict = "passed") -> Comparison:
    found, first_seen = events(lateness)
    spec = stage(time_field="sent_at", **declared)
    comparison = Comparison(verdict=verdict, expected=len(found), found=len(found))
    return judge_latency(spec, comparison, found, ["id"], first_seen)


# -- percentiles -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("values", "share", "expected"),
    [
        (list(range(1, 11)), 50, 5),
        (list(range(1, 11)), 95, 10),  # rank ceil(9.5) = 10
        (list(range(1, 11)), 90, 9),
        (list(range(1, 201)), 95, 190),
        (list(range(1, 201)), 99, 198),
        (list(range(1, 101)), 100, 100),
        ([7.5], 50, 7.5),
        ([7.5], 99, 7.5),
        ([1, 2], 50, 1),  # the smallest value that half the values do not exceed: no interpolation
    ],
)
def test_percentiles_are_nearest_rank(values: list[float], share: float, expected: float) -> None:
    assert percentile(values, share) == expected


def test_summary_gives_n_percentiles_and_max_in_seconds() -> None:
    found, first_seen = events([float(s) for s in range(1, 201)])
    summary = measure(found, ["id"], "sent_at", first_seen).summary()
    assert summary == {"n": 200, "p50": 100.0, "p95": 190.0, "p99": 198.0, "max": 200.0, "unreadable": 0}


def test_nothing_timed_gives_no_numbers() -> None:
    assert measure([], ["id"], "sent_at", {}).summary() == {
        "n": 0,
        "p50": None,
        "p95": None,
        "p99": None,
        "max": None,
        "unreadable": 0,
    }


# -- when an event was sent ----------------------------------------------------------------------------------
EPOCH = T0.timestamp()


@pytest.mark.parametrize(
    "value",
    [
        "2026-11-24T10:00:00Z",
        "2026-11-24T11:00:00+01:00",
        "2026-11-24 10:00:00",  # naive: UTC
        T0,
        datetime(2026, 11, 24, 10, 0),  # naive datetime from a database: UTC
        int(EPOCH),  # epoch seconds
        EPOCH,
        str(int(EPOCH)),  # as text (a CSV column)
        Decimal(int(EPOCH)),  # a numeric column
        int(EPOCH * 1000),  # epoch milliseconds
        str(int(EPOCH * 1000)),
        int(EPOCH * 1_000_000),  # microseconds
        int(EPOCH * 1_000_000_000),  # nanoseconds
    ],
)
def test_sent_times_are_iso_datetimes_or_epoch_numbers(value: Any) -> None:
    assert sent_instant(value) == T0


@pytest.mark.parametrize("value", [None, "", "yesterday", "2026-13-45T99:00:00Z", True, {"at": 1}, [1], 1e300, "1e999"])
def test_what_is_not_a_time_is_none_not_an_error(value: Any) -> None:
    assert sent_instant(value) is None


# -- first seen ------------------------------------------------------------------------------------------------
def test_first_seen_keeps_the_first_poll_that_found_a_key() -> None:
    later = T0 + timedelta(minutes=1)
    first, gained = merge_first_seen(None, ['"e1"'], T0, 100)
    assert (first, gained) == ({'"e1"': T0.isoformat()}, True)
    second, gained = merge_first_seen(first, ['"e1"', '"e2"'], later, 100)
    assert second == {'"e1"': T0.isoformat(), '"e2"': later.isoformat()}
    assert gained
    # found again, or not found at all: nothing moves, and nothing new means nothing to write
    assert merge_first_seen(second, ['"e2"'], later + timedelta(minutes=1), 100) == (second, False)
    assert merge_first_seen(second, [], later + timedelta(minutes=1), 100) == (second, False)
    assert first == {'"e1"': T0.isoformat()}  # the previous map is not changed in place


def test_first_seen_keeps_at_most_the_snapshot_limit_earliest_first() -> None:
    first, _ = merge_first_seen(None, ['"a"', '"b"'], T0, 3)
    merged, gained = merge_first_seen(first, ['"c"', '"d"', '"e"'], T0 + timedelta(seconds=5), 3)
    assert list(merged) == ['"a"', '"b"', '"c"'] and gained


def test_key_texts_are_canonical_so_systems_agree_on_a_key() -> None:
    left = key_texts([{"id": 5, "at": "2026-11-24T10:00:00Z"}], ["id", "at"])
    right = key_texts([{"id": "5.0", "at": "2026-11-24 11:00:00+01:00"}], ["id", "at"])
    assert left == right
    assert key_texts([{"id": "e1"}], ["id"]) == ['"e1"']


def test_stages_that_read_events_keep_first_seen_times() -> None:
    assert keeps_first_seen(stage())
    counts = StageSpec.model_validate(
        {"name": "bi", "source": "x", "counts": {"by": "event", "value": "n", "with": "wh"}}
    )
    assert not keeps_first_seen(counts)


# -- lateness ---------------------------------------------------------------------------------------------------
def test_lateness_is_first_seen_minus_sent_per_event() -> None:
    found = [
        {"id": "e1", "sent_at": "2026-11-24T09:59:30Z"},
        {"id": "e2", "sent_at": int((T0 - timedelta(minutes=7)).timestamp() * 1000)},
        {"id": "e3", "sent_at": "2026-11-24T10:00:05Z"},  # a sender's clock ahead: negative, kept as measured
    ]
    first_seen = {'"e1"': T0.isoformat(), '"e2"': (T0 + timedelta(seconds=12)).isoformat(), '"e3"': T0.isoformat()}
    lateness = measure(found, ["id"], "sent_at", first_seen)
    assert lateness.seconds == [-5.0, 30.0, 432.0]


def test_a_key_found_twice_counts_once_from_its_earliest_send() -> None:
    found = [
        {"id": "e1", "sent_at": "2026-11-24T09:59:00Z"},
        {"id": "e1", "sent_at": "2026-11-24T09:58:00Z"},
        {"id": "e1", "sent_at": "garbage"},
    ]
    lateness = measure(found, ["id"], "sent_at", {'"e1"': T0.isoformat()})
    assert (lateness.seconds, lateness.unreadable) == ([120.0], [])


def test_events_without_a_readable_time_are_counted_and_named_not_a_crash() -> None:
    found, first_seen = events([10, 20])
    found += [{"id": "e7", "sent_at": "soon"}, {"id": "e8"}]
    first_seen, _ = merge_first_seen(first_seen, key_texts(found, ["id"]), T0, 100)
    lateness = measure(found, ["id"], "sent_at", first_seen)
    assert lateness.summary()["n"] == 2 and lateness.unreadable == ["e7", "e8"]
    spec = stage(time_field="sent_at")
    comparison = Comparison(verdict="passed", expected=4, found=4)
    result = judge_latency(spec, comparison, found, ["id"], first_seen)
    assert result.verdict == "passed"
    assert result.latency is not None and result.latency["unreadable"] == 2
    assert result.reason is not None
    assert "without a readable sent_at" in result.reason and '"e7", "e8"' in result.reason


def test_events_beyond_the_first_seen_limit_are_left_out_and_said_so() -> None:
    found, _ = events([10, 20, 30])
    first_seen, _ = merge_first_seen(None, key_texts(found, ["id"]), T0, 2)
    lateness = measure(found, ["id"], "sent_at", first_seen)
    assert (lateness.n, lateness.untracked) == (2, 1)
    assert "snapshot_limit" in lateness.notes("sent_at")[0]


# -- bounds ----------------------------------------------------------------------------------------------------
def test_a_bound_exceeded_fails_naming_percentile_bound_value_and_how_many() -> None:
    # 200 events: 188 a minute late, 12 arriving 7m12s late → p95 is 7m12s
    result = judged({"latency": {"p95": "5m", "max": "30m"}}, [60.0] * 188 + [432.0] * 12)
    assert result.verdict == "failed"
    assert result.reason == "p95 lateness 7m12s exceeds 5m (12 of 200 events later than 5m)"
    assert result.latency == {"n": 200, "p50": 60.0, "p95": 432.0, "p99": 432.0, "max": 432.0, "unreadable": 0}


def test_every_bound_exceeded_is_named() -> None:
    result = judged({"latency": {"p50": "1m", "max": "10m"}}, [90.0, 100.0, 900.0])
    assert result.verdict == "failed"
    assert result.reason == (
        "p50 lateness 1m40s exceeds 1m (3 of 3 events later than 1m); "
        "max lateness 15m exceeds 10m (1 of 3 events later than 10m)"
    )


def test_within_bounds_passes_and_a_bound_equal_to_the_value_is_within() -> None:
    result = judged({"latency": {"p95": "5m", "max": "5m"}}, [10.0, 300.0])
    assert (result.verdict, result.reason, result.warnings) == ("passed", None, [])


def test_severity_warn_records_the_bound_and_passes() -> None:
    result = judged({"latency": {"max": "1m", "severity": "warn"}}, [30.0, 120.0])
    assert result.verdict == "passed"
    assert result.warnings == ["max lateness 2m exceeds 1m (1 of 2 events later than 1m)"]
    assert result.reason == "1 warning (severity: warn): max lateness 2m exceeds 1m (1 of 2 events later than 1m)"


def test_bounds_are_judged_only_once_the_main_check_passed() -> None:
    waiting = judged({"latency": {"max": "1m"}}, [30.0, 3600.0], verdict="waiting")
    assert waiting.verdict == "waiting"
    assert waiting.latency is not None and waiting.latency["max"] == 3600.0  # shown while waiting
    failed = judged({"latency": {"max": "1m"}}, [3600.0], verdict="failed")
    assert failed.verdict == "failed" and failed.reason is None  # the main check's reason stands


def test_a_bound_on_events_none_of_which_has_a_readable_time_fails() -> None:
    spec = stage(time_field="sent", latency={"max": "5m"})  # a typo of sent_at: nothing can be measured
    found, first_seen = events([1.0, 2.0])
    result = judge_latency(spec, Comparison(verdict="passed", expected=2, found=2), found, ["id"], first_seen)
    assert result.verdict == "failed"
    assert result.reason is not None and result.reason.startswith("no event has a readable sent: lateness cannot")


def test_a_stage_without_time_field_has_no_latency() -> None:
    found, first_seen = events([1.0])
    comparison = evaluate_stage(stage(), ["id"], found, [{"id": "e0"}])
    assert judge_latency(stage(), comparison, found, ["id"], first_seen).latency is None


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.35, "350ms"),
        (12, "12s"),
        (12.5, "12.5s"),
        (60, "1m"),
        (432, "7m12s"),
        (3600, "1h"),
        (7500, "2h05m"),
        (86400 * 3 + 3600 * 4, "3d4h"),
        (-5, "-5s"),
    ],
)
def test_lateness_reads_as_people_say_it(seconds: float, text: str) -> None:
    assert span(seconds) == text
