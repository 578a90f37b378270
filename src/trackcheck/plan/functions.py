"""The functions a plan's JMESPath (``select``, ``records``) may call besides JMESPath's own: decoding, case,
units and time.

Tracking data rarely arrives as plain fields: Snowplow's ``ue_px`` is base64url JSON, logs hold JSON in a
text column, one system counts cents where another has decimals, one writes milliseconds since the epoch
where another writes ISO text. These functions turn each into the value a check compares::

    from_json(base64_decode(ue_px)).data.data.amount
    div(to_number(amount_cents), `100`)
    trunc_time(parse_time(ts), 'second')

**A value a function cannot use gives null, never an error.** Not JSON, not base64, not a time, not a
number, the wrong type: the result is ``null`` for that record. One malformed event (a poison record) must
not fail the poll of every run reading the same source; the check then reports that record's field as
null, and a field that is null in every record is named on the stage (``compare.evaluate_stage``).

Everything here is pure (no I/O). ``compile_path`` parses an expression, ``check_calls`` finds an unknown
function or a wrong number of arguments when a plan loads (JMESPath itself only finds them when it
searches), ``OPTIONS`` and ``interpreter`` evaluate with these functions. See docs/plans.md.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import json
import math
import re
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

import jmespath
from jmespath.exceptions import ArityError, ParseError
from jmespath.functions import Functions, signature
from jmespath.parser import ParsedResult, Parser
from jmespath.visitor import TreeInterpreter

__all__ = [
    "OPTIONS",
    "TIME_UNITS",
    "PlanFunctions",
    "arity",
    "check_calls",
    "compile_path",
    "function_names",
    "interpreter",
]

#: what ``trunc_time`` cuts a time to
TIME_UNITS = ("second", "minute", "hour", "day")
#: the largest power of ten a number is worked with (as in compare/values.py): beyond it, no quantity
_MAX_EXPONENT = 400
_NUMBER = re.compile(r"^\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*$")
_BASE64 = re.compile(r"^[A-Za-z0-9+/_-]*={0,2}$")
_URL_SAFE = str.maketrans("-_", "+/")
#: epoch numbers at or above these are milliseconds, then microseconds (10^11 s is the year 5138)
_MILLISECONDS = 10**11
_MICROSECONDS = 10**14
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ANY: dict[str, Any] = {"types": []}
#: an argument that may be left out (only at the end): ``_validate_arguments`` below knows this key
_OPTIONAL: dict[str, Any] = {"types": [], "optional": True}


class PlanFunctions(Functions):
    """JMESPath's functions plus trackcheck's. Each of these takes any type and gives null for a value it
    cannot use (see the module docstring); JMESPath's own still raise on a wrong type."""

    @signature(_ANY)
    def _func_from_json(self, text: Any) -> Any:
        """JSON text → its value; an object or array already decoded (a ``jsonb`` column) as it is."""
        if isinstance(text, dict | list):
            return text
        if isinstance(text, bytes):
            text = _utf8(text)
        if not isinstance(text, str):
            return None
        try:
            return json.loads(text, parse_constant=_not_json)
        except (ValueError, RecursionError):
            return None

    @signature(_ANY)
    def _func_base64_decode(self, text: Any) -> Any:
        """Base64 (standard or URL-safe alphabet, padding optional) → the UTF-8 text it encodes."""
        if not isinstance(text, str):
            return None
        compact = "".join(text.split())
        if not _BASE64.match(compact):
            return None
        compact = compact.rstrip("=").translate(_URL_SAFE)
        try:
            decoded = base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
        except (binascii.Error, ValueError):
            return None
        return _utf8(decoded)

    @signature(_ANY)
    def _func_lower(self, text: Any) -> Any:
        return text.lower() if isinstance(text, str) else None

    @signature(_ANY)
    def _func_upper(self, text: Any) -> Any:
        return text.upper() if isinstance(text, str) else None

    @signature(_ANY)
    def _func_trim(self, text: Any) -> Any:
        """Text without its leading and trailing whitespace."""
        return text.strip() if isinstance(text, str) else None

    @signature(_ANY, _ANY)
    def _func_round(self, number: Any, digits: Any) -> Any:
        """``number`` rounded to ``digits`` decimals (negative: tens, hundreds...), halves away from zero
        (money rounds that way; Python's ``round`` would make 2.675 → 2.67 through binary floats)."""
        value, places = _decimal(number), _decimal(digits)
        if value is None or places is None or places != places.to_integral() or abs(places) > _MAX_EXPONENT:
            return None
        try:
            return _number(value.quantize(Decimal(1).scaleb(-int(places)), rounding=ROUND_HALF_UP))
        except InvalidOperation:
            return None

    @signature(_ANY, _ANY)
    def _func_mul(self, number: Any, factor: Any) -> Any:
        """``number * factor``, in decimal arithmetic: ``mul(`19.99`, `100`)`` is 1999, not 1998.9999999999998."""
        left, right = _decimal(number), _decimal(factor)
        return None if left is None or right is None else _number(left * right)

    @signature(_ANY, _ANY)
    def _func_div(self, number: Any, divisor: Any) -> Any:
        """``number / divisor`` in decimal arithmetic (cents → decimals: ``div(amount, `100`)``); null for
        a zero divisor."""
        left, right = _decimal(number), _decimal(divisor)
        if left is None or right is None or right == 0:
            return None
        return _number(left / right)

    @signature(_ANY, _OPTIONAL)
    def _func_parse_time(self, value: Any, fmt: Any = None) -> Any:
        """A time as ISO 8601 text in UTC (``2026-11-24T10:00:00Z``). Without ``fmt``: ISO 8601 text (a
        naive time is UTC), epoch seconds, milliseconds or microseconds (a number), a database's datetime.
        With ``fmt``, text is read by ``strptime`` with it."""
        if fmt is not None and not isinstance(fmt, str):
            return None
        moment = _strptime(value, fmt) if fmt is not None and isinstance(value, str) else _instant(value)
        return None if moment is None else _iso(moment)

    @signature(_ANY, _ANY)
    def _func_trunc_time(self, value: Any, unit: Any) -> Any:
        """A time (anything ``parse_time`` reads without a format) cut to its ``unit``, as ISO 8601 UTC."""
        moment = _instant(value)
        if moment is None or unit not in TIME_UNITS:
            return None
        if unit == "day":
            moment = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        elif unit == "hour":
            moment = moment.replace(minute=0, second=0, microsecond=0)
        elif unit == "minute":
            moment = moment.replace(second=0, microsecond=0)
        else:
            moment = moment.replace(microsecond=0)
        return _iso(moment)

    @signature(_ANY)
    def _func_to_unix(self, value: Any) -> Any:
        """A time (anything ``parse_time`` reads without a format) as seconds since the epoch: a whole
        number, or with a fraction when the time has one."""
        moment = _instant(value)
        if moment is None:
            return None
        delta = moment - _EPOCH
        return _number(Decimal(delta.days * 86_400 + delta.seconds) + Decimal(delta.microseconds).scaleb(-6))

    def _validate_arguments(self, args: Any, signature: Any, function_name: str) -> Any:
        """JMESPath's check, plus optional trailing arguments (``{"optional": True}``)."""
        low, high = arity(signature)
        if high is None or low == high:
            return super()._validate_arguments(args, signature, function_name)
        if not low <= len(args) <= high:
            raise ArityError(high if len(args) > high else low, len(args), function_name)
        return self._type_check(args, signature[: len(args)], function_name)


