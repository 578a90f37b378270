"""Reading a stage from any database SQLAlchemy can reach (PostgreSQL, MariaDB/MySQL, SQLite, DuckDB...).

A stage's ``query`` (or ``table``) is a dataset; trackcheck wraps it as a subquery and filters it by the
``where`` fields, so the plan's SQL is never edited and run parameters are never pasted into it: the values
are always bound, as one parameter per field where the database can take a list:

* PostgreSQL: ``tc_q.f = ANY(:p)`` with the values sent as one array literal of *unknown* type, so the server
  types the array after the column. A text list against an integer, numeric or timestamp column therefore
  compares as integers, numbers or instants (``'25.50'`` finds ``25.5``); a value the column type cannot
  read (``'abc'`` for an integer) is a SourceQueryError saying so. Casting the column to text instead would
  defeat indexes and compare ``25.50`` with ``'25.5'`` as different strings.
* SQLite: ``IN (SELECT value FROM json_each(:p))`` with the values as one JSON text.
* Others: SQLAlchemy's expanding ``IN`` (one placeholder per value, still all bound).

A stage with ``aggregates`` has them computed by the database: ``SELECT <by>, <where fields>, COUNT(*) AS
tc_count, SUM(tc_q.x) AS tc_sum_x, ... FROM (<dataset>) AS tc_q WHERE ... GROUP BY <by>, <where fields>``
(the columns of ``compare.aggregates.pushed_columns``), so one row per group comes back instead of every
event. The ``where`` fields stay in the ``GROUP BY``: the engine splits the rows back per run by them.

Every connection is read-only and bounded in time where the driver allows it (see ``_session_setup``).
A ``query`` is checked when its plan loads to be exactly one read-only SELECT (``sqlguard``), and on
PostgreSQL every statement is sent by the extended protocol, which runs one statement per execution
(``build_statement``): what the check missed still cannot add a second statement.
"""

from __future__ import annotations

import functools
import json
import math
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from pydantic import Field, field_validator, model_validator
from sqlalchemy import bindparam, create_engine, event, text
from sqlalchemy.engine import URL, Connection, Dialect, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.sql.elements import TextClause
from sqlalchemy.types import NULLTYPE

from trackcheck.compare.aggregates import pushed_columns
from trackcheck.errors import SourceConnectError, SourceError, SourceQueryError, SourceTimeoutError
from trackcheck.plan.model import IDENTIFIER, Duration, ReadSpec
from trackcheck.plan.templates import param_names
from trackcheck.sources import missing_driver
from trackcheck.sources.base import FetchRequest, FetchResult, Source, SourceOptions, apply_select

if TYPE_CHECKING:
    from sqlalchemy.sql.compiler import IdentifierPreparer
    from sqlalchemy.sql.elements import BindParameter

    from trackcheck.plan.model import AggregatesSpec, StageSpec

#: backend name of a URL -> (the extra that installs its driver, the module it brings)
_EXTRAS = {
    "postgresql": ("postgres", "psycopg"),
    "mysql": ("mysql", "pymysql"),
    "mariadb": ("mysql", "pymysql"),
    "duckdb": ("duckdb", "duckdb_engine"),
    "clickhouse": ("clickhouse", "clickhouse_sqlalchemy"),
}
#: PostgreSQL query_canceled (statement_timeout); MariaDB max_statement_time; MySQL max_execution_time
PG_TIMEOUT, _MYSQL_TIMEOUTS = "57014", {1969, 3024}
#: the longest name of a computed column: PostgreSQL cuts names at 63 bytes, MySQL refuses columns beyond 64
_MAX_COLUMN = 63
#: IANA names of UTC itself (tzdata links them all to Etc/UTC); Debian's PostgreSQL defaults to Etc/UTC
_UTC_ALIASES = frozenset({"Etc/UTC", "Etc/UCT", "UCT", "Etc/Universal", "Universal", "Etc/Zulu", "Zulu"})


class SqlOptions(SourceOptions):
    """``sources.<name>`` of ``type: sql``."""

    url: str
    query_timeout: Duration = timedelta(seconds=30)
    connect_timeout: Duration = timedelta(seconds=10)
    connect_args: dict[str, Any] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        try:
            make_url(value)
        except (ArgumentError, ValueError):
            # the message must not echo the URL: it may hold a password
            raise ValueError(
                "not a database URL: write e.g. postgresql://user@host/db, mysql://user@host/db or "
                "sqlite:///path/to/file.db"
            ) from None
        return value


