"""The SQL each engine computes checksums with: the text form of a value, MD5, two 32-bit numbers from it.

A row's checksum is the MD5 of its fields' text forms (``columns.Form``), each written ``=value`` (or ``~``
for NULL, so that NULL and the empty text differ) and joined by the unit separator U+001F. A segment's
checksum is its row count and the sums of two 32-bit numbers read from the MD5 (its hex digits 1-8 and 9-16):
sums of 32-bit numbers fit every engine's 64-bit integers up to two billion rows, where one 64-bit number per
row would overflow SQLite's ``sum`` (it raises) and need ``numeric`` elsewhere. The same text gives the same MD5
everywhere, so equal segments have equal checksums whatever engine holds them.

PostgreSQL, MariaDB/MySQL and DuckDB compute all of it in SQL. SQLite has no MD5 and no fixed-point numbers:
trackcheck registers Python functions on its connection (``tc_text``, ``tc_md5``, ``tc_hex32``), which
``python_text`` implements the way the other engines render (the cross-engine tests hold them to it).
ClickHouse is not among them yet: ``dialect_for`` refuses it with a clear error.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, ClassVar

from sqlalchemy import bindparam, inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.sql.elements import TextClause
from sqlalchemy.types import NULLTYPE

from trackcheck.compare.values import as_instant
from trackcheck.recon.columns import Column, Form, Kind, kind_of

#: joins the fields of a row before it is hashed: U+001F, the unit separator, which no tracking field holds
SEPARATOR = 31
EPOCH = datetime(1970, 1, 1)
_DESCRIBED = re.compile(r"^(?P<base>[A-Z_ ]+?)\s*(\((?P<a>\d+)(,\s*(?P<b>\d+))?\))?$")


def boolean_text(expr: str) -> str:
    """``1``, ``0``, or NULL for NULL (a bare ``ELSE '0'`` would make NULL false)."""
    return f"(CASE WHEN {expr} THEN '1' WHEN NOT {expr} THEN '0' END)"


def floor_divided(expr: str, digits: int, divide: str) -> str:
    """Microseconds ``expr`` as whole units of 10**-digits seconds, floored (before 1970 too), in integers."""
    if digits >= 6:
        return expr
    unit = 10 ** (6 - digits)
    return f"(({expr}) - ((({expr}) % {unit}) + {unit}) % {unit}) {divide} {unit}"


class Dialect:
    """One engine's spelling of the checksum SQL. Expressions are SQL text built from quoted identifiers and
    integers trackcheck computed; values a user gave are never part of them."""

    name: ClassVar[str]
    #: the engine's integer division of non-negative integers
    divide: ClassVar[str] = "/"

    @contextmanager
    def prepared(self, connection: Connection) -> Iterator[None]:
        """The session settings (or functions) the checksum SQL needs, for the statements run inside; a pooled
        connection is given back as it was, since the source's stages read through the same pool."""
        yield

    def columns(self, connection: Connection, dataset: str, table: str | None) -> dict[str, Column]:
        """The columns of a ``table`` (schema-qualified or not) from SQLAlchemy's reflection, or of a query's
        ``dataset`` from what the driver says of its result (``described``), by name."""
        if table is None:
            result = connection.execute(self.fenced(f"SELECT * FROM {dataset} AS tc_t WHERE 1 = 0"))
            try:
                return {str(d[0]): self.described(connection, d) for d in result.cursor.description}
            finally:
                result.close()
        schema, _, name = table.rpartition(".")
        reflected = inspect(connection).get_columns(name, schema=schema or None)
        return {c["name"]: kind_of(c["name"], c["type"]) for c in reflected}

    def fenced(self, sql: str) -> TextClause:
        """A statement that binds nothing else, made to run as exactly one statement where the driver needs a
        bound parameter for that (see ``Postgres``)."""
        return text(sql)

    def described(self, connection: Connection, description: Any) -> Column:
        """A result column from the driver's cursor description: a text column unless the dialect knows more."""
        return Column(str(description[0]), "text")

    def text_of(self, expr: str, column: Column, form: Form) -> str:
        """SQL rendering ``expr`` (a ``column``) in ``form``; NULL stays NULL."""
        raise NotImplementedError

    def joined(self, parts: list[str]) -> str:
        """The text of a row: each part as ``=value`` or ``~`` (NULL), joined by the separator."""
        raise NotImplementedError

    def md5(self, expr: str) -> str:
        return f"md5({expr})"

    def hex32(self, expr: str, start: int) -> str:
        """The 32-bit number that the 8 hex digits of ``expr`` from ``start`` (1-based) spell."""
        raise NotImplementedError

    def hash64(self, expr: str) -> str:
        """A 64-bit number from the first 16 hex digits of ``expr`` (signed or not: sums are compared modulo
        2**64, where both are the same)."""
        raise NotImplementedError

    def sum64(self, expr: str) -> str:
        """The sum of ``hash64`` values over a group, exact or modulo 2**64."""
        return f"sum({expr})"

    def epoch_seconds(self, expr: str, column: Column) -> str:
        """Whole seconds from 1970-01-01 UTC to ``expr`` (a timestamp or a date), floored."""
        raise NotImplementedError

    def instant(self, seconds: int, column: Column) -> str | None:
        """A literal of ``column``'s type for that many seconds after 1970 (UTC), to compare the column with so
        that its index serves the range; None when the engine compares its instants some other way."""
        moment = (EPOCH + timedelta(seconds=seconds)).strftime("%Y-%m-%d %H:%M:%S")
        return f"TIMESTAMPTZ '{moment}+00'" if column.kind == "timestamptz" else f"TIMESTAMP '{moment}'"


