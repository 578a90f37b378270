"""sqlguard: which queries a sql stage may run, and where a refusal points in the query text.

Every refusal is checked for its reason *and* its position (1-based line and column of the offending token),
because that is what a plan author reads when a plan is refused.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.dialects import postgresql, sqlite

from trackcheck.plan.model import StageSpec
from trackcheck.sources.base import FetchRequest
from trackcheck.sources.sql import SqlOptions, SqlSource, build_statement
from trackcheck.sources.sqlguard import Refusal, check_query, query_body

ESCAPE = (
    "select 1) x; COMMIT; SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE; CREATE TABLE pwn(i int); "
    "select * from (select 1"
)

ACCEPTED = [
    # PostgreSQL
    ("postgresql", "SELECT event_id, event_name AS event, uid AS user_id, amount, test_id FROM ods_events"),
    ("postgresql", "SELECT event_id FROM ods_events ;"),
    ("postgresql", "SELECT event_id FROM ods_events;;  \n\n"),
    ("postgresql", "SELECT event_id, 'at 10:30 :name 100%' AS note FROM ods_events -- the staging copy"),
    ("postgresql", "/* leading */ SELECT a /* inline */ FROM t -- trailing"),
    ("postgresql", "WITH recent AS (SELECT * FROM events WHERE ts > now() - interval '1 day') SELECT id FROM recent"),
    ("postgresql", "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 10) SELECT x FROM c"),
    ("postgresql", "SELECT id FROM a UNION SELECT id FROM b INTERSECT SELECT id FROM c EXCEPT SELECT id FROM d"),
    ("postgresql", "(SELECT 1 AS n) UNION ALL (SELECT 2) ORDER BY 1"),
    ("postgresql", "VALUES (1, 'a'), (2, 'b')"),
    ("postgresql", "SELECT * FROM (VALUES (1, 'a'), (2, 'b')) AS v(id, name)"),
    ("postgresql", "SELECT a::int, CAST(b AS text), '2024-01-01'::date AS d FROM t"),
    (
        "postgresql",
        "SELECT payload->>'user' AS u, (payload #>> '{a,b}')::int AS n FROM t WHERE payload @> '{\"k\": 1}'",
    ),
    ("postgresql", "SELECT a FROM t WHERE name ILIKE 'x%' AND code ~ '^[A-Z]' AND b IS DISTINCT FROM c"),
    (
        "postgresql",
        "SELECT a, row_number() OVER (PARTITION BY b ORDER BY c DESC) AS rn, lag(a) OVER w FROM t WINDOW w AS ()",
    ),
    ("postgresql", "SELECT date_trunc('day', ts) AS day, count(*) FILTER (WHERE ok) AS n FROM t GROUP BY 1"),
    ("postgresql", "SELECT DISTINCT ON (a) a, b FROM t ORDER BY a, b DESC NULLS LAST"),
    ("postgresql", "SELECT * FROM t WHERE EXISTS (SELECT 1 FROM u WHERE u.id = t.id) AND a IN (SELECT a FROM v)"),
    ("postgresql", "SELECT g, e.value FROM generate_series(1, 3) g, LATERAL jsonb_array_elements('[1]') e"),
    ("postgresql", "SELECT $$it's$$ AS s, E'a\\nb' AS t, lower(name), string_agg(a, ',') FROM t GROUP BY name"),
    ("postgresql", "SELECT '/*! not a comment */' AS s, 'FOR UPDATE' AS t, 'DELETE FROM t' AS u"),
    ("postgresql", 'SELECT "pg_read_file", nextval FROM t'),  # columns named like functions
    ("postgresql", 'SELECT * FROM "my.table"'),
    ("postgresql", "SELECT 'a\\\\b' AS backslashes"),
    # MySQL / MariaDB
    ("mysql", "SELECT `a`, b FROM `db`.`t` WHERE c REGEXP 'x' LIMIT 5, 10"),
    ("mysql", "SELECT JSON_EXTRACT(a, '$.b'), a ->> '$.c', DATE_FORMAT(d, '%Y-%m') FROM t # a comment"),
    ("mysql", "SELECT 'it''s', \"double\", '\\\\' AS backslash FROM t -- comment"),
    ("mariadb", "SELECT GROUP_CONCAT(a SEPARATOR ',') AS g, IFNULL(b, 0), @x FROM t GROUP BY c"),
    ("mariadb", "WITH x AS (SELECT 1 AS a) SELECT a FROM x UNION ALL SELECT 2"),
    # SQLite
    ("sqlite", "SELECT value FROM json_each('[1, 2]')"),
    ("sqlite", "SELECT strftime('%Y', ts), datetime('now') FROM t WHERE a GLOB 'x*' LIMIT 10 OFFSET 5"),
    ("sqlite", "SELECT name FROM pragma_table_info('t')"),
    # DuckDB
    ("duckdb", "SELECT * FROM range(10) r"),
    ("duckdb", "SELECT * FROM generate_series(1, 3) g, unnest([1, 2]) u"),
    ("duckdb", "SELECT * FROM t QUALIFY row_number() OVER (PARTITION BY a ORDER BY b) = 1"),
    # ClickHouse, SQL Server and a backend sqlglot reads with its generic dialect
    ("clickhouse", "SELECT toStartOfDay(ts) AS d, count() FROM t GROUP BY d"),
    ("clickhouse", "SELECT number FROM numbers(10)"),
    ("mssql", "SELECT TOP 5 * FROM t"),
    ("snowflake", "SELECT a FROM t WHERE b = 1"),
]


@pytest.mark.parametrize(("backend", "sql"), ACCEPTED)
def test_read_only_queries_are_accepted(backend: str, sql: str) -> None:
    assert check_query(sql, backend) is None


REFUSED = [
    # -- one statement, and nothing that escapes SELECT * FROM (<query>) ----------------------------------
    ("postgresql", ESCAPE, "')' has no matching '('", 1, 9),
    ("postgresql", "SELECT 1; SELECT 2", "a second statement after ';'", 1, 11),
    ("mysql", "SELECT 1;\n  DROP TABLE t", "a second statement after ';'", 2, 3),
    ("postgresql", "SELECT 1; -- a note", "';' may only be the last character", 1, 9),
    ("postgresql", "SELECT 1 FROM t WHERE (a = 1", "'(' is never closed", 1, 23),
    ("postgresql", "SELECT 'abc", "cannot read the SQL", 1, 8),
    ("postgresql", "SELECT 1 /* never closed", "cannot read the SQL", 1, 10),
    ("postgresql", "SELECT a FROM\nWHERE b", "cannot parse the query as postgres SQL", 2, 1),
    ("mysql", "SELECT * FROM t INTO OUTFILE '/tmp/x'", "near 'INTO'", 1, 17),
    ("mysql", "SELECT * FROM t INTO DUMPFILE '/tmp/x'", "near 'INTO'", 1, 17),
    ("mysql", "SELECT * INTO OUTFILE '/tmp/x' FROM t", "cannot parse the query as mysql SQL", 1, 23),
    # -- statements that are not a query ------------------------------------------------------------------
    ("postgresql", "INSERT INTO t VALUES (1)", "INSERT is not a read-only query", 1, 1),
    ("postgresql", "UPDATE t SET a = 1", "UPDATE is not a read-only query", 1, 1),
    ("postgresql", "DELETE FROM t", "DELETE is not a read-only query", 1, 1),
    ("postgresql", "MERGE INTO t USING s ON t.a = s.a WHEN MATCHED THEN DELETE", "MERGE is not", 1, 1),
    ("postgresql", "CREATE TABLE pwn (i int)", "CREATE is not a read-only query", 1, 1),
    ("postgresql", "DROP TABLE t", "DROP is not a read-only query", 1, 1),
    ("postgresql", "ALTER TABLE t ADD COLUMN b int", "ALTER is not a read-only query", 1, 1),
    ("postgresql", "TRUNCATE t", "TRUNCATE is not a read-only query", 1, 1),
    ("postgresql", "GRANT SELECT ON t TO someone", "GRANT is not a read-only query", 1, 1),
    ("postgresql", "COPY (SELECT 1) TO PROGRAM 'touch /tmp/x'", "COPY is not a read-only query", 1, 1),
    ("postgresql", "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE", "SET is not", 1, 1),
    ("postgresql", "CALL wipe()", "CALL is not a read-only query", 1, 1),
    ("postgresql", "DO $$BEGIN DELETE FROM t; END$$", "DO is not a read-only query", 1, 1),
    ("postgresql", "EXPLAIN ANALYZE DELETE FROM t", "EXPLAIN is not a read-only query", 1, 1),
    ("postgresql", "LOCK TABLE t", "LOCK is not a read-only query", 1, 1),
    ("postgresql", "VACUUM t", "VACUUM is not a read-only query", 1, 1),
    ("postgresql", "COMMIT", "COMMIT is not a read-only query", 1, 1),
    ("postgresql", "  WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x", "INSERT is not", 1, 24),
    ("mysql", "SET SESSION TRANSACTION READ WRITE", "SET is not a read-only query", 1, 1),
    ("mysql", "EXPLAIN SELECT 1", "EXPLAIN is not a read-only query", 1, 1),
    ("mysql", "SHOW TABLES", "SHOW is not a read-only query", 1, 1),
    ("sqlite", "ATTACH DATABASE '/tmp/x.db' AS x", "ATTACH is not a read-only query", 1, 1),
    ("sqlite", "PRAGMA writable_schema = 1", "PRAGMA is not a read-only query", 1, 1),
    ("duckdb", "COPY t TO '/tmp/x.csv'", "COPY is not a read-only query", 1, 1),
    ("duckdb", "INSTALL httpfs", "INSTALL is not a read-only query", 1, 1),
    # -- writes and locks inside a query ------------------------------------------------------------------
    ("postgresql", "WITH d AS (\n  DELETE FROM t RETURNING *\n)\nSELECT * FROM d", "DELETE inside the query", 2, 3),
    ("postgresql", "WITH u AS MATERIALIZED (UPDATE t SET a = 1 RETURNING *) SELECT * FROM u", "UPDATE inside", 1, 25),
    ("postgresql", "SELECT (WITH i AS (INSERT INTO t VALUES (1) RETURNING 1) SELECT 1)", "INSERT inside", 1, 20),
    ("postgresql", "SELECT * INTO copy_of_t FROM t", "SELECT ... INTO writes", 1, 10),
    ("mysql", "SELECT a INTO @x FROM t", "SELECT ... INTO writes", 1, 10),
    ("postgresql", "SELECT * FROM t\nFOR UPDATE", "FOR UPDATE/SHARE locks rows", 2, 1),
    ("postgresql", "SELECT * FROM t FOR NO KEY UPDATE", "locks rows", 1, 17),
    ("postgresql", "SELECT * FROM t FOR KEY SHARE", "locks rows", 1, 17),
    ("postgresql", "SELECT * FROM (SELECT * FROM t FOR SHARE) s", "locks rows", 1, 32),
    ("mysql", "SELECT * FROM t LOCK IN SHARE MODE", "locks rows", 1, 17),
    ("sqlite", "SELECT * FROM t FOR UPDATE", "locks rows", 1, 17),
    ("duckdb", "SELECT * FROM t FOR UPDATE", "locks rows", 1, 17),
    ("mariadb", "SELECT @n := 1", "':=' assigns a session variable", 1, 11),
    # -- functions that reach outside the query -----------------------------------------------------------
    ("postgresql", "SELECT a,\n  pg_read_file('/etc/passwd') AS f FROM t", "function pg_read_file()", 2, 3),
    ("postgresql", "SELECT pg_catalog.pg_read_file('/etc/passwd')", "function pg_read_file()", 1, 19),
    ("postgresql", "SELECT PG_READ_FILE('/etc/passwd')", "function pg_read_file()", 1, 8),
    ("postgresql", "SELECT \"pg_read_file\"('/etc/passwd')", "function pg_read_file()", 1, 8),
    ("postgresql", "SELECT * FROM t WHERE a IN (SELECT pg_sleep(10))", "function pg_sleep()", 1, 36),
    ("postgresql", "SELECT * FROM pg_ls_dir('/')", "function pg_ls_dir()", 1, 15),
    ("postgresql", "WITH f AS (SELECT lo_import('/etc/passwd') AS o) SELECT o FROM f", "function lo_import()", 1, 19),
    ("postgresql", "SELECT query_to_xml('DELETE FROM t', true, true, '')", "function query_to_xml()", 1, 8),
    ("mysql", "SELECT LOAD_FILE('/etc/passwd')", "function load_file()", 1, 8),
    ("mysql", "SELECT `sleep`(5)", "function sleep()", 1, 8),
    ("sqlite", "SELECT load_extension('/tmp/evil.so')", "function load_extension()", 1, 8),
    ("duckdb", "SELECT read_csv('/etc/passwd')", "function read_csv()", 1, 8),
    ("snowflake", "SELECT pg_read_file('/etc/passwd')", "function pg_read_file()", 1, 8),
    ("snowflake", "SELECT load_file('/etc/passwd')", "function load_file()", 1, 8),
    # -- strings and table functions used as tables -------------------------------------------------------
    ("postgresql", "SELECT * FROM '/etc/passwd'", "a string used as a table ('/etc/passwd')", 1, 15),
    ("duckdb", "FROM 'data.csv'", "a string used as a table ('data.csv')", 1, 6),
    ("duckdb", "SELECT * FROM t JOIN 's3://bucket/x.parquet' p ON true", "a string used as a table", 1, 22),
    ("duckdb", 'SELECT * FROM "data.csv"', "a table named like a path or URL ('data.csv')", 1, 15),
    ("duckdb", "SELECT * FROM read_csv('/etc/passwd')", "table function read_csv() in FROM", 1, 15),
    ("duckdb", "SELECT * FROM query_table('secrets')", "table function query_table() in FROM", 1, 15),
    ("clickhouse", "SELECT * FROM url('http://10.0.0.1/', 'CSV', 'a String')", "table function url() in FROM", 1, 15),
    ("snowflake", "SELECT * FROM some_table_function('x')", "table function some_table_function()", 1, 15),
    # -- text MySQL would read differently ----------------------------------------------------------------
    ("mysql", "SELECT 1 /*! , SLEEP(5) */", "/*! ... */ is an executable comment", 1, 10),
    ("mariadb", "/*M!100100 SELECT SLEEP(5), */ SELECT 1", "/*M! ... */ is an executable comment", 1, 1),
    ("mysql", "SELECT 1\n  /*!50000 UNION SELECT LOAD_FILE('/etc/passwd') */", "executable comment", 2, 3),
    ("postgresql", "SELECT 1 /*! , pg_sleep(5) */", "executable comment", 1, 10),
    ("sqlite", "SELECT 1 /*! x */", "executable comment", 1, 10),
    ("mysql", "SELECT 'it\\' , LOAD_FILE('/etc/passwd') -- '", "a backslash before a quote", 1, 8),
    ("postgresql", "SELECT a FROM t WHERE b = 'x\\' OR pg_sleep(5) IS NULL -- '", "a backslash before a quote", 1, 27),
]


@pytest.mark.parametrize(("backend", "sql", "reason", "line", "column"), REFUSED)
def test_refusals_name_the_reason_and_the_position(backend: str, sql: str, reason: str, line: int, column: int) -> None:
    refusal = check_query(sql, backend)

    assert refusal is not None, sql
    assert reason in refusal.reason
    assert (refusal.line, refusal.column) == (line, column)
    assert str(refusal) == f"{refusal.reason} at line {line}, column {column}"


@pytest.mark.parametrize("sql", ["", "   ", "-- only a comment\n", "/* nothing */ ;"])
def test_an_empty_query_is_refused_without_a_position(sql: str) -> None:
    refusal = check_query(sql, "postgresql")

    assert refusal == Refusal("the query is empty: write one SELECT")
    assert str(refusal) == "the query is empty: write one SELECT"


def test_a_query_nested_too_deeply_to_parse_is_refused() -> None:
    sql = "SELECT " + "(" * 5000 + "1" + ")" * 5000

    refusal = check_query(sql, "postgresql")

    assert refusal is not None and "nested too deeply" in refusal.reason


# The functions of the issue, per dialect family: each is refused however it is spelled.
DENIED = {
    "postgresql": """pg_read_file pg_read_binary_file pg_ls_dir pg_ls_logdir pg_ls_waldir pg_stat_file lo_import
        lo_export lo_get lo_put lo_from_bytea lo_unlink dblink dblink_exec dblink_connect pg_file_write
        pg_file_rename pg_file_unlink set_config query_to_xml query_to_xml_and_xmlschema cursor_to_xml
        database_to_xml schema_to_xml pg_sleep pg_sleep_for pg_sleep_until pg_terminate_backend pg_cancel_backend
        pg_reload_conf pg_rotate_logfile pg_promote pg_switch_wal pg_advisory_lock pg_advisory_xact_lock
        pg_try_advisory_lock pg_logical_emit_message pg_replication_origin_create pg_create_restore_point
        pg_create_logical_replication_slot pg_drop_replication_slot pg_notify nextval setval""",
    "mysql": "load_file sleep benchmark get_lock sys_exec sys_eval",
    "mariadb": "load_file sleep benchmark get_lock sys_exec sys_eval",
    "sqlite": "load_extension readfile writefile edit fts3_tokenizer",
    "duckdb": "read_csv read_csv_auto read_json read_json_auto read_parquet read_text read_blob glob sniff_csv",
}
QUOTE = {"postgresql": '"', "mysql": "`", "mariadb": "`", "sqlite": '"', "duckdb": '"'}
SPELLINGS = [
    pytest.param("SELECT {f}('x') AS v", id="plain"),
    pytest.param("SELECT {F}('x') AS v", id="upper"),
    pytest.param("SELECT {q}{f}{q}('x') AS v", id="quoted"),
    pytest.param("SELECT a,\n       some_schema.{f}('x') AS v FROM t", id="qualified"),
    pytest.param("SELECT * FROM t WHERE a = (SELECT {f}('x'))", id="subquery"),
]


@pytest.mark.parametrize(
    ("backend", "function"), [(backend, f) for backend, names in DENIED.items() for f in names.split()]
)
@pytest.mark.parametrize("template", SPELLINGS)
def test_denied_functions_are_refused_however_spelled(backend: str, function: str, template: str) -> None:
    sql = template.format(f=function, F=function.upper(), q=QUOTE[backend])

    refusal = check_query(sql, backend)

    assert refusal is not None, sql
    assert refusal.reason.startswith(f"function {function}() is not allowed"), refusal
    offset = sql.lower().index(function)
    before = sql[:offset]
    if before.endswith(QUOTE[backend]):
        offset -= 1
        before = before[:-1]
    assert (refusal.line, refusal.column) == (before.count("\n") + 1, offset - (before.rfind("\n") + 1) + 1)


@pytest.mark.parametrize("function", DENIED["duckdb"].split())
def test_duckdb_table_functions_that_read_files_are_refused_in_from(function: str) -> None:
    refusal = check_query(f"SELECT * FROM {function}('/etc/passwd') AS f", "duckdb")

    assert refusal is not None and function in refusal.reason
    assert (refusal.line, refusal.column) == (1, 15)


def test_a_function_allowed_in_one_dialect_is_refused_in_the_one_that_has_it() -> None:
    assert check_query("SELECT sleep(1)", "postgresql") is None  # no such function there: the server says so
    assert check_query("SELECT sleep(1)", "mariadb") is not None
    assert check_query("SELECT pg_sleep(1)", "postgresql") is not None


def test_query_body_is_what_trackcheck_wraps() -> None:
    assert query_body("  SELECT 1 ;; \n") == "  SELECT 1"
    assert query_body("SELECT 1 -- note;\n") == "SELECT 1 -- note"


# -- the source -----------------------------------------------------------------------------------------------


def sql_stage(**keys: Any) -> StageSpec:
    return StageSpec.model_validate({"name": "wh", "source": "wh", "compare": {"with": "expect"}, **keys})


def sql_source(url: str) -> SqlSource:
    return SqlSource("wh", SqlOptions(url=url))


@pytest.mark.parametrize(
    ("url", "query", "message"),
    [
        (
            "postgresql://reader@db.internal/analytics",
            "SELECT id,\n  pg_read_file('/etc/passwd') FROM t",
            "query: function pg_read_file() is not allowed: it reaches the server's files, network, processes, "
            "locks, sequences or settings at line 2, column 3",
        ),
        (
            "postgres://reader@db/a",
            ESCAPE,
            "query: ')' has no matching '(': it would close trackcheck's SELECT * FROM (<query>) at line 1, column 9",
        ),
        ("mariadb://root@db/a", "SELECT SLEEP(5)", "query: function sleep() is not allowed"),
        ("mysql+pymysql://root@db/a", "SELECT 1 /*! , SLEEP(5) */", "query: /*! ... */ is an executable comment"),
        ("sqlite:////tmp/x.db", "SELECT readfile('/etc/passwd')", "query: function readfile() is not allowed"),
    ],
)
def test_check_read_refuses_a_query_in_the_dialect_of_the_url(url: str, query: str, message: str) -> None:
    problem = sql_source(url).check_read(sql_stage(query=query))

    assert problem is not None and problem.startswith(message)


def test_check_read_accepts_read_only_queries_and_tables() -> None:
    source = sql_source("postgresql://reader@db/a")

    assert source.check_read(sql_stage(query="SELECT a::int FROM t -- note")) is None
    for table in ("events", "analytics.events", "warehouse.analytics.events_2024"):
        assert source.check_read(sql_stage(table=table)) is None


@pytest.mark.parametrize("table", ["a.b.c.d", "events; DROP TABLE x", "a..b", "analytics.", '"events"', "my-table"])
def test_check_read_refuses_a_table_that_is_not_one_to_three_names(table: str) -> None:
    problem = sql_source("postgresql://reader@db/a").check_read(sql_stage(table=table))

    assert problem == (
        f"table: {table!r} is not a table name: write table, schema.table or catalog.schema.table "
        "(letters, digits and _)"
    )


# -- PostgreSQL: always the extended protocol -----------------------------------------------------------------


def test_postgres_statement_without_filters_still_has_a_bound_parameter() -> None:
    source = sql_source("postgresql://reader@db/a")
    request = FetchRequest(plan="p", stage=sql_stage(query="SELECT a FROM t"))

    compiled = build_statement(postgresql.dialect(), request, source).compile(dialect=postgresql.dialect())

    assert compiled.params == {"tc_limit": None}  # LIMIT NULL: no limit, and the extended protocol
    assert str(compiled).endswith("LIMIT %(tc_limit)s")


def test_postgres_statement_with_filters_binds_only_the_filters() -> None:
    source = sql_source("postgresql://reader@db/a")
    request = FetchRequest(plan="p", stage=sql_stage(query="SELECT a FROM t"), filters={"a": [1]})

    compiled = build_statement(postgresql.dialect(), request, source).compile(dialect=postgresql.dialect())

    assert list(compiled.params) == ["tc_p0"]
    assert "LIMIT" not in str(compiled)


def test_other_dialects_wrap_the_query_without_a_parameter() -> None:
    source = sql_source("sqlite:////tmp/x.db")
    request = FetchRequest(plan="p", stage=sql_stage(query="SELECT a FROM t ;"))

    compiled = build_statement(sqlite.dialect(), request, source).compile(dialect=sqlite.dialect())

    assert compiled.params == {}
    assert str(compiled) == "SELECT * FROM (\nSELECT a FROM t\n) AS tc_q"