class SqlRead(ReadSpec):
    """What a ``sql`` stage reads: a ``table``, or a read-only ``query`` whose rows the stage filters."""

    query: str | None = None
    table: str | None = None

    @model_validator(mode="after")
    def _one(self) -> SqlRead:
        if self.query is not None and self.table is not None:
            raise ValueError("set 'query' or 'table', not both")
        if self.query is not None and param_names(self.query):
            raise ValueError(
                "run parameters are never pasted into SQL: remove {...} from 'query' and filter with 'where'"
            )
        return self


def normalize_url(raw: str) -> URL:
    """The URL SQLAlchemy gets: default drivers for bare schemes, SQLite files opened read-only."""
    url = make_url(raw)
    backend, _, driver = url.drivername.partition("+")
    if backend in ("postgres", "postgresql"):
        return url.set(drivername=f"postgresql+{driver or 'psycopg'}")
    if backend in ("mysql", "mariadb") and not driver:
        return url.set(drivername=f"{backend}+pymysql")
    if backend == "sqlite" and url.database not in (None, "", ":memory:"):
        query = dict(url.query)
        if str(query.get("uri", "")).lower() in ("true", "1"):
            query.setdefault("mode", "ro")
            return url.set(query=query)
        # mode=ro also means a mistyped path is an error instead of a new empty database
        database = "file:" + quote(str(url.database))
        return url.set(database=database, query={**query, "mode": "ro", "uri": "true"})
    return url