class Postgres(Dialect):
    """PostgreSQL, through psycopg 3: a query's column types are the OIDs of its result, named by the driver."""

    name = "postgresql"
    _KINDS: ClassVar[dict[str, Kind]] = {
        "int2": "integer", "int4": "integer", "int8": "integer", "oid": "integer", "numeric": "decimal",
        "float4": "float", "float8": "float", "bool": "boolean", "timestamp": "timestamp",
        "timestamptz": "timestamptz", "date": "date",
    }  # fmt: skip

    def fenced(self, sql: str) -> TextClause:
        """psycopg sends a statement without parameters by the simple query protocol, which runs every statement
        in it; a bound NULL (``LIMIT NULL``: no limit) makes it the extended protocol, one statement only, as
        ``sources.sql.build_statement`` does behind the plan's query check."""
        return text(sql + " LIMIT :tc_limit").bindparams(bindparam("tc_limit", value=None, type_=NULLTYPE))

    def described(self, connection: Connection, description: Any) -> Column:
        info = connection.connection.driver_connection.adapters.types.get(description.type_code)  # type: ignore[union-attr]
        kind = self._KINDS.get(info.name if info is not None else "", "text")
        if kind == "decimal":
            return Column(description.name, "integer" if description.scale == 0 else kind, description.scale)
        return Column(description.name, kind, description.precision if kind.startswith("timestamp") else None)

    def text_of(self, expr: str, column: Column, form: Form) -> str:
        if form.name == "integer":
            return boolean_text(expr) if column.kind == "boolean" else f"({expr})::text"
        if form.name == "fixed":
            return f"round(({expr})::numeric, {form.digits})::text"
        if form.name == "float":
            return f"floor(({expr})::float8 * {10**form.digits}::float8 + 0.5)::bigint::text"
        if form.name == "time":
            moment = f"({expr})::timestamp" if column.kind == "date" else expr
            # date_part's double holds the microseconds of any instant of 1677-2262 to well within 0.5 µs
            micros = f"(date_part('epoch', {moment}) * 1000000)::bigint"
            return f"{floor_divided(micros, form.digits, '/')}::text"
        if form.name == "date":
            return f"to_char({expr}, 'YYYY-MM-DD')"
        return f"({expr})::text"

    def joined(self, parts: list[str]) -> str:
        return "concat_ws(chr(31), " + ", ".join(f"coalesce('=' || {p}, '~')" for p in parts) + ")"

    def hex32(self, expr: str, start: int) -> str:
        return f"('x' || substr({expr}, {start}, 8))::bit(32)::bigint"

    def hash64(self, expr: str) -> str:
        return f"('x' || left({expr}, 16))::bit(64)::bigint"

    def epoch_seconds(self, expr: str, column: Column) -> str:
        moment = f"({expr})::timestamp" if column.kind == "date" else expr
        return f"floor(date_part('epoch', {moment}))::bigint"