#: evaluate with these functions: ``compile_path(expression).search(value, options=OPTIONS)``
OPTIONS = jmespath.Options(custom_functions=PlanFunctions())


def compile_path(expression: str) -> ParsedResult:
    """``expression`` parsed (and cached by JMESPath). Raises ``jmespath.exceptions.ParseError`` for text
    that is not JMESPath, nesting too deep to parse included; unknown functions are ``check_calls``'s."""
    try:
        return Parser().parse(expression)
    except RecursionError:
        raise ParseError(0, expression[:1], "nesting", "the expression is nested too deeply") from None


def interpreter() -> TreeInterpreter:
    """One evaluator with ``OPTIONS``, for searching many records: ``visit(parsed.parsed, record)`` is what
    ``parsed.search(record, options=OPTIONS)`` does, without building a new evaluator per call (which is
    two thirds of the time of a ``select`` over small records)."""
    return TreeInterpreter(OPTIONS)


def function_names() -> list[str]:
    """Every function a plan expression may call: JMESPath's and trackcheck's."""
    return sorted(PlanFunctions.FUNCTION_TABLE)


def arity(spec: Any) -> tuple[int, int | None]:
    """The fewest and most arguments a function signature takes (None: no limit, for a variadic one)."""
    if spec and spec[-1].get("variadic"):
        return len(spec), None
    return sum(1 for argument in spec if not argument.get("optional")), len(spec)


