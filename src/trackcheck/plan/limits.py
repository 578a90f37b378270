"""The bounds every plan input is held to, so that no plan (and no run's overrides) can exhaust the service.

A plan is read from a file the operator wrote or from an API request anyone with a token sent; either way
its size, its YAML structure, its names, its polling rates and its durations are bounded here. The
defaults suit the service and the CLI; a deployment passes its own ``PlanLimits`` (``dataclasses.replace(
DEFAULT_LIMITS, min_interval=...)``) to ``load_plan_text(..., limits=...)`` and ``overrides_from(...,
limits=...)``. Each error names the limit it hit, e.g. ``defaults.interval: 1ms is shorter than the
minimum interval 1s (min_interval)``.

The hard ceiling of any duration (``durations.MAX_DURATION``, ten years) is not a limit here: it keeps
date arithmetic from overflowing whatever the deployment chooses.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import timedelta

from trackcheck.plan.durations import MAX_DURATION, format_duration


@dataclass(frozen=True)
class PlanLimits:
    """Bounds on plan text, names and settings. Every field is documented with why it exists."""

    #: plan text larger than this is refused before it is parsed. Parsing costs about 2 s of CPU per MiB
    #: (YAML in Python); real plans are a few KiB, a long ``expect`` list a few hundred
    max_yaml_bytes: int = 1 << 20
    #: ``*alias`` uses in one plan. Anchors are for sharing a block of settings, not for building data
    max_aliases: int = 100
    #: values reachable through aliases, counted as if each alias were written out. An "alias bomb" (each
    #: level ten aliases of the one before) is a few hundred bytes that expand to billions of values: it
    #: is refused here, while it is parsed, after a few dozen values
    max_alias_nodes: int = 10_000
    #: nesting of YAML collections (aliases included). Plans nest about six levels; unbounded nesting
    #: exhausts the parser's and the validators' recursion
    max_depth: int = 64
    #: characters of a YAML integer. Python's int parsing of long (and base-60 ``1:2:3...``) numbers costs
    #: time quadratic in their length; write a longer identifier as a string
    max_integer_chars: int = 100
    #: the shortest poll interval of a stage or a run (``--interval``). Each poll is a query, a request or a
    #: file scan on a system someone else runs: a plan must not be a way to hammer it. Test suites that
    #: poll an in-memory source pass a lower floor
    min_interval: timedelta = timedelta(seconds=1)
    #: the longest stage timeout (and ``--timeout``). A run holds its stage's poll job and state until its
    #: timeout; a month is longer than any pipeline waits for its data
    max_timeout: timedelta = timedelta(days=30)
    #: the shortest first retry delay. A zero backoff retries a failing source in a tight loop; 100 ms,
    #: doubling, costs a handful of extra reads before the regular poll takes over
    min_backoff: timedelta = timedelta(milliseconds=100)
    #: the longest first retry delay. The delay doubles per attempt (a webhook is retried up to 20 times):
    #: a day keeps ``backoff * 2**19`` inside the dates Python can represent
    max_backoff: timedelta = timedelta(days=1)
    #: characters of a plan ``name``: the state database stores it in a String(200) column
    max_plan_name_chars: int = 200
    #: characters of a stage, source or run parameter name: they appear in every message, result and
    #: metric label, and the state database stores stage names in a String(200) column
    max_name_chars: int = 100
    #: the most records one stage's snapshot keeps (``defaults.snapshot_limit``). A snapshot is held in
    #: memory and stored as one JSON document in the state database
    max_snapshot_limit: int = 100_000
    #: the most runs whose ``where`` values go into one fetch (``defaults.batch_size``): each value is a bound
    #: parameter of one query, and databases cap those (SQL Server at 2,100, SQLite at 32,766)
    max_batch_size: int = 10_000
    #: the most source errors in a row a stage may tolerate (``retries``); beyond that, leave it unset
    #: (retry until the timeout)
    max_retries: int = 100
    #: the most entries, elements or keys one read of a ``redis`` stage takes (``redis.count``): they are
    #: all held in memory
    max_redis_count: int = 1_000_000

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, timedelta):
                if value < timedelta(0) or value > MAX_DURATION:
                    raise ValueError(f"{field.name} must be between 0 and {format_duration(MAX_DURATION)}")
            elif not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{field.name} must be a positive integer, not {value!r}")


DEFAULT_LIMITS = PlanLimits()


def check_interval(value: timedelta, limits: PlanLimits) -> None:
    """ValueError unless ``value`` is a poll interval the limits allow (more than zero, at least
    ``min_interval``); the message names the value and the limit, the caller names the key."""
    if value <= timedelta(0):
        raise ValueError("an interval must be more than zero")
    if value < limits.min_interval:
        raise ValueError(
            f"{format_duration(value)} is shorter than the minimum interval "
            f"{format_duration(limits.min_interval)} (min_interval)"
        )


def check_timeout(value: timedelta, limits: PlanLimits) -> None:
    """ValueError unless ``value`` is a stage timeout the limits allow (at most ``max_timeout``)."""
    if value > limits.max_timeout:
        raise ValueError(
            f"{format_duration(value)} is longer than the maximum timeout "
            f"{format_duration(limits.max_timeout)} (max_timeout)"
        )


def check_backoff(value: timedelta, limits: PlanLimits) -> None:
    """ValueError unless ``value`` is a first retry delay within ``min_backoff`` and ``max_backoff``."""
    if value < limits.min_backoff:
        raise ValueError(
            f"{format_duration(value)} is shorter than the minimum backoff "
            f"{format_duration(limits.min_backoff)} (min_backoff)"
        )
    if value > limits.max_backoff:
        raise ValueError(
            f"{format_duration(value)} is longer than the maximum backoff "
            f"{format_duration(limits.max_backoff)} (max_backoff)"
        )


def check_at_most(value: int, limit: int, limit_name: str) -> None:
    """ValueError if a count setting exceeds its limit; ``limit_name`` is the PlanLimits field."""
    if value > limit:
        raise ValueError(f"{value} is more than the maximum {limit} ({limit_name})")