class MariaDB(Dialect):
    """MariaDB and MySQL. ``TIMESTAMP`` columns are shown in the session's zone: ``prepare`` sets UTC."""

    name = "mysql"
    divide = "DIV"
    #: PyMySQL's FIELD_TYPE codes; a TIMESTAMP is read in the session's UTC, so it is a timestamp like DATETIME
    _KINDS: ClassVar[dict[int, Kind]] = {
        1: "integer", 2: "integer", 3: "integer", 8: "integer", 9: "integer", 13: "integer", 0: "decimal",
        246: "decimal", 4: "float", 5: "float", 7: "timestamp", 12: "timestamp", 10: "date", 14: "date",
    }  # fmt: skip

    def described(self, connection: Connection, description: Any) -> Column:
        name, code, scale = str(description[0]), int(description[1]), description[5]
        kind = self._KINDS.get(code, "text")
        if kind == "decimal":
            return Column(name, "integer" if scale == 0 else kind, scale)
        return Column(name, kind, scale if kind == "timestamp" else None)

    @contextmanager
    def prepared(self, connection: Connection) -> Iterator[None]:
        connection.exec_driver_sql("SET time_zone = '+00:00'")
        try:
            yield
        finally:
            with suppress(SQLAlchemyError):  # a broken connection is thrown away by the pool anyway
                connection.exec_driver_sql("SET time_zone = DEFAULT")

    def text_of(self, expr: str, column: Column, form: Form) -> str:
        if form.name == "integer":
            return f"CAST({expr} AS CHAR)"
        if form.name == "fixed":
            return f"CAST(CAST({expr} AS DECIMAL(65, {form.digits})) AS CHAR)"
        if form.name == "float":
            return f"CAST(CAST(FLOOR(CAST({expr} AS DOUBLE) * {10**form.digits}e0 + 0.5) AS SIGNED) AS CHAR)"
        if form.name == "time":
            micros = f"TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', {expr})"
            return f"CAST({floor_divided(micros, form.digits, 'DIV')} AS CHAR)"
        if form.name == "date":
            return f"DATE_FORMAT({expr}, '%Y-%m-%d')"
        return f"CONVERT({expr} USING utf8mb4)"

    def joined(self, parts: list[str]) -> str:
        parts = [f"COALESCE(CONCAT('=', {p}), '~')" for p in parts]
        return f"CONCAT_WS(CHAR({SEPARATOR} USING utf8mb4), {', '.join(parts)})"

    def md5(self, expr: str) -> str:
        return f"MD5({expr})"

    def hex32(self, expr: str, start: int) -> str:
        return f"CAST(CONV(SUBSTRING({expr}, {start}, 8), 16, 10) AS UNSIGNED)"

    def hash64(self, expr: str) -> str:
        return f"CAST(CONV(SUBSTRING({expr}, 1, 16), 16, 10) AS UNSIGNED)"

    def epoch_seconds(self, expr: str, column: Column) -> str:
        return f"FLOOR(TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', {expr}) / 1000000)"

    def instant(self, seconds: int, column: Column) -> str | None:
        return f"'{(EPOCH + timedelta(seconds=seconds)).strftime('%Y-%m-%d %H:%M:%S')}'"


class DuckDB(Dialect):
    name = "duckdb"
    divide = "//"

    def columns(self, connection: Connection, dataset: str, table: str | None) -> dict[str, Column]:
        """From ``DESCRIBE``: duckdb-engine's reflection queries catalog tables DuckDB does not have."""
        found: dict[str, Column] = {}
        for name, described, *_ in connection.exec_driver_sql(f"DESCRIBE SELECT * FROM {dataset}"):
            found[name] = _described(name, str(described))
        return found

    def text_of(self, expr: str, column: Column, form: Form) -> str:
        if form.name == "integer":
            if column.kind == "boolean":
                return boolean_text(expr)
            return f"CAST({expr} AS VARCHAR)"
        if form.name == "fixed":
            return f"CAST(CAST({expr} AS DECIMAL(38, {form.digits})) AS VARCHAR)"
        if form.name == "float":
            scaled = f"CAST({expr} AS DOUBLE) * CAST({10**form.digits} AS DOUBLE) + 0.5"
            return f"CAST(CAST(floor({scaled}) AS BIGINT) AS VARCHAR)"
        if form.name == "time":
            moment = expr if column.kind == "timestamptz" else f"CAST({expr} AS TIMESTAMP)"
            return f"CAST({floor_divided(f'epoch_us({moment})', form.digits, '//')} AS VARCHAR)"
        if form.name == "date":
            return f"strftime({expr}, '%Y-%m-%d')"
        return f"CAST({expr} AS VARCHAR)"

    def joined(self, parts: list[str]) -> str:
        return f"concat_ws(chr({SEPARATOR}), " + ", ".join(f"coalesce('=' || {p}, '~')" for p in parts) + ")"

    def hex32(self, expr: str, start: int) -> str:
        return f"CAST('0x' || substr({expr}, {start}, 8) AS UBIGINT)"

    def hash64(self, expr: str) -> str:
        return f"CAST('0x' || substr({expr}, 1, 16) AS UBIGINT)"

    def epoch_seconds(self, expr: str, column: Column) -> str:
        moment = expr if column.kind == "timestamptz" else f"CAST({expr} AS TIMESTAMP)"
        return floor_divided(f"epoch_us({moment})", 0, "//")