class SqlSource(Source):
    """A database read through SQLAlchemy; one engine (and its pool) per source, shared by threads."""

    type_name = "sql"
    options_model = SqlOptions
    read_model = SqlRead
    options: SqlOptions

    def __init__(self, name: str, options: SqlOptions) -> None:
        super().__init__(name, options)
        self._engine: Engine | None = None
        self._lock = threading.Lock()

    @classmethod
    def check_stage(cls, stage: StageSpec) -> str | None:
        problem = super().check_stage(stage)
        if problem is not None:
            return problem
        read = SqlRead.of(stage)
        return "a sql stage needs 'query' or 'table'" if read.query is None and read.table is None else None

    def check_read(self, stage: StageSpec) -> str | None:
        """A ``query`` must be exactly one read-only query in this database's dialect (see ``sqlguard``); a
        ``table`` is 1-3 dot-separated names. Checked once, when the plan loads: ``fetch`` does not parse."""
        read = SqlRead.of(stage)
        if read.table is not None:
            parts = read.table.split(".")
            if not 1 <= len(parts) <= 3 or not all(IDENTIFIER.match(part) for part in parts):
                return (
                    f"table: {read.table!r} is not a table name: write table, schema.table or "
                    "catalog.schema.table (letters, digits and _)"
                )
        if read.query is not None:
            from trackcheck.sources.sqlguard import check_query  # sqlglot: ~8 MB, only for plans with a query

            refusal = check_query(read.query, normalize_url(self.options.url).get_backend_name())
            if refusal is not None:
                return f"query: {refusal}"
        return aggregates_problem(stage)

    def secrets(self) -> list[str]:
        """Also the decoded password: drivers report ``p@ss`` where the URL says ``p%40ss``."""
        found = super().secrets()
        try:
            password = make_url(self.options.url).password
        except (ArgumentError, ValueError):
            password = None
        return [*found, str(password)] if password else found

    # -- lifecycle -------------------------------------------------------------------------------------
    @property
    def engine(self) -> Engine:
        """The engine, created on first use (tests inspect its pool and events)."""
        with self._lock:
            if self._engine is None:
                self._engine = self._create_engine()
            return self._engine

    def open(self) -> None:
        """Build the engine and its pool; connections are made by the first fetch."""
        self.engine  # noqa: B018 - creating it is the point

    def close(self) -> None:
        with self._lock:
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None

    def _create_engine(self) -> Engine:
        url = normalize_url(self.options.url)
        backend = url.get_backend_name()
        connect_args = {**self._default_connect_args(url), **self.options.connect_args}
        try:
            engine = create_engine(url, pool_pre_ping=True, connect_args=connect_args)
        except (NoSuchModuleError, ImportError) as exc:
            if backend in _EXTRAS:
                extra, module = _EXTRAS[backend]
                if isinstance(exc, ImportError) and exc.name:
                    module = exc.name
                cause = exc if isinstance(exc, ImportError) else ImportError(str(exc))
                raise missing_driver(extra, module, self.name, cause) from exc
            message = f"no SQLAlchemy dialect for {url.drivername!r}"
            raise self.error(SourceConnectError, message, None, exc) from exc
        except (ArgumentError, ValueError, TypeError) as exc:
            raise self.error(SourceConnectError, "cannot use this database URL", None, exc) from exc
        event.listen(engine, "connect", functools.partial(self._session_setup, backend))
        return engine

    def _default_connect_args(self, url: URL) -> dict[str, Any]:
        seconds = max(2, round(self.options.connect_timeout.total_seconds()))
        driver = url.drivername.partition("+")[2]
        if driver in ("psycopg", "psycopg2", "pymysql", "mysqldb"):
            return {"connect_timeout": seconds}
        if url.get_backend_name() == "duckdb":
            return {"read_only": True}
        return {}

    def _session_setup(self, backend: str, dbapi_connection: Any, _record: Any) -> None:
        """Make each new connection read-only with a statement timeout, where the server has both.

        PostgreSQL: ``default_transaction_read_only`` and ``statement_timeout`` for the session (a SET,
        not startup options, so it also works through PgBouncer). MariaDB/MySQL: ``SET SESSION TRANSACTION
        READ ONLY`` (every later transaction starts as ``START TRANSACTION READ ONLY``) and
        ``max_statement_time`` (MariaDB) / ``max_execution_time`` (MySQL). SQLite is opened with
        ``mode=ro`` and interrupted by a progress handler (``_deadline``). Other dialects get neither:
        use a database user that can only read.

        A PostgreSQL session whose time zone is another name of UTC (``Etc/UTC``, Debian's default) is set
        to ``UTC``: the same zone, so no value and no query result changes, but psycopg then labels
        ``timestamptz`` values with ``datetime.UTC`` instead of ``ZoneInfo('Etc/UTC')``. Comparing them
        with instants parsed from ISO text (what expected events and snapshots hold) is then a plain field
        comparison, not two zone lookups per pair: 20 times faster, seconds over a million rows (benchmark B2).
        """
        timeout = self.options.query_timeout.total_seconds()
        cursor = dbapi_connection.cursor()
        try:
            if backend == "postgresql":
                for statement in postgres_session(timeout, _session_time_zone(dbapi_connection)):
                    cursor.execute(statement)
                dbapi_connection.commit()
            elif backend in ("mysql", "mariadb"):
                cursor.execute("SET SESSION TRANSACTION READ ONLY")
                cursor.execute("SELECT VERSION()")
                if "mariadb" in str(cursor.fetchone()[0]).lower():
                    cursor.execute(f"SET SESSION max_statement_time = {timeout:.3f}")
                else:
                    cursor.execute(f"SET SESSION max_execution_time = {round(timeout * 1000)}")
        finally:
            cursor.close()

    # -- reading ---------------------------------------------------------------------------------------
    def fetch(self, request: FetchRequest) -> FetchResult:
        stage = request.stage
        statement = build_statement(self.engine.dialect, request, self)
        with self.session(stage) as connection:
            records = [dict(row) for row in connection.execute(statement).mappings()]
        return FetchResult(apply_select(records, stage.select))

    def estimated_rows(self, request: FetchRequest) -> int | None:
        """How many rows PostgreSQL's planner expects ``request`` to return (``EXPLAIN``: planned, not run),
        for the engine to choose how to read them before it has read them once; None on other engines, or
        when the plan cannot be had (the read itself then says why)."""
        if self.engine.dialect.name != "postgresql":
            return None
        try:
            statement = build_statement(self.engine.dialect, request, self, explain=True)
            with self.session(request.stage) as connection:
                plan: Any = connection.execute(statement).scalar()
            return int(plan[0]["Plan"]["Plan Rows"])
        except (SourceError, LookupError, TypeError, ValueError):
            return None

    @contextmanager
    def session(self, stage: StageSpec | None = None) -> Iterator[Connection]:
        """A connection of the pool for the statements of one read, bounded by the query timeout; what fails
        is a SourceError naming this source (and ``stage``), the kind the engine retries or gives up on.
        Also what ``recon`` runs its checksum queries in."""
        engine = self.engine
        try:
            connection = engine.connect()
        except PoolTimeoutError as exc:
            raise self.error(SourceTimeoutError, "no free connection in the pool", stage, exc) from exc
        except SQLAlchemyError as exc:
            orig = _driver_error(exc)
            target = engine.url.render_as_string(hide_password=True)
            permanent = permanent_error(orig)
            raise self.error(
                SourceConnectError, f"cannot connect to {target}", stage, orig, permanent=permanent
            ) from orig
        try:
            with connection, self._deadline(connection):
                yield connection
        except DBAPIError as exc:
            raise self._query_error(exc, stage) from _driver_error(exc)
        except SQLAlchemyError as exc:
            raise self.error(SourceQueryError, "the query failed", stage, exc) from exc

    def _deadline(self, connection: Connection) -> Any:
        """SQLite has no statement timeout: a progress handler interrupts the query at the deadline."""
        raw = connection.connection.driver_connection
        if connection.dialect.name != "sqlite" or not hasattr(raw, "set_progress_handler"):
            return nullcontext()
        return _interrupt_after(raw, self.options.query_timeout.total_seconds())

    def _query_error(self, exc: DBAPIError, stage: StageSpec | None) -> SourceError:
        orig = _driver_error(exc)
        code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
        number = orig.args[0] if orig.args and isinstance(orig.args[0], int) else None
        timeout = self.options.query_timeout.total_seconds()
        if code == PG_TIMEOUT or number in _MYSQL_TIMEOUTS or str(orig) == "interrupted":
            return self.error(SourceTimeoutError, f"the query ran longer than {timeout:g}s", stage, orig)
        if exc.connection_invalidated:
            return self.error(SourceConnectError, "lost the connection during the query", stage, orig)
        if code == "22P02":
            message = "a where value does not fit the column's type"
            return self.error(SourceQueryError, message, stage, orig, permanent=True)
        return self.error(SourceQueryError, "the query failed", stage, orig, permanent=permanent_error(orig))

    def hosts(self) -> list[str]:
        """The database servers the URL connects to: its host, and each ``host``/``hostaddr`` of the query
        or of ``connect_args`` (libpq's comma-separated lists too). A Unix socket, a host left to the driver
        (libpq's socket or PGHOST), a ``service`` or an option file count as local. A SQLite or DuckDB file
        is no network host: [] (which local files a plan may open is the trust policy's to decide)."""
        from trackcheck.sources.network import LOCAL

        try:
            url = make_url(self.options.url)
        except (ArgumentError, ValueError):
            return [LOCAL]
        if url.get_backend_name() in ("sqlite", "duckdb"):
            return []
        found = [url.host] if url.host else []
        hidden = {"unix_socket", "service", "dsn", "conninfo", "read_default_file", "read_default_group"}
        for options in (url.query, self.options.connect_args):
            for key, value in options.items():
                if key in hidden:
                    found.append(LOCAL)
                if key not in ("host", "hostaddr"):
                    continue
                listed = ",".join(str(v) for v in value) if isinstance(value, list | tuple) else str(value)
                for item in (part.strip() for part in listed.split(",")):
                    if item.startswith("["):  # [::1]:5432 (SQLAlchemy's multi-host form)
                        item = item[1:].partition("]")[0]
                    elif item.count(":") == 1:  # host:5432
                        item = item.partition(":")[0]
                    found.append(LOCAL if not item or item.startswith(("/", "@")) else item)
        return list(dict.fromkeys(found)) or [LOCAL]


