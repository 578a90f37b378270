"""SqlSource against real SQLite, PostgreSQL and MariaDB databases (one fresh database per test)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, Engine, Integer, MetaData, Numeric, String, Table, create_engine, event, insert
from sqlalchemy.engine import make_url

from trackcheck.errors import SourceConnectError, SourceQueryError, SourceTimeoutError
from trackcheck.plan.model import SourceSpec, StageSpec
from trackcheck.sources import build_source
from trackcheck.sources.base import FetchRequest
from trackcheck.sources.sql import SqlOptions, SqlSource

PASSWORD = "s3cretpw"
metadata = MetaData()
ods_events = Table(
    "ods_events",
    metadata,
    Column("event_id", String(40), primary_key=True),
    Column("event_name", String(40)),
    Column("uid", Integer),
    Column("amount", Numeric(10, 2)),
    Column("test_id", String(40)),
)
ROWS = [
    {"event_id": "e1", "event_name": "signup", "uid": 42, "amount": Decimal("25.50"), "test_id": "t1"},
    {"event_id": "e2", "event_name": "purchase", "uid": 42, "amount": Decimal("10.00"), "test_id": "t1"},
    {"event_id": "e3", "event_name": "signup", "uid": 7, "amount": None, "test_id": "t2"},
    {"event_id": "e4", "event_name": "purchase", "uid": 7, "amount": Decimal("3.10"), "test_id": "t3"},
    {"event_id": "e5", "event_name": "signup", "uid": 9, "amount": None, "test_id": 'we"ird\\id'},
]
ALIASED = "SELECT event_id, event_name AS event, uid AS user_id, amount, test_id FROM ods_events"


def stage(**keys: Any) -> StageSpec:
    return StageSpec.model_validate({"name": "wh", "source": "warehouse", "compare": {"with": "expect"}, **keys})


def ids(records: list[dict[str, Any]]) -> list[str]:
    return sorted(r["event_id"] for r in records)


@pytest.fixture
def database(sql_url: str) -> Iterator[Engine]:
    """The test database with ``ods_events`` filled, through a read-write engine of the test's own."""
    engine = create_engine(sql_url)
    metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(insert(ods_events), ROWS)
    yield engine
    engine.dispose()


@pytest.fixture
def make_source() -> Iterator[Callable[..., SqlSource]]:
    """SqlSource factory; on teardown every source is closed and must hold no checked-out connection."""
    made: list[SqlSource] = []

    def make(url: str, **options: Any) -> SqlSource:
        source = SqlSource("warehouse", SqlOptions.model_validate({"url": url, **options}))
        made.append(source)
        return source

    yield make
    for source in made:
        if source._engine is not None:
            assert source._engine.pool.checkedout() == 0, "a fetch left a connection checked out"
        source.close()


def fetch(source: SqlSource, spec: StageSpec, **filters: list[Any]) -> list[dict]:
    return source.fetch(FetchRequest(plan="p", stage=spec, filters=filters)).records


def test_filter_with_thousands_of_values_returns_exactly_the_matching_rows(
    database: Engine, make_source: Callable[..., SqlSource]
) -> None:
    with database.begin() as connection:
        connection.execute(
            insert(ods_events),
            [{"event_id": f"b{i}", "event_name": "view", "uid": i, "test_id": "bulk"} for i in range(3000)],
        )
    wanted = [f"b{i}" for i in range(0, 5000, 2)]  # 2,500 values, 1,500 of them exist
    source = make_source(str(database.url))

    records = fetch(source, stage(table="ods_events"), event_id=wanted)

    assert ids(records) == sorted(f"b{i}" for i in range(0, 3000, 2))


def test_filter_by_several_fields_keeps_rows_matching_all(
    database: Engine, make_source: Callable[..., SqlSource]
) -> None:
    source = make_source(str(database.url))

    records = fetch(source, stage(query=ALIASED), test_id=["t1", "t2", "t3"], event=["signup"])

    assert ids(records) == ["e1", "e3"]