class SQLite(Dialect):
    """SQLite, through Python functions registered on the connection (``python_text``). A query's result
    columns have no types: their kinds are read from the values of its first row."""

    name = "sqlite"

    def columns(self, connection: Connection, dataset: str, table: str | None) -> dict[str, Column]:
        if table is not None:
            return super().columns(connection, dataset, table)
        result = connection.execute(text(f"SELECT * FROM {dataset} AS tc_t LIMIT 1"))
        names = [str(d[0]) for d in result.cursor.description]
        first = result.first()
        values = list(first) if first is not None else [None] * len(names)
        return {name: _sampled(name, value) for name, value in zip(names, values, strict=True)}

    @contextmanager
    def prepared(self, connection: Connection) -> Iterator[None]:
        """Registers the functions (kept by the connection: named ``tc_*``, they shadow nothing)."""
        raw: Any = connection.connection.driver_connection
        raw.create_function("tc_text", 3, python_text, deterministic=True)
        raw.create_function("tc_md5", 1, _md5, deterministic=True)
        raw.create_function("tc_hex32", 2, _hex32, deterministic=True)
        raw.create_function("tc_hash64", 1, _hash64, deterministic=True)
        raw.create_aggregate("tc_sum64", 1, _Sum64)
        raw.create_function("tc_epoch", 1, _epoch, deterministic=True)
        yield

    def text_of(self, expr: str, column: Column, form: Form) -> str:
        return f"tc_text({expr}, '{form.name}', {form.digits})"

    def joined(self, parts: list[str]) -> str:
        return f" || char({SEPARATOR}) || ".join(f"coalesce('=' || {p}, '~')" for p in parts)

    def md5(self, expr: str) -> str:
        return f"tc_md5({expr})"

    def hex32(self, expr: str, start: int) -> str:
        return f"tc_hex32({expr}, {start})"

    def hash64(self, expr: str) -> str:
        return f"tc_hash64({expr})"

    def sum64(self, expr: str) -> str:
        return f"tc_sum64({expr})"

    def epoch_seconds(self, expr: str, column: Column) -> str:
        return f"tc_epoch({expr})"

    def instant(self, seconds: int, column: Column) -> str | None:
        return None  # instants are text in SQLite, in more than one format: compared by their seconds


DIALECTS: dict[str, type[Dialect]] = {
    "postgresql": Postgres,
    "mysql": MariaDB,
    "mariadb": MariaDB,
    "duckdb": DuckDB,
    "sqlite": SQLite,
}


def dialect_for(backend: str) -> Dialect | None:
    """The checksum SQL of a SQLAlchemy backend, or None when trackcheck has none for it (ClickHouse)."""
    found = DIALECTS.get(backend)
    return found() if found is not None else None


