"""The Check interface, and the fast value forms and wording its implementations share.

A check evaluates one declaration of a stage (``compare``, ``counts``, ``schema``) against the records read
there. It returns a :class:`Comparison` whatever the data looks like; it raises only when it cannot evaluate
at all (a schema file that cannot be read).
"""

from __future__ import annotations

import gc
import json
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from itertools import compress, count, repeat
from operator import itemgetter, ne
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from trackcheck.compare.values import as_instant, as_number, canonical, display_key, equal, jsonable

if TYPE_CHECKING:
    from datetime import timedelta

    from trackcheck.compare.result import Comparison

Record = dict[str, Any]
SpecT = TypeVar("SpecT")

#: how many items a reason names before "and N more"
SHOWN = 3


class Check(ABC, Generic[SpecT]):
    """Evaluates one check of a stage; its plan declaration (a pydantic model) is ``spec``.

    ``key`` names the fields that identify a record (the plan's or the stage's ``key``); evidence shows each
    record by it. Constructing a check does no work: it can be built for every poll.
    """

    #: the stage key that declares this check in a plan (``compare``, ``counts``, ``schema``)
    name: ClassVar[str]

    def __init__(self, spec: SpecT, key: list[str]) -> None:
        self.spec = spec
        self.key = key

    @abstractmethod
    def evaluate(self, found: list[Record], reference: list[Record]) -> Comparison:
        """Judge ``found`` (the records read at this stage for one run) against ``reference`` (the run's
        ``expect`` records or the snapshot of an earlier stage).

        Returns the verdict with its evidence: ``failed`` when the data is wrong, ``waiting`` when it is
        incomplete but may still arrive, ``passed`` otherwise. Evidence lists are complete (not capped).
        Raises a TrackcheckError only when the check cannot be evaluated.
        """


# -- large comparisons ----------------------------------------------------------------------------------

#: comparisons of at least this many records pause the cyclic garbage collector (see ``collection_paused``)
LARGE = 100_000
_pause_lock = threading.Lock()
_pauses = 0
_resume = False


@contextmanager
def collection_paused(records: int, at_least: int = LARGE) -> Iterator[None]:
    """Pause Python's cyclic garbage collector while work on ``records`` >= ``at_least`` items runs.

    A large comparison builds several lists of a million items and creates no reference cycles, but the few
    thousand evidence entries it allocates make the collector walk those lists and the records they hold:
    0.3-0.6 s per million records, a tenth of the comparison (benchmark B2); a batch of submitted runs is
    the same case (50,000 runs submitted in batches of 10,000: 16,000 a second with collection as usual,
    18,000-19,000 with it deferred). Reference counting still frees every object at once. Collection
    resumes when the last such work (of any thread) ends, unless the application had turned it off itself.
    """
    global _pauses, _resume
    if records < at_least:
        yield
        return
    with _pause_lock:
        if _pauses == 0:
            _resume = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _pause_lock:
            _pauses -= 1
            if _pauses == 0 and _resume:
                gc.enable()


# -- value forms ----------------------------------------------------------------------------------------

_EXACT_INT = 10**27  # ints below this are exact in a 28-digit Decimal context, so str() is canonical


def fast_canonical(value: Any) -> Any:
    """Exactly ``canonical(value)``, without its work for the two commonest key types (text ids, ints)."""
    kind = type(value)
    if kind is str:
        # a number or an instant starts with a digit, a sign, a dot or a space: a letter rules both out
        if value[:1].isalpha():
            return value
    elif kind is int and -_EXACT_INT < value < _EXACT_INT:
        return ("n", str(value))
    return canonical(value)


def keys_of(records: list[Record], fields: list[str]) -> list[Any]:
    """``[key_of(record, fields) for record in records]``, made cheap for a million records."""
    columns = [_canonical_column(_column(records, field)) for field in fields]
    if len(columns) == 1:
        column = columns[0]
        return column if isinstance(column, list) else list(column)  # a fresh list already: no copy
    return list(zip(*columns, strict=True))


def _canonical_column(values: list[Any]) -> Iterable[Any]:
    """``map(canonical, values)``, in C passes when the column is all text ids or all ints."""
    types = set(map(type, values))
    if types == {str}:
        try:
            if all(map(str.isalpha, map(itemgetter(0), values))):
                return values  # a letter first: neither a number nor an instant, canonical as it is
        except IndexError:  # an empty string
            pass
    elif types == {int} and min(values) > -_EXACT_INT and max(values) < _EXACT_INT:
        return zip(repeat("n"), map(str, values))
    return map(fast_canonical, values)


def display_keys(records: list[Record], fields: list[str]) -> list[Any]:
    """``[display_key(record, fields) for record in records]``, made cheap for many records."""
    if len(fields) != 1:
        return [display_key(record, fields) for record in records]
    return list(map(_shown, _column(records, fields[0])))


def _shown(value: Any) -> Any:
    return value if type(value) in _PLAIN else jsonable(value)