def test_query_aliases_are_the_record_fields_and_values_keep_their_meaning(
    database: Engine, make_source: Callable[..., SqlSource]
) -> None:
    source = make_source(str(database.url))

    records = fetch(source, stage(query=ALIASED + " ;"), event_id=["e1"])

    assert len(records) == 1
    record = records[0]
    assert set(record) == {"event_id", "event", "user_id", "amount", "test_id"}
    assert (record["event"], record["user_id"], record["test_id"]) == ("signup", 42, "t1")
    assert Decimal(str(record["amount"])) == Decimal("25.5")


def test_text_values_match_an_integer_column(database: Engine, make_source: Callable[..., SqlSource]) -> None:
    """Run parameters default to strings: user_id '42' must find the integer 42."""
    source = make_source(str(database.url))

    assert ids(fetch(source, stage(query=ALIASED), user_id=["42", "1000"])) == ["e1", "e2"]
    assert ids(fetch(source, stage(query=ALIASED), user_id=[7])) == ["e3", "e4"]


def test_table_and_select(database: Engine, make_source: Callable[..., SqlSource]) -> None:
    source = make_source(str(database.url))
    spec = stage(table="ods_events", select={"id": "event_id", "who": "uid"})

    records = fetch(source, spec, test_id=["t1"])

    assert sorted(records, key=lambda r: r["id"]) == [{"id": "e1", "who": 42}, {"id": "e2", "who": 42}]


def test_values_are_bound_never_pasted_into_sql(database: Engine, make_source: Callable[..., SqlSource]) -> None:
    source = make_source(str(database.url))

    injected = fetch(source, stage(table="ods_events"), test_id=["x' OR '1'='1", 'x" OR "1"="1'])
    quoted = fetch(source, stage(table="ods_events"), test_id=['we"ird\\id'])

    assert injected == []
    assert ids(quoted) == ["e5"]


def test_colons_percent_signs_and_trailing_comments_in_the_query_are_kept(
    database: Engine, make_source: Callable[..., SqlSource]
) -> None:
    source = make_source(str(database.url))
    query = "SELECT event_id, 'at 10:30 :name 100%' AS note FROM ods_events -- the staging copy"

    records = fetch(source, stage(query=query), event_id=["e1"])

    assert records == [{"event_id": "e1", "note": "at 10:30 :name 100%"}]


def test_bad_sql_is_a_query_error_naming_source_and_stage(
    database: Engine, make_source: Callable[..., SqlSource]
) -> None:
    source = make_source(str(database.url))

    with pytest.raises(SourceQueryError) as caught:
        fetch(source, stage(query="SELECT event_id FROM no_such_table"), event_id=["e1"])

    assert "'warehouse'" in str(caught.value) and "'wh'" in str(caught.value)
    assert "no_such_table" in str(caught.value)


SLOW = {
    "sqlite": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100000000) "
    "SELECT count(*) AS n FROM c",
    "postgresql": "SELECT pg_sleep(5) AS n",
    "mysql": "SELECT SLEEP(5) AS n",
}


def test_a_query_longer_than_query_timeout_is_a_timeout_error(
    database: Engine, make_source: Callable[..., SqlSource]
) -> None:
    source = make_source(str(database.url), query_timeout="300ms")

    with pytest.raises(SourceTimeoutError, match="longer than 0.3s"):
        fetch(source, stage(query=SLOW[database.dialect.name]))
    assert fetch(source, stage(table="ods_events"), event_id=["e1"]) != []  # the source is still usable


def test_bare_schemes_pick_the_installed_driver(database: Engine, make_source: Callable[..., SqlSource]) -> None:
    url = make_url(str(database.url))
    bare = {"postgresql": "postgres", "mysql": "mysql", "sqlite": "sqlite"}[url.get_backend_name()]
    source = make_source(url.set(drivername=bare).render_as_string(hide_password=False))

    assert ids(fetch(source, stage(table="ods_events"), test_id=["t2"])) == ["e3"]


def test_postgres_gets_all_values_as_one_array_parameter(
    postgres_url: str, make_source: Callable[..., SqlSource]
) -> None:
    engine = create_engine(postgres_url)
    metadata.create_all(engine)
    engine.dispose()
    source = make_source(postgres_url)
    seen: list[Any] = []
    event.listen(source.engine, "before_cursor_execute", lambda *args: seen.append(args[3]))

    fetch(source, stage(query=ALIASED), test_id=[f"t{i}" for i in range(2500)], event=["signup", "purchase"])

    assert [len(p) for p in seen if isinstance(p, dict) and p] == [2]


