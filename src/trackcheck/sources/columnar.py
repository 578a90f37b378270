"""A sql stage's rows as an Arrow table: the columnar path for large row diffs (issue 13).

``SqlSource.fetch`` builds one ``dict`` per row: over a million rows half the fetch goes to ``dict(row)``
(benchmark B2). ``ColumnarReader`` reads the same statement (``build_statement``: the same filters, every
value bound) into columns instead:

- PostgreSQL through ADBC (``adbc-driver-postgresql``): the server's binary result goes to Arrow in C. The
  session is read-only with the source's ``statement_timeout`` and a ``UTC`` time zone, as ``SqlSource``
  sets up its own sessions; one connection per thread, kept until ``close``.
- other engines through the source's own SQLAlchemy session: the driver's tuples, turned into Arrow column by
  column (no dict per row). A column whose values Arrow cannot type as one (SQLite holds any value in any
  column) is refused with a ``NotColumnar`` error naming it: such a stage stays on the row path.

A stage with ``select`` (JMESPath over each record) is refused too: it is a per-record transformation. These
refusals are ``NotColumnar``: the engine then reads the stage as records. Other errors are the ``SourceError``
kinds ``SqlSource`` raises, masked by the source (no password in the text).
"""

from __future__ import annotations

import re
import threading
from contextlib import suppress
from decimal import Decimal
from importlib.util import find_spec
from typing import TYPE_CHECKING, Any

from sqlalchemy.dialects.postgresql import psycopg as pg_dialect
from sqlalchemy.engine import make_url

from trackcheck.errors import NotColumnar, SourceConnectError, SourceError, SourceQueryError, SourceTimeoutError
from trackcheck.sources import missing_driver
from trackcheck.sources.sql import PG_TIMEOUT, SqlSource, build_statement, permanent_error, postgres_session

if TYPE_CHECKING:
    import pyarrow as pa

    from trackcheck.plan.model import StageSpec
    from trackcheck.sources.base import FetchRequest

#: whether the ``columnar`` extra (Arrow, polars, the ADBC PostgreSQL driver) is installed: without it every
#: stage is read as records
COLUMNAR_INSTALLED = all(find_spec(name) is not None for name in ("pyarrow", "polars", "adbc_driver_postgresql"))
#: ``= ANY($n)``, the PostgreSQL filter build_statement writes, whose parameter ADBC would send typed as text
_ANY = re.compile(r"= ANY\(\$(\d+)\)")