def aggregates_problem(stage: StageSpec) -> str | None:
    """Why the database cannot compute the ``aggregates`` of ``stage``, or None (also when it has none)."""
    spec = stage.aggregates
    if spec is None:
        return None
    if stage.select is not None:
        return (
            "aggregates: a sql stage's aggregates are computed by the database on the query's columns, which "
            "'select' cannot rename: alias the columns in 'query' instead"
        )
    for name in [*spec.by, *spec.sum, *spec.avg, *spec.min, *spec.max]:
        if not IDENTIFIER.match(name):
            return f"aggregates: {name!r} is not a plain column name (letters, digits and _)"
    for column in pushed_columns(spec):
        if len(column.column.encode()) > _MAX_COLUMN:
            return f"aggregates: the column {column.field!r} is named too long to compute its measures in SQL"
    return None


def _aggregated(preparer: IdentifierPreparer, spec: AggregatesSpec, request: FetchRequest) -> tuple[str, str]:
    """The select list and the ``GROUP BY`` list of a stage whose database computes its ``aggregates``: the
    ``by`` fields and the ``where`` fields, then each column of ``pushed_columns``."""
    fields = list(dict.fromkeys([*spec.by, *request.filters, *request.stage.where]))
    grouped = [f"tc_q.{preparer.quote(field)}" for field in fields]
    selected = [f"{column} AS {preparer.quote(field)}" for column, field in zip(grouped, fields, strict=True)]
    for pushed in pushed_columns(spec):
        argument = "*" if pushed.field is None else f"tc_q.{preparer.quote(pushed.field)}"
        selected.append(f"{pushed.function}({argument}) AS {preparer.quote(pushed.column)}")
    return ", ".join(selected), ", ".join(grouped)


