"""Durations as plans write them: ``500ms``, ``58s``, ``5m``, ``2h``, ``1d`` (or a bare number of seconds)."""

from __future__ import annotations

import math
import re
from datetime import timedelta

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
#: no duration is longer: ten years is beyond any timeout or interval, and far enough below timedelta's
#: and datetime's range that adding a duration (doubled by back-off) to now cannot overflow
MAX_DURATION = timedelta(days=3650)


def parse_duration(value: object) -> timedelta:
    """Turn ``"5m"`` (or ``300``, or a timedelta) into a timedelta; ValueError says what is accepted.

    Negative, infinite and NaN values and anything longer than MAX_DURATION are a ValueError naming the
    value (never an OverflowError)."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    elif isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    else:
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "…"
        raise ValueError(f"{shown} is not a duration: write a number with a unit, e.g. 500ms, 58s, 5m, 2h, 1d")
    if math.isnan(seconds):
        raise ValueError(f"{value!r} is not a duration")
    if seconds < 0:
        raise ValueError(f"duration {value!r} is negative")
    if seconds > MAX_DURATION.total_seconds():
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "…"
        raise ValueError(f"duration {shown} is longer than {format_duration(MAX_DURATION)}, the longest there is")
    return value if isinstance(value, timedelta) else timedelta(seconds=seconds)


def format_duration(delta: timedelta) -> str:
    """The shortest plan spelling of a duration, for messages and docs."""
    seconds = delta.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    milliseconds = seconds * 1000
    if milliseconds == round(milliseconds):
        return f"{round(milliseconds)}ms"
    return f"{seconds:g}s"