class ColumnarReader:
    """Reads the stages of one ``SqlSource`` as Arrow tables. Built without I/O; ``close`` (or ``with``)
    closes the ADBC connections it opened. Thread-safe: each thread reads on its own connection."""

    def __init__(self, source: SqlSource) -> None:
        self.source = source
        self._local = threading.local()
        self._connections: list[Any] = []
        self._lock = threading.Lock()
        self._prepared: dict[str, str] = {}  # statement as built -> statement ADBC can bind

    def __enter__(self) -> ColumnarReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        """Load the ADBC driver (and Arrow) for a PostgreSQL source: a second's import, not a read's cost.
        Connections are made by the first read of each thread."""
        if self.source.engine.dialect.name == "postgresql":
            self._driver()

    def _driver(self) -> Any:
        try:
            import adbc_driver_postgresql.dbapi as adbc
        except ImportError as exc:
            raise missing_driver("columnar", exc.name or "adbc_driver_postgresql", self.source.name, exc) from exc
        return adbc

    def close(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            with suppress(Exception):  # a connection the server dropped closes as it can
                connection.close()
        self._local = threading.local()

    def read(self, request: FetchRequest) -> pa.Table:
        """The rows ``SqlSource.fetch`` returns for ``request``, as one Arrow table (columns named as the
        query's). Raises the SourceError kinds of ``SqlSource``."""
        stage = request.stage
        if stage.select:
            raise self.source.error(NotColumnar, "the columnar path reads stages without select", stage, permanent=True)
        dialect = self.source.engine.dialect
        statement = build_statement(dialect, request, self.source)
        if dialect.name == "postgresql":
            return self._read_postgresql(statement, stage)
        return self._read_tuples(statement, stage)

    # -- PostgreSQL through ADBC ------------------------------------------------------------------------
    def _read_postgresql(self, statement: Any, stage: StageSpec) -> pa.Table:
        compiled = statement.compile(dialect=pg_dialect.dialect(paramstyle="numeric_dollar"))
        parameters = tuple(compiled.params[name] for name in compiled.positiontup)
        connection = self._connection(stage)
        try:
            cursor = connection.cursor()
            try:
                sql = self._bindable(cursor, compiled.string)
                cursor.execute(sql, parameters=parameters)
                table = cursor.fetch_arrow_table()
            finally:
                cursor.close()
        except SourceError:
            raise
        except Exception as exc:
            raise self._query_error(exc, stage) from exc
        return self._as_row_path_types(table, stage)

    def _as_row_path_types(self, table: pa.Table, stage: StageSpec) -> pa.Table:
        """``numeric`` columns as decimals (ADBC hands them over as text), so that each value reads as the
        ``Decimal`` psycopg returns; a column of another type ADBC cannot map (``json``, ranges...) is refused:
        its values would not read as the row path's."""
        import pyarrow as pa

        for index, field in enumerate(table.schema):
            if not isinstance(field.type, pa.BaseExtensionType):
                continue
            metadata = field.metadata or {}
            if metadata.get(b"POSTGRESQL:type") != b"numeric":
                kind = metadata.get(b"POSTGRESQL:type", b"?").decode()
                message = f"column {field.name!r} ({kind}) has no Arrow type: read this stage row by row"
                raise self.source.error(NotColumnar, message, stage, permanent=True)
            text = pa.chunked_array([chunk.storage for chunk in table.column(index).chunks], field.type.storage_type)
            typmod = int(metadata.get(b"POSTGRESQL:typmod", b"-1"))
            if typmod >= 4 and ((typmod - 4) >> 16) <= 38:
                precision, scale = (typmod - 4) >> 16, (typmod - 4) & 0xFFFF
                column = text.cast(pa.decimal128(precision, scale))
            else:  # numeric without a precision: each value as Python reads it
                try:
                    column = pa.chunked_array([pa.array([None if v is None else Decimal(v) for v in text.to_pylist()])])
                except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                    message = f"column {field.name!r} holds numbers no Arrow decimal holds: read it row by row"
                    raise self.source.error(NotColumnar, message, stage, exc, permanent=True) from exc
            table = table.set_column(index, pa.field(field.name, column.type), column)
        return table

    def _bindable(self, cursor: Any, sql: str) -> str:
        """``sql`` with each ``= ANY($n)`` made ``= ANY(CAST($n AS text)::<column type>[])``.

        The array is bound as PostgreSQL array text (``{"a","b"}``, see ``pg_array_literal``). psycopg sends
        it untyped and the server reads it as an array of the column's type; ADBC sends it as ``text``,
        which ``ANY`` refuses. Preparing the statement once tells which array type the server infers for
        each parameter; the cast then asks for it explicitly. The value stays bound, never pasted."""
        if sql in self._prepared:
            return self._prepared[sql]
        bindable = sql
        if _ANY.search(sql):
            schema = cursor.adbc_prepare(sql)
            types = {}
            for field in schema:
                name = (field.metadata or {}).get(b"POSTGRESQL:type", b"").decode()
                types[field.name.lstrip("$")] = name
            bindable = _ANY.sub(lambda m: f'= ANY(CAST(${m[1]} AS text)::"{_quoted(types[m[1]])}")', sql)
        self._prepared[sql] = bindable
        return bindable

    def _connection(self, stage: StageSpec) -> Any:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            return connection
        adbc = self._driver()
        url = make_url(self.source.engine.url)
        seconds = max(2, round(self.source.options.connect_timeout.total_seconds()))
        query = {k: v for k, v in url.query.items() if k != "connect_timeout"}
        uri = url.set(drivername="postgresql", query={**query, "connect_timeout": str(seconds)})
        target = url.render_as_string(hide_password=True)
        try:
            connection = adbc.connect(uri.render_as_string(hide_password=False), autocommit=True)
        except Exception as exc:
            permanent = permanent_error(exc)
            raise self.source.error(
                SourceConnectError, f"cannot connect to {target}", stage, exc, permanent=permanent
            ) from exc
        try:
            self._session_setup(connection)
        except Exception as exc:
            connection.close()
            raise self._query_error(exc, stage) from exc
        self._local.connection = connection
        with self._lock:
            self._connections.append(connection)
        return connection

    def _session_setup(self, connection: Any) -> None:
        """Read-only, with the source's statement timeout, in ``UTC`` where the server's zone is an alias
        of it: ``SqlSource._session_setup`` for ADBC."""
        timeout = self.source.options.query_timeout.total_seconds()
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_setting('TimeZone')")
            zone = cursor.fetchone()
            for statement in postgres_session(timeout, zone[0] if zone else None):
                cursor.execute(statement)

    def _query_error(self, exc: Exception, stage: StageSpec) -> SourceError:
        code = getattr(exc, "sqlstate", None)
        if code == PG_TIMEOUT:
            timeout = self.source.options.query_timeout.total_seconds()
            return self.source.error(SourceTimeoutError, f"the query ran longer than {timeout:g}s", stage, exc)
        if code is None or str(code).startswith("08"):  # no answer from the server: the connection is gone
            self._forget()
            return self.source.error(SourceConnectError, "lost the connection during the query", stage, exc)
        if code == "22P02":
            message = "a where value does not fit the column's type"
            return self.source.error(SourceQueryError, message, stage, exc, permanent=True)
        return self.source.error(SourceQueryError, "the query failed", stage, exc, permanent=permanent_error(exc))

    def _forget(self) -> None:
        """Drop this thread's connection: the next read opens a new one."""
        connection = getattr(self._local, "connection", None)
        self._local.connection = None
        if connection is not None:
            with self._lock:
                if connection in self._connections:
                    self._connections.remove(connection)
            with suppress(Exception):  # already broken
                connection.close()

    # -- other engines: tuples by column ---------------------------------------------------------------
    def _read_tuples(self, statement: Any, stage: StageSpec) -> pa.Table:
        import pyarrow as pa

        with self.source.session(stage) as connection:
            result = connection.execute(statement)
            names = list(result.keys())
            rows = result.fetchall()
        columns = list(zip(*rows, strict=True)) if rows else [() for _ in names]
        arrays = []
        for name, values in zip(names, columns, strict=True):
            try:
                arrays.append(pa.array(values))
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
                message = f"column {name!r} holds values Arrow cannot type as one column: read it row by row"
                raise self.source.error(NotColumnar, message, stage, exc, permanent=True) from exc
        return pa.Table.from_arrays(arrays, names=names)


def _quoted(type_name: str) -> str:
    return type_name.replace('"', '""')
