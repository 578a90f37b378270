"""A sql stage runs one read-only statement: each attack of the issue against the real PostgreSQL, MariaDB and
SQLite of this machine.

(a) Loading a plan with the attack is a PlanError naming the stage and ``query``. (b) Defence in depth: the
same query fetched directly, past the plan check, still does nothing on the server: no table is created, no
row deleted, no program run. The control tests show each attack does work on a read-only session that
allows several statements per string, so the assertions of (b) are what the extended protocol buys.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import psycopg.errors
import pymysql
import pymysql.constants.CLIENT
import pytest
import yaml
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from trackcheck.errors import PlanError, SourceQueryError
from trackcheck.loader import load_plan_text
from trackcheck.plan.model import StageSpec
from trackcheck.sources.base import FetchRequest
from trackcheck.sources.sql import SqlOptions, SqlSource


def escape(*statements: str) -> str:
    """A query that closes trackcheck's ``SELECT * FROM (`` and runs ``statements`` after it."""
    return "select 1 AS x) x; " + "; ".join(statements) + "; select * from (select 1"


PG_ESCAPE = escape(
    "COMMIT", "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE", "COMMIT", "CREATE TABLE pwn (i int)"
)
MARIADB_ESCAPE = escape("COMMIT", "SET SESSION TRANSACTION READ WRITE", "CREATE TABLE pwn (i int)")
SQLITE_ESCAPE = escape("CREATE TABLE pwn (i int)")
CTE_DELETE = "WITH gone AS (DELETE FROM events RETURNING *) SELECT count(*) AS n FROM gone"


def copy_to_program(canary: Path) -> str:
    return escape(f"COPY (SELECT 1) TO PROGRAM 'touch {canary}'")


def plan_text(url: str, query: str) -> str:
    return yaml.safe_dump(
        {
            "name": "sql-attack",
            "key": "event_id",
            "sources": {"wh": {"type": "sql", "url": url}},
            "expect": [{"event_id": "e1"}],
            "stages": [{"name": "warehouse", "source": "wh", "query": query, "compare": {"with": "expect"}}],
        }
    )


def stage(query: str) -> StageSpec:
    """The stage as the engine would get it, but never checked by the plan loader."""
    return StageSpec.model_validate(
        {"name": "warehouse", "source": "wh", "compare": {"with": "expect"}, "query": query}
    )


def fetch_past_the_guard(url: str, query: str) -> list[dict[str, Any]]:
    source = SqlSource("wh", SqlOptions(url=url))
    try:
        return source.fetch(FetchRequest(plan="sql-attack", stage=stage(query))).records
    finally:
        if source._engine is not None:
            assert source._engine.pool.checkedout() == 0
        source.close()