def dataset_sql(preparer: IdentifierPreparer, table: str | None, query: str | None) -> str | None:
    """A stage's dataset as SQL to select from: its quoted ``table``, or its ``query`` in parentheses (the
    query's colons escaped: ``text()`` reads ``:name`` as a bind parameter, and the plan's SQL has none)."""
    if table:
        return ".".join(preparer.quote(part) for part in table.split("."))
    if query:
        from trackcheck.sources.sqlguard import query_body  # loaded with sqlglot: only when there is a query

        # newlines: a query ending in a -- comment must not swallow the closing parenthesis
        return "(\n" + query_body(query).strip().replace(":", "\\:") + "\n)"
    return None


def bound_filters(
    dialect: Dialect, filters: Mapping[str, Sequence[Any]], alias: str, stage: StageSpec | None, source: Source
) -> tuple[list[str], list[BindParameter[Any]]]:
    """The conditions keeping the rows whose ``filters`` fields hold one of their values (columns of ``alias``),
    and their bound parameters: one per field, named ``tc_p<n>`` (see the module docstring)."""
    preparer = dialect.identifier_preparer
    conditions: list[str] = []
    binds: list[BindParameter[Any]] = []
    for index, (field, values) in enumerate(sorted(filters.items())):
        if not IDENTIFIER.match(field):
            raise source.error(SourceQueryError, f"where field {field!r} is not a plain field name", stage)
        name, column = f"tc_p{index}", f"{alias}.{preparer.quote(field)}"
        present = [v for v in values if v is not None]
        if dialect.name == "postgresql":
            conditions.append(f"{column} = ANY(:{name})")
            binds.append(bindparam(name, value=pg_array_literal(present), type_=NULLTYPE))
        elif dialect.name == "sqlite":
            conditions.append(f"{column} IN (SELECT value FROM json_each(:{name}))")
            binds.append(bindparam(name, value=json.dumps([_json_value(v) for v in present]), type_=NULLTYPE))
        else:
            conditions.append(f"{column} IN :{name}")
            binds.append(bindparam(name, value=present, expanding=True))
    return conditions, binds


def build_statement(dialect: Dialect, request: FetchRequest, source: Source, *, explain: bool = False) -> TextClause:
    """``SELECT * FROM (<dataset>) AS tc_q WHERE ...`` with every value bound (see the module docstring), or,
    for a stage with ``aggregates``, the groups and their measures (``... GROUP BY ...``). ``explain``: the
    same statement behind PostgreSQL's ``EXPLAIN (FORMAT JSON)``, planned and not run."""
    stage = request.stage
    preparer = dialect.identifier_preparer
    read = SqlRead.of(stage)
    dataset = dataset_sql(preparer, read.table, read.query)
    if dataset is None:
        raise source.error(SourceQueryError, "a sql stage needs 'query' or 'table'", stage)
    columns, grouped = "*", ""
    if stage.aggregates is not None:
        problem = aggregates_problem(stage)
        if problem is not None:
            raise source.error(SourceQueryError, problem, stage, permanent=True)
        columns, grouped = _aggregated(preparer, stage.aggregates, request)
    sql = f"{'EXPLAIN (FORMAT JSON) ' if explain else ''}SELECT {columns} FROM {dataset} AS tc_q"
    conditions, binds = bound_filters(dialect, request.filters, "tc_q", stage, source)
    if conditions:
        sql += "\nWHERE " + "\n  AND ".join(conditions)
    if grouped:
        sql += "\nGROUP BY " + grouped
    if dialect.name == "postgresql" and not binds:
        # Defence in depth behind the plan check: psycopg 3 sends a statement without parameters by the
        # simple query protocol, which runs every statement in the string (SQLAlchemy passes {} for a
        # text() without binds, and psycopg treats an empty parameter set as none). With one bound
        # parameter it uses the extended protocol, whose Parse step takes exactly one statement, so
        # "...) x; COMMIT; CREATE ..." fails instead of running. LIMIT NULL is no limit.
        sql += "\nLIMIT :tc_limit"
        binds.append(bindparam("tc_limit", value=None, type_=NULLTYPE))
    return text(sql).bindparams(*binds)