_PLAIN = frozenset({str, int, float, bool, type(None)})


def _column(records: list[Record], field: str) -> list[Any]:
    try:
        return list(map(itemgetter(field), records))
    except KeyError:
        return [record.get(field) for record in records]


def _norm_str(value: str) -> Any:
    if value[:1].isalpha():
        return value
    if ":" in value:  # an instant has hh:mm, a number never has a colon
        instant = as_instant(value)
        return value if instant is None else instant
    number = as_number(value)
    return value if number is None else number


def _norm_datetime(value: datetime) -> Any:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _norm_other(value: Any) -> Any:
    if isinstance(value, bool):
        return ("bool", value)  # so that True never equals the number 1 here
    number = as_number(value)
    if number is not None:
        return number
    instant = as_instant(value)
    return value if instant is None else instant


_NORM: dict[type, Callable[[Any], Any]] = {
    str: _norm_str,
    int: lambda value: value,
    float: lambda value: Decimal(repr(value)),
    Decimal: lambda value: value,
    datetime: _norm_datetime,
    type(None): lambda value: None,
}


def norm(value: Any) -> Any:
    """A comparable form: numbers as Decimal/int, instants as aware datetimes, other values as they are.

    ``norm(a) == norm(b)`` implies ``equal(a, b)``; it is only a faster way to say yes.
    """
    return _NORM.get(type(value), _norm_other)(value)


def same(expected: Any, actual: Any, tolerance: float | timedelta | None) -> bool:
    """Whether two field values match: equal as Python sees them (so ``True == 1``) or by ``equal``."""
    try:
        if expected == actual or norm(expected) == norm(actual):
            return True
        return equal(expected, actual, tolerance)
    except ArithmeticError:  # NaN on either side
        return expected != expected and actual != actual


_NUMBERS = frozenset({int, float, Decimal})


def _as_decimals(values: list[Any], types: set[type]) -> Iterable[Any]:
    if types <= {int, Decimal}:
        return values  # Python compares these exactly already
    return map(Decimal, map(str, values))  # str(float) is repr(float): as as_number reads a float


def _as_instants(values: list[Any], types: set[type]) -> Iterable[Any]:
    if types == {datetime}:
        return values
    # ISO text, in the shape _INSTANT requires where fromisoformat is more lenient (dates alone, hours alone):
    # the separators at 4, 7, 10 and 13 (YYYY-MM-DDTHH:), read in one pass as one slice per value
    if not set(map(itemgetter(_SEPARATORS), values)) <= _ISO_SEPARATORS:
        raise ValueError("not ISO instants")
    return map(datetime.fromisoformat, values)


_SEPARATORS = slice(4, 14, 3)
_ISO_SEPARATORS = frozenset({"--T:", "-- :"})


def _conversion(types: set[type]) -> Callable[[list[Any], set[type]], Iterable[Any]] | None:
    if types <= _NUMBERS:
        return _as_decimals
    if types in ({datetime}, {str}):
        return _as_instants
    return None


def differing(wants: list[Any], gots: list[Any]) -> list[int]:
    """The positions where two columns of values differ in Python's eyes, after a C-speed conversion.

    Typed records (``Decimal``, ``datetime``) are often compared with JSON snapshots (``float`` or ``int``,
    ISO text). When the first pair differs in type and both columns are numbers, or instants against ISO
    text, the columns are converted in one pass (numbers to Decimal as ``as_number`` reads them, text to
    datetime) so that values ``equal`` accepts compare equal. Equal here implies ``same``; the positions
    returned still need the value-by-value rules.
    """
    if wants and gots and type(wants[0]) is not type(gots[0]):
        want_types, got_types = set(map(type, wants)), set(map(type, gots))
        left, right = _conversion(want_types), _conversion(got_types)
        if left is not None and left is right and want_types != got_types:
            try:
                return list(compress(count(), map(ne, left(wants, want_types), right(gots, got_types))))
            except (ArithmeticError, ValueError, IndexError, TypeError):
                pass
    return list(compress(count(), map(ne, wants, gots)))


# -- wording --------------------------------------------------------------------------------------------


def show(value: Any) -> str:
    """A JSON-able value as a reason shows it: text without quotes, anything else as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return "(" + ", ".join(f"{k}={show(v)}" for k, v in value.items()) + ")"
    return json.dumps(value, ensure_ascii=False, default=str)


def show_value(value: Any) -> str:
    """A JSON-able field value as a reason shows it: JSON, so text is quoted and None reads null."""
    return json.dumps(value, ensure_ascii=False, default=str)


def listing(total: int, first: Iterable[str], sep: str = ", ") -> str:
    """``first`` (at most SHOWN of them) joined, then "and N more" for the rest of ``total``."""
    shown = [item for item, _ in zip(first, range(SHOWN), strict=False)]
    more = total - len(shown)
    return sep.join(shown) + (f" and {more} more" if more > 0 else "")


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    return f"{count} {singular if count == 1 else (plural_form or singular + 's')}"