def tables(url: str) -> set[str]:
    """The tables of the test database, read through an admin (read-write) connection."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            if engine.dialect.name == "sqlite":
                found = connection.execute(text("SELECT name FROM sqlite_master WHERE type = 'table'"))
            else:
                schema = "public" if engine.dialect.name == "postgresql" else engine.url.database
                found = connection.execute(
                    text("SELECT table_name FROM information_schema.tables WHERE table_schema = :s"), {"s": schema}
                )
            return {str(row[0]).lower() for row in found}
    finally:
        engine.dispose()


def create_events(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE events (event_id varchar(20), test_id varchar(20))"))
        connection.execute(text("INSERT INTO events VALUES ('e1', 't1'), ('e2', 't1')"))
    engine.dispose()


def event_count(url: str) -> int:
    engine = create_engine(url)
    with engine.connect() as connection:
        count = connection.execute(text("SELECT count(*) FROM events")).scalar_one()
    engine.dispose()
    return int(count)


@pytest.fixture
def canary() -> Iterator[Path]:
    """A path the PostgreSQL server (another OS user) could create: its directory is world-writable."""
    directory = Path(tempfile.mkdtemp(prefix="tc-canary-"))
    directory.chmod(0o777)  # the server's own user must be able to write here for the test to mean anything
    yield directory / f"ran-{uuid.uuid4().hex}"
    shutil.rmtree(directory, ignore_errors=True)


# -- (a) the plan is refused when it loads ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("backend", "query", "reason"),
    [
        ("postgres", PG_ESCAPE, "')' has no matching '('"),
        ("postgres", escape("COPY (SELECT 1) TO PROGRAM 'touch /tmp/x'"), "')' has no matching '('"),
        ("postgres", "SELECT 1 AS x; CREATE TABLE pwn (i int)", "a second statement after ';'"),
        ("postgres", CTE_DELETE, "DELETE inside the query"),
        ("postgres", "SELECT pg_read_file('/etc/passwd') AS f", "function pg_read_file()"),
        ("postgres", "SELECT lo_import('/etc/passwd') AS o", "function lo_import()"),
        ("postgres", "SELECT * FROM events FOR UPDATE", "FOR UPDATE/SHARE"),
        ("postgres", "COPY (SELECT 1) TO PROGRAM 'touch /tmp/x'", "COPY is not a read-only query"),
        ("mariadb", MARIADB_ESCAPE, "')' has no matching '('"),
        ("mariadb", CTE_DELETE, "DELETE inside the query"),
        ("mariadb", "SELECT LOAD_FILE('/etc/passwd') AS f", "function load_file()"),
        ("mariadb", "SELECT * FROM events INTO OUTFILE '/tmp/x'", "cannot parse the query"),
        ("mariadb", "SELECT 1 AS x /*!, SLEEP(5) */", "executable comment"),
        ("sqlite", SQLITE_ESCAPE, "')' has no matching '('"),
        ("sqlite", "SELECT load_extension('/tmp/evil.so') AS x", "function load_extension()"),
    ],
)
def test_loading_a_plan_with_the_attack_is_refused_naming_stage_and_query(
    backend: str, query: str, reason: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue(f"{backend}_url")

    with pytest.raises(PlanError) as caught:
        load_plan_text(plan_text(url, query))

    assert caught.value.context == {"plan": "sql-attack", "stage": "warehouse"}
    assert caught.value.message.startswith("query: ")
    assert reason in caught.value.message
    assert " at line 1, column " in caught.value.message


# -- (b) past the plan check, the servers still refuse ---------------------------------------------------------


def test_postgres_escape_to_a_second_statement_creates_no_table(postgres_url: str) -> None:
    with pytest.raises(SourceQueryError, match="cannot insert multiple commands into a prepared statement"):
        fetch_past_the_guard(postgres_url, PG_ESCAPE)

    assert "pwn" not in tables(postgres_url)


def test_postgres_escape_to_copy_to_program_runs_no_program(postgres_url: str, canary: Path) -> None:
    with pytest.raises(SourceQueryError, match="multiple commands"):
        fetch_past_the_guard(postgres_url, copy_to_program(canary))

    assert not canary.exists()


def test_postgres_write_through_a_data_modifying_cte_deletes_nothing(postgres_url: str) -> None:
    create_events(postgres_url)

    with pytest.raises(SourceQueryError, match="the query failed"):
        fetch_past_the_guard(postgres_url, CTE_DELETE)

    assert event_count(postgres_url) == 2


def test_postgres_a_data_modifying_cte_fails_read_only_even_at_the_top_level(postgres_url: str) -> None:
    """Inside trackcheck's subquery PostgreSQL refuses any data-modifying WITH; on the source's own session,
    where it would be allowed as a statement of its own, the read-only transaction refuses the write."""
    create_events(postgres_url)
    source = SqlSource("wh", SqlOptions(url=postgres_url))
    try:
        with source.engine.connect() as connection, pytest.raises(DBAPIError) as caught:
            connection.execute(text(CTE_DELETE))
    finally:
        source.close()

    assert type(caught.value.orig) is psycopg.errors.ReadOnlySqlTransaction  # "cannot execute SELECT in a ..."
    assert event_count(postgres_url) == 2


def test_mariadb_escape_to_a_second_statement_creates_no_table(mariadb_url: str) -> None:
    with pytest.raises(SourceQueryError, match="1064"):  # syntax error: the server takes one statement per call
        fetch_past_the_guard(mariadb_url, MARIADB_ESCAPE)

    assert "pwn" not in tables(mariadb_url)


def test_mariadb_write_through_a_data_modifying_cte_deletes_nothing(mariadb_url: str) -> None:
    create_events(mariadb_url)

    with pytest.raises(SourceQueryError, match="the query failed"):
        fetch_past_the_guard(mariadb_url, CTE_DELETE)

    assert event_count(mariadb_url) == 2


def test_sqlite_escape_to_a_second_statement_creates_no_table(sqlite_url: str) -> None:
    create_events(sqlite_url)

    with pytest.raises(SourceQueryError, match="one statement at a time"):
        fetch_past_the_guard(sqlite_url, SQLITE_ESCAPE)

    assert tables(sqlite_url) == {"events"}


def test_postgres_read_only_queries_still_read_without_where(postgres_url: str) -> None:
    """The parameter that forces the extended protocol (LIMIT NULL) changes no result."""
    create_events(postgres_url)

    assert len(fetch_past_the_guard(postgres_url, "SELECT event_id FROM events")) == 2
    source = SqlSource("wh", SqlOptions(url=postgres_url))
    try:
        request = FetchRequest(plan="p", stage=stage("SELECT event_id FROM events ORDER BY 1"))
        assert source.fetch(request).records == [{"event_id": "e1"}, {"event_id": "e2"}]
    finally:
        source.close()


# -- controls: the attacks are real on a read-only session with the simple query protocol ---------------------


def simple_protocol_on_a_read_only_session(url: str, wrapped: str) -> None:
    """Run ``wrapped`` as trackcheck's session did before: read-only by default, no bound parameter."""
    database = url.rsplit("/", 1)[1]
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname=database) as connection:
        connection.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        connection.commit()
        with connection.cursor() as cursor:
            cursor.execute(wrapped.encode())  # bytes, no parameters: psycopg's simple query protocol
        connection.commit()


def wrapped(query: str) -> str:
    return f"SELECT * FROM (\n{query}\n) AS tc_q"


def test_control_the_escape_creates_a_table_through_the_simple_protocol(postgres_url: str) -> None:
    simple_protocol_on_a_read_only_session(postgres_url, wrapped(PG_ESCAPE))

    assert "pwn" in tables(postgres_url)


def test_control_copy_to_program_runs_through_the_simple_protocol(postgres_url: str, canary: Path) -> None:
    simple_protocol_on_a_read_only_session(postgres_url, wrapped(copy_to_program(canary)))

    assert canary.exists() and os.stat(canary).st_uid != os.getuid()  # created by the server's user


def test_control_the_escape_creates_a_table_on_mariadb_when_several_statements_are_allowed(mariadb_url: str) -> None:
    database = mariadb_url.rsplit("/", 1)[1]
    connection = pymysql.connect(
        host="127.0.0.1", user="root", database=database, client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS
    )
    try:
        with connection.cursor() as cursor:
            cursor.execute("SET SESSION TRANSACTION READ ONLY")
            cursor.execute(wrapped(MARIADB_ESCAPE))
            while cursor.nextset():
                pass
        connection.commit()
    finally:
        connection.close()

    assert "pwn" in tables(mariadb_url)