def pg_array_literal(values: Sequence[Any]) -> str:
    """``{"a","b"}``: PostgreSQL array text the server parses as an array of the compared column's type."""
    items = []
    for value in values:
        plain = _json_value(value)
        item = ("true" if plain else "false") if isinstance(plain, bool) else str(plain)
        items.append('"' + item.replace("\\", "\\\\").replace('"', '\\"') + '"')
    return "{" + ",".join(items) + "}"


def _json_value(value: Any) -> Any:
    """A value as plain JSON: integral numbers as integers (an integer column cannot read ``25.0``)."""
    if isinstance(value, bool | str | int):
        return value
    if isinstance(value, Decimal | float):
        finite = value.is_finite() if isinstance(value, Decimal) else math.isfinite(value)
        return int(value) if finite and value == int(value) else float(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def postgres_session(timeout: float, zone: str | None) -> list[str]:
    """The statements that set up a PostgreSQL session for reading (``SqlSource._session_setup`` says why):
    read-only, bounded by ``timeout`` seconds, ``UTC`` where its ``zone`` is another name of UTC. Also what
    the columnar reader runs on its ADBC sessions, so both read alike."""
    statements = [
        "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
        f"SET statement_timeout = {round(timeout * 1000)}",
    ]
    if zone in _UTC_ALIASES:
        statements.append("SET TIME ZONE 'UTC'")
    return statements


def _session_time_zone(dbapi_connection: Any) -> str | None:
    """The session's ``TimeZone`` as the server reported it (psycopg 3 and psycopg2 both have ``info``)."""
    info = getattr(dbapi_connection, "info", None)
    status = getattr(info, "parameter_status", None)
    if status is None:
        return None
    zone = status("TimeZone")
    return zone if isinstance(zone, str) else None


#: errors that the same statement will meet every time: PostgreSQL SQLSTATE classes 42 (syntax, unknown
#: table/column/function, privileges) and 28 (authentication), 3D000 (no such database), 22P02 (a value the
#: column type cannot read); MariaDB/MySQL error numbers of the same kinds; SQLite's messages for them
_PG_PERMANENT_CLASSES = ("42", "28", "3D")
_MYSQL_PERMANENT = {1044, 1045, 1049, 1054, 1064, 1142, 1143, 1146, 1305, 1356, 1370}
_PG_FATAL_PERMANENT = ("database ", "role ", "password authentication failed", "no pg_hba.conf entry")
_SQLITE_PERMANENT = ("no such table", "no such column", "no such function", "syntax error", "ambiguous column")


def permanent_error(orig: BaseException) -> bool:
    """Whether the driver error ``orig`` says the same read will fail again (see ``ErrorKind``)."""
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if isinstance(code, str):
        return code.startswith(_PG_PERMANENT_CLASSES) or code == "22P02"
    number = orig.args[0] if orig.args and isinstance(orig.args[0], int) else None
    if number is not None:
        return number in _MYSQL_PERMANENT
    text = str(orig)
    # libpq reports a refused login without a SQLSTATE: only its FATAL message says why
    if any(f"FATAL:  {what}" in text for what in _PG_FATAL_PERMANENT):
        return True
    return text.lower().startswith(_SQLITE_PERMANENT)


def _driver_error(exc: SQLAlchemyError) -> BaseException:
    """The DBAPI error inside SQLAlchemy's wrapper: its text is the server's, without SQL and parameters."""
    orig = getattr(exc, "orig", None)
    return orig if isinstance(orig, BaseException) else exc


@contextmanager
def _interrupt_after(raw: Any, seconds: float) -> Iterator[None]:
    deadline = time.monotonic() + seconds
    raw.set_progress_handler(lambda: time.monotonic() > deadline, 10_000)
    try:
        yield
    finally:
        raw.set_progress_handler(None, 0)