def test_postgres_value_that_cannot_be_the_column_type_is_a_clear_query_error(
    postgres_url: str, make_source: Callable[..., SqlSource]
) -> None:
    engine = create_engine(postgres_url)
    metadata.create_all(engine)
    engine.dispose()
    source = make_source(postgres_url)

    with pytest.raises(SourceQueryError, match="does not fit the column's type"):
        fetch(source, stage(query=ALIASED), user_id=["not-a-number"])


@pytest.mark.parametrize("backend", ["postgres", "mariadb"])
def test_the_connection_is_read_only(
    backend: str, request: pytest.FixtureRequest, make_source: Callable[..., SqlSource]
) -> None:
    url = request.getfixturevalue(f"{backend}_url")
    engine = create_engine(url)
    metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(insert(ods_events), ROWS)
        if backend == "postgres":
            connection.exec_driver_sql(
                "CREATE FUNCTION wipe() RETURNS int LANGUAGE sql AS 'DELETE FROM ods_events; SELECT 1'"
            )
        else:
            connection.exec_driver_sql(
                "CREATE FUNCTION wipe() RETURNS int MODIFIES SQL DATA BEGIN DELETE FROM ods_events; RETURN 1; END"
            )
    source = make_source(url)

    with pytest.raises(SourceQueryError, match="(?i)read.only"):
        fetch(source, stage(query="SELECT wipe() AS n"))

    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM ods_events").scalar() == len(ROWS)
    engine.dispose()


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql+psycopg://postgres:{PASSWORD}@127.0.0.1:1/x",  # nothing listens on port 1
        f"mysql+pymysql://root:{PASSWORD}@127.0.0.1:1/x",
        f"mysql://root:{PASSWORD}@127.0.0.1:3306/mysql",  # wrong password
        "postgresql://postgres:s3cret%40pw@127.0.0.1:1/x",  # URL-encoded password
    ],
)
def test_connect_errors_never_show_the_password(url: str, make_source: Callable[..., SqlSource]) -> None:
    source = make_source(url, connect_timeout="2s")
    source.open()  # no I/O yet: opening only builds the engine

    with pytest.raises(SourceConnectError) as caught:
        fetch(source, stage(table="ods_events"), event_id=["e1"])

    message = str(caught.value)
    assert "cannot connect" in message and "'warehouse'" in message
    for secret in (PASSWORD, "s3cret%40pw", "s3cret@pw"):
        assert secret not in message


def test_a_mistyped_sqlite_path_is_a_connect_error_not_a_new_empty_database(
    tmp_path: Path, make_source: Callable[..., SqlSource]
) -> None:
    missing = tmp_path / "typo.db"
    source = make_source(f"sqlite:///{missing}")

    with pytest.raises(SourceConnectError, match="unable to open database file"):
        fetch(source, stage(table="ods_events"))
    assert not missing.exists()


@pytest.mark.parametrize(
    ("url", "extra"),
    [("duckdb:///tmp/x.duckdb", "duckdb"), ("clickhouse://u:pw@localhost/db", "clickhouse")],
)
def test_a_missing_driver_names_the_extra_to_install(url: str, extra: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # the dev install has DuckDB's driver (recon's tests use it): hide it as a plain install lacks it
    for module in ("duckdb", "duckdb_engine"):
        monkeypatch.setitem(sys.modules, module, None)
    source = build_source("warehouse", SourceSpec(type="sql", url=url), plan="p")

    with pytest.raises(SourceConnectError, match=rf"pip install 'trackcheck\[{extra}\]'"):
        source.open()


def test_concurrent_fetches_share_one_engine(database: Engine, make_source: Callable[..., SqlSource]) -> None:
    source = make_source(str(database.url))
    wanted = {"t1": ["e1", "e2"], "t2": ["e3"], "t3": ["e4"]}
    jobs = [test_id for test_id in wanted for _ in range(10)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda t: ids(fetch(source, stage(table="ods_events"), test_id=[t])), jobs))

    assert results == [wanted[t] for t in jobs]