def check_calls(parsed: ParsedResult) -> str | None:
    """The first function call of ``parsed`` that could never work, said for a user: an unknown function
    (with the closest known names), a wrong number of arguments, or a ``trunc_time`` unit that is not one.
    None when every call is fine. JMESPath itself only finds these when it searches a value."""
    table = PlanFunctions.FUNCTION_TABLE
    pending: list[Any] = [parsed.parsed]
    while pending:
        node = pending.pop()
        if not isinstance(node, dict):
            continue  # a slice's bounds are numbers
        children = node.get("children") or []
        pending.extend(reversed(children))
        if node.get("type") != "function_expression":
            continue
        name = node["value"]
        if name not in table:
            close = difflib.get_close_matches(name, list(table), n=3)
            hint = f"did you mean {' or '.join(c + '()' for c in close)}?" if close else "see docs/plans.md"
            return f"unknown function {name}(); {hint}"
        low, high = arity(table[name]["signature"])
        if len(children) < low or (high is not None and len(children) > high):
            return f"{name}() takes {_arguments(low, high)}, got {len(children)}"
        if name == "trunc_time":
            unit = children[1]
            if unit.get("type") == "literal" and unit.get("value") not in TIME_UNITS:
                return f"trunc_time() unit {unit.get('value')!r} is not one of {', '.join(TIME_UNITS)}"
    return None


def _arguments(low: int, high: int | None) -> str:
    if high is None:
        return f"at least {low} argument{'s' if low != 1 else ''}"
    if low == high:
        return f"{low} argument{'s' if low != 1 else ''}"
    return f"{low} to {high} arguments" if high - low > 1 else f"{low} or {high} arguments"


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def _utf8(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _decimal(value: Any) -> Decimal | None:
    """A number, or text that reads as one (a CSV's ``"25.50"``), as a Decimal; None for anything else.

    The same reading as ``compare.values.as_number``, kept here: ``plan/`` imports nothing of ``compare/``
    (whose checks import the plan model), or loading a plan would be a circular import."""
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
        number = Decimal(value.strip())
    if number is None or not number.is_finite() or abs(number.adjusted()) > _MAX_EXPONENT:
        return None
    return number


def _number(value: Decimal) -> int | float | None:
    """A JSON number: an int when whole, else the nearest float; None beyond what a float holds."""
    if not value.is_finite() or abs(value.adjusted()) > _MAX_EXPONENT:
        return None
    if value == value.to_integral_value():
        return int(value)
    result = float(value)
    return result if math.isfinite(result) else None


def _instant(value: Any) -> datetime | None:
    """The instant ``value`` stands for, aware and in UTC; naive times are UTC. None when it is no time."""
    moment: datetime
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
    elif isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        return _epoch(value)
    else:
        return None
    return _utc(moment)


def _epoch(value: int | float | Decimal) -> datetime | None:
    number = _decimal(value)
    if number is None:
        return None
    if abs(number) >= _MICROSECONDS:
        number /= 10**6
    elif abs(number) >= _MILLISECONDS:
        number /= 10**3
    try:
        whole = int(number)
        return _EPOCH + timedelta(seconds=whole, microseconds=int((number - whole) * 10**6))
    except (OverflowError, ArithmeticError):
        return None


def _strptime(text: str, fmt: str) -> datetime | None:
    try:
        return _utc(datetime.strptime(text.strip(), fmt))
    except ValueError:
        return None


def _utc(moment: datetime) -> datetime | None:
    try:
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except OverflowError:  # a time a few hours from datetime's limits, moved into UTC
        return None


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")
