"""What a compared column is on each side, and the one text form both databases render it in.

Equal data must hash equal in any two engines, so every compared value is first turned into text the same way
on both sides (``Form``):

- ``integer``: integers and booleans as decimal digits (``true`` is ``1``);
- ``fixed``: exact decimals rounded half away from zero to a scale (the smaller of the two columns');
- ``float``: when either side is floating-point, both as the integer ``floor(x * 10**digits + 0.5)`` computed in
  IEEE doubles (``digits``: the smaller scale, a float counting as ``FLOAT_SCALE``). Every engine does the same
  double arithmetic, so the result is the same integer everywhere, and it costs a tenth of a decimal rounding;
- ``time``: instants as the integer count of 10**-digits seconds since 1970 in UTC (``digits``: the smaller of
  the two columns' fractional digits), floored, never rounded, as MariaDB truncates a finer value stored in a
  coarser column; a timestamp without a zone is taken as UTC, a date as its midnight;
- ``date``: ``YYYY-MM-DD``; ``text``: anything else, as its text.

Two columns of kinds that do not go together (text against a number) are both compared as text: ``'42'`` still
equals ``42``. Integers rather than formatted text for floats and instants: in PostgreSQL and MariaDB, formatting
was most of a row's cost (benchmark B4).

The kinds come from SQLAlchemy's reflection of each table, so one mapping covers every dialect it reflects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sqlalchemy import types as sa

Kind = Literal["integer", "boolean", "decimal", "float", "timestamp", "timestamptz", "date", "text"]
FormName = Literal["integer", "fixed", "float", "time", "date", "text"]

#: digits after the point a floating-point column is compared to when nothing finer is asked
FLOAT_SCALE = 6
#: fractional digits of a timestamp whose column does not say (SQLite keeps text; most engines keep microseconds)
TIME_DIGITS = 6


@dataclass(frozen=True)
class Column:
    """A reflected column: its name as the database spells it, its kind, and the scale (numbers) or
    fractional digits (timestamps) its type declares, when it declares one."""

    name: str
    kind: Kind
    digits: int | None = None


@dataclass(frozen=True)
class Form:
    """How both sides render one compared field: ``fixed`` and ``float`` to ``digits`` decimals, ``time``
    to ``digits`` fractional digits of the second."""

    name: FormName
    digits: int = 0


def kind_of(name: str, column_type: sa.TypeEngine[object]) -> Column:
    """The kind of a reflected column type (dialect types subclass the generic ones SQLAlchemy reflects)."""
    if isinstance(column_type, sa.Boolean):
        return Column(name, "boolean")
    if isinstance(column_type, sa.Integer):
        return Column(name, "integer")
    if isinstance(column_type, sa.Float):
        return Column(name, "float")
    if isinstance(column_type, sa.Numeric):
        scale = column_type.scale
        return Column(name, "integer" if scale == 0 else "decimal", scale)
    if isinstance(column_type, sa.DateTime):
        digits = getattr(column_type, "fsp", None)
        if digits is None:
            digits = getattr(column_type, "precision", None)
        return Column(name, "timestamptz" if column_type.timezone else "timestamp", digits)
    if isinstance(column_type, sa.Date):
        return Column(name, "date")
    return Column(name, "text")


_NUMBERS = frozenset({"integer", "boolean", "decimal", "float"})
_INSTANTS = frozenset({"timestamp", "timestamptz"})


def common_form(left: Column, right: Column, digits: int | None = None) -> Form:
    """The form both sides render a field in; ``digits`` (a scale, or fractional seconds) overrides the one
    the column types give."""
    kinds = {left.kind, right.kind}
    if kinds <= {"integer", "boolean"}:
        return Form("integer")
    if kinds <= _NUMBERS:
        scales = [_scale(column) for column in (left, right) if column.kind in ("decimal", "float")]
        return Form("float" if "float" in kinds else "fixed", min(scales) if digits is None else digits)
    if kinds <= _INSTANTS | {"date"} and kinds & _INSTANTS:
        declared = [c.digits for c in (left, right) if c.kind in _INSTANTS and c.digits is not None]
        chosen = min(declared, default=TIME_DIGITS) if digits is None else digits
        return Form("time", max(0, min(chosen, TIME_DIGITS)))
    if kinds == {"date"}:
        return Form("date")
    return Form("text")


def _scale(column: Column) -> int:
    if column.kind == "float" or column.digits is None:
        return FLOAT_SCALE
    return column.digits