def python_text(value: Any, form: str, digits: int) -> str | None:
    """A value in ``form``, as the SQL engines render it (see ``columns``): numbers rounded half away from zero
    from their shortest decimal form (as PostgreSQL, MariaDB and DuckDB read a double), instants in UTC."""
    if value is None:
        return None
    if form == "integer":
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return str(int(value)) if isinstance(value, bool | int) else str(value)
    if form == "fixed":
        try:
            number = Decimal(repr(value)) if isinstance(value, float) else Decimal(str(value).strip())
        except InvalidOperation:
            return str(value)
        rounded = number.quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP)
        return f"{abs(rounded) if rounded.is_zero() else rounded:f}"
    if form == "float":
        try:
            return str(math.floor(float(value) * float(10**digits) + 0.5))
        except (TypeError, ValueError, OverflowError):
            return str(value)
    if form in ("time", "date"):
        instant = _instant(value)
        if instant is None:
            return str(value)
        if form == "date":
            return instant.strftime("%Y-%m-%d")
        return str((instant - EPOCH) // timedelta(microseconds=10 ** (6 - min(digits, 6))))
    return str(value)


def _instant(value: Any) -> datetime | None:
    """The instant ``value`` stands for, naive in UTC (``compare.values.as_instant``, which reads a date kept as
    text, as SQLite writes dates, as its midnight)."""
    moment = as_instant(value)
    return None if moment is None else moment.replace(tzinfo=None)


def _sampled(name: str, value: Any) -> Column:
    """The kind of a SQLite result column from one of its values: numbers as they are stored, text that reads as
    an instant (ISO 8601) as a timestamp, other text as text."""
    if isinstance(value, bool | int):
        return Column(name, "integer")
    if isinstance(value, float):
        return Column(name, "float")
    if isinstance(value, str) and len(value) >= 10:
        if len(value) == 10 and _instant(value) is not None:
            return Column(name, "date")
        instant = _iso(value)
        if instant is not None:
            return Column(name, "timestamptz" if instant.tzinfo is not None else "timestamp")
    return Column(name, "text")


def _iso(value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value.strip())
    except ValueError:
        return None


def _md5(value: str | None) -> str | None:
    return None if value is None else hashlib.md5(value.encode(), usedforsecurity=False).hexdigest()


def _hex32(value: str | None, start: int) -> int | None:
    return None if value is None else int(value[start - 1 : start + 7], 16)


def _epoch(value: Any) -> int | None:
    instant = _instant(value)
    return None if instant is None else (instant - EPOCH) // timedelta(seconds=1)


def _signed(value: int) -> int:
    """``value`` modulo 2**64 as SQLite's signed 64-bit integer."""
    value %= 1 << 64
    return value - (1 << 64) if value >= 1 << 63 else value


def _hash64(value: str | None) -> int | None:
    return None if value is None else _signed(int(value[:16], 16))


class _Sum64:
    """SQLite's ``sum`` raises past 2**63; this one wraps modulo 2**64, as the checksums are compared."""

    def __init__(self) -> None:
        self.total = 0

    def step(self, value: int | None) -> None:
        if value is not None:
            self.total += value

    def finalize(self) -> int:
        return _signed(self.total)


_DUCKDB_KINDS: dict[str, Any] = {
    "BOOLEAN": "boolean",
    "TINYINT": "integer",
    "SMALLINT": "integer",
    "INTEGER": "integer",
    "BIGINT": "integer",
    "HUGEINT": "integer",
    "UTINYINT": "integer",
    "USMALLINT": "integer",
    "UINTEGER": "integer",
    "UBIGINT": "integer",
    "UHUGEINT": "integer",
    "FLOAT": "float",
    "DOUBLE": "float",
    "DECIMAL": "decimal",
    "DATE": "date",
    "TIMESTAMP": "timestamp",
    "TIMESTAMP_S": "timestamp",
    "TIMESTAMP_MS": "timestamp",
    "TIMESTAMP_NS": "timestamp",
    "TIMESTAMP WITH TIME ZONE": "timestamptz",
}
_DUCKDB_DIGITS = {"TIMESTAMP_S": 0, "TIMESTAMP_MS": 3, "TIMESTAMP": 6, "TIMESTAMP WITH TIME ZONE": 6}


def _described(name: str, described: str) -> Column:
    """A column of DuckDB's ``DESCRIBE``: ``DECIMAL(12,2)``, ``TIMESTAMP WITH TIME ZONE``, ``VARCHAR``..."""
    match = _DESCRIBED.match(described.upper())
    base = match.group("base").strip() if match else described.upper()
    kind = _DUCKDB_KINDS.get(base, "text")
    if kind == "decimal" and match and match.group("b") is not None:
        scale = int(match.group("b"))
        return Column(name, "integer" if scale == 0 else "decimal", scale)
    return Column(name, kind, _DUCKDB_DIGITS.get(base))
