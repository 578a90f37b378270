"""How two values from different systems are judged equal.

Systems disagree on representation, not meaning: a CSV says ``"25.50"``, the warehouse ``Decimal('25.5')``,
the BI API ``25.5``; one system writes ``2026-11-24T10:00:00Z``, another ``2026-11-24 11:00:00+01:00``.
Numbers compare as numbers and timestamps as instants. ``canonical`` gives the hashable form used to match
keys and to split batched rows back to their runs; ``equal`` adds tolerances.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

#: the largest power of ten a text is read as a number with (floats reach 1e308)
MAX_EXPONENT = 400
_NUMBER = re.compile(r"^\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*$")
#: an ISO date, or date and time: a date alone is its midnight, as a ``date`` a driver returns is (so a date
#: column equals an earlier stage's snapshot of it, where it was stored as ISO text)
_INSTANT = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$")


def as_number(value: Any) -> Decimal | None:
    """The number a value stands for (``"25.50"`` → 25.5), or None when it is not a number.

    A value beyond float's range (``"1e999999999"``: a random hex id can look like that) is no quantity any
    system sent: it is compared as it is, never expanded to its digits nor overflowing the arithmetic."""
    if isinstance(value, bool) or value is None:
        return None
    number: Decimal | None = None
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, float):
        number = Decimal(repr(value))
    elif isinstance(value, str) and _NUMBER.match(value):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            return None
    if number is None or not number.is_finite() or abs(number.adjusted()) > MAX_EXPONENT:
        return None
    return number


def as_instant(value: Any) -> datetime | None:
    """The instant a value stands for; naive times are taken as UTC. None when it is not a time."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    elif isinstance(value, str) and _INSTANT.match(value.strip()):
        try:
            moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def canonical(value: Any) -> Any:
    """A hashable form under which values that mean the same are equal (for keys and filters)."""
    number = as_number(value)
    if number is not None:
        normalized = number.normalize()
        return ("n", format(normalized, "f") if normalized == normalized.to_integral() else str(normalized))
    instant = as_instant(value)
    if instant is not None:
        return ("t", instant.isoformat())
    if isinstance(value, list | tuple):
        return tuple(canonical(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, canonical(v)) for k, v in value.items()))
    return value


def key_of(record: dict[str, Any], fields: list[str]) -> Any:
    """The canonical key of a record: one value, or a tuple for composite keys."""
    if len(fields) == 1:
        return canonical(record.get(fields[0]))
    return tuple(canonical(record.get(f)) for f in fields)


def display_key(record: dict[str, Any], fields: list[str]) -> Any:
    """The key as a user reads it: the plain value, or a {field: value} map for composite keys."""
    if len(fields) == 1:
        return jsonable(record.get(fields[0]))
    return {f: jsonable(record.get(f)) for f in fields}


def equal(expected: Any, actual: Any, tolerance: float | timedelta | None = None) -> bool:
    """Whether two values match: as numbers, as instants, else exactly; within ``tolerance`` if given."""
    left, right = as_number(expected), as_number(actual)
    if left is not None and right is not None:
        allowed = Decimal(repr(tolerance)) if isinstance(tolerance, int | float) else Decimal(0)
        return abs(left - right) <= allowed
    first, second = as_instant(expected), as_instant(actual)
    if first is not None and second is not None:
        allowed_time = tolerance if isinstance(tolerance, timedelta) else timedelta(0)
        return abs(first - second) <= allowed_time
    return canonical(expected) == canonical(actual)


def jsonable(value: Any) -> Any:
    """A value as it can be stored in JSON and shown to a user (Decimal → number, datetime → ISO text)."""
    if type(value) in _JSON_SCALARS:  # most values of most records: skip the isinstance chain below
        return value
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral() and abs(value) < 2**53 else float(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, int | float | str | bool) or value is None:
        return value
    return str(value)


_JSON_SCALARS = frozenset({str, int, float, bool, type(None)})
