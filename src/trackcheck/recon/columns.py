"""What a compared column is on each side, and the one text form both databases render it in.

Equal data must hash equal in any two engines, so every compared value is first turned into text the same way
on both sides (``Form``): integers and booleans as decimal digits (``true`` is ``1``), other numbers rounded to
a fixed scale (the smaller of the two columns' scales; a float counts as ``FLOAT_SCALE`` digits), instants in
UTC at a number of fractional digits (the smaller of the two columns'; a timestamp without a zone is taken as
UTC, truncated, never rounded, as MariaDB stores a finer value in a coarser column), dates as ``YYYY-MM-DD``,
anything else as its text. Two columns of kinds that do not go together (text against a number) are both
compared as text: ``'42'`` still equals ``42``.

The kinds come from SQLAlchemy's reflection of each table, so one mapping covers every dialect it reflects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sqlalchemy import types as sa

Kind = Literal["integer", "boolean", "decimal", "float", "timestamp", "timestamptz", "date", "text"]
FormName = Literal["integer", "fixed", "time", "date", "text"]

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
    """How both sides render one compared field: ``fixed`` rounds to ``digits`` decimals, ``time`` keeps
    ``digits`` fractional digits of the second."""

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
        return Form("fixed", min(scales) if digits is None else digits)
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
