"""ColumnarReader against real PostgreSQL (ADBC), MariaDB and SQLite (driver tuples): the same rows as
``SqlSource.fetch``, the same bound filters, the same session limits and errors."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, Numeric, String, Table, create_engine, insert

from trackcheck.compare.columnar import ColumnarRecordsCheck
from trackcheck.compare.records import RecordsCheck
from trackcheck.errors import SourceConnectError, SourceQueryError, SourceTimeoutError
from trackcheck.plan.model import StageSpec
from trackcheck.sources.base import FetchRequest
from trackcheck.sources.columnar import ColumnarReader
from trackcheck.sources.sql import SqlOptions, SqlSource

pytestmark = pytest.mark.integration

metadata = MetaData()
events = Table(
    "col_events",
    metadata,
    Column("event_id", String(40), primary_key=True),
    Column("uid", Integer),
    Column("amount", Numeric(10, 2)),
    Column("test_id", String(40)),
)
ROWS = [
    {"event_id": "e1", "uid": 42, "amount": Decimal("25.50"), "test_id": "t1"},
    {"event_id": "e2", "uid": 42, "amount": Decimal("10.00"), "test_id": "t1"},
    {"event_id": "e3", "uid": 7, "amount": None, "test_id": "t2"},
    {"event_id": "e4", "uid": 9, "amount": Decimal("3.10"), "test_id": 'we"ird\\id'},
]


def stage(**keys: Any) -> StageSpec:
    base = {"name": "wh", "source": "warehouse", "table": "col_events", "compare": {"with": "expect"}}
    return StageSpec.model_validate({**base, **keys})


@pytest.fixture
def reader(request: pytest.FixtureRequest) -> Iterator[Callable[..., tuple[SqlSource, ColumnarReader]]]:
    made: list[tuple[SqlSource, ColumnarReader]] = []

    def make(url: str, **options: Any) -> tuple[SqlSource, ColumnarReader]:
        source = SqlSource("warehouse", SqlOptions.model_validate({"url": url, **options}))
        pair = (source, ColumnarReader(source))
        made.append(pair)
        return pair

    yield make
    for source, columns in made:
        columns.close()
        source.close()


def filled(url: str) -> str:
    engine = create_engine(url)
    metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(insert(events), ROWS)
    engine.dispose()
    return url


def request_for(spec: StageSpec, **filters: list[Any]) -> FetchRequest:
    return FetchRequest(plan="p", stage=spec, filters=filters)


@pytest.mark.parametrize("backend", ["postgres_url", "mariadb_url", "sqlite_url"])
def test_the_table_holds_the_rows_fetch_returns(backend: str, request: pytest.FixtureRequest, reader: Any) -> None:
    source, columns = reader(filled(request.getfixturevalue(backend)))
    for filters in ({"test_id": ["t1", 'we"ird\\id']}, {"uid": [42, 9]}, {}):
        wanted = request_for(stage(), **filters)
        table = columns.read(wanted)
        assert table.to_pylist() == source.fetch(wanted).records, filters
    assert sorted(table.column("event_id").to_pylist()) == ["e1", "e2", "e3", "e4"]


def test_a_postgresql_diff_in_columns_is_the_row_diff(postgres_url: str, reader: Any) -> None:
    source, columns = reader(filled(postgres_url))
    wanted = request_for(stage(), test_id=["t1", "t2"])
    spec = stage().compare
    reference = [
        {"event_id": "e1", "uid": 42, "amount": 25.5, "test_id": "t1"},
        {"event_id": "e2", "uid": 42, "amount": "10.01", "test_id": "t1"},
        {"event_id": "e9", "uid": 1, "amount": None, "test_id": "t1"},
    ]
    in_columns = ColumnarRecordsCheck(spec, ["event_id"]).evaluate_table(columns.read(wanted), reference)
    in_rows = RecordsCheck(spec, ["event_id"]).evaluate(source.fetch(wanted).records, reference)
    assert in_columns.to_dict() == in_rows.to_dict()
    assert (in_columns.missing, in_columns.unexpected) == (["e9"], ["e3"])
    assert in_columns.mismatches == [{"key": "e2", "field": "amount", "expected": "10.01", "actual": 10}]


def test_postgresql_reads_reuse_one_connection_per_thread(postgres_url: str, reader: Any) -> None:
    _, columns = reader(filled(postgres_url))
    columns.read(request_for(stage()))
    columns.read(request_for(stage()))
    assert len(columns._connections) == 1
    worker = threading.Thread(target=columns.read, args=(request_for(stage()),))
    worker.start()
    worker.join()
    assert len(columns._connections) == 2


def test_a_postgresql_read_past_the_query_timeout_is_a_timeout(postgres_url: str, reader: Any) -> None:
    _, columns = reader(postgres_url, query_timeout="0.3s")
    with pytest.raises(SourceTimeoutError, match="longer than 0.3s"):
        columns.read(request_for(stage(table=None, query="SELECT 1 AS x FROM pg_sleep(3)")))


def test_the_postgresql_session_is_read_only(postgres_url: str, reader: Any) -> None:
    _, columns = reader(filled(postgres_url))
    columns.read(request_for(stage()))
    with columns._connections[0].cursor() as cursor, pytest.raises(Exception, match="read-only"):
        cursor.execute("CREATE TABLE tc_should_not_exist (x int)")


def test_connect_errors_never_show_the_password(reader: Any) -> None:
    _, columns = reader("postgresql+psycopg://postgres:s3cretpw@127.0.0.1:1/x")
    with pytest.raises(SourceConnectError) as caught:
        columns.read(request_for(stage()))
    assert "s3cretpw" not in str(caught.value)
    assert "***" in str(caught.value)


def test_an_unknown_table_is_a_permanent_query_error(postgres_url: str, reader: Any) -> None:
    _, columns = reader(postgres_url)
    with pytest.raises(SourceQueryError) as caught:
        columns.read(request_for(stage(table="no_such_table")))
    assert caught.value.kind == "permanent"


def test_a_stage_with_select_stays_on_the_row_path(postgres_url: str, reader: Any) -> None:
    _, columns = reader(postgres_url)
    with pytest.raises(SourceQueryError, match="without select"):
        columns.read(request_for(stage(select={"id": "event_id"})))


def test_the_planner_estimates_a_postgresql_read(postgres_url: str, reader: Any) -> None:
    source, _ = reader(filled(postgres_url))
    source.open()
    engine = create_engine(postgres_url)
    with engine.begin() as connection:
        connection.exec_driver_sql("ANALYZE col_events")
    engine.dispose()

    assert source.estimated_rows(request_for(stage())) == len(ROWS)
    assert source.estimated_rows(request_for(stage(), test_id=["t1"])) in (1, 2, 3)  # an estimate, not a count
    # a read that cannot be planned has no estimate; the read itself then says why
    assert source.estimated_rows(request_for(stage(table="no_such_table"))) is None


def test_other_engines_have_no_estimate(mariadb_url: str, reader: Any) -> None:
    source, _ = reader(filled(mariadb_url))
    source.open()

    assert source.estimated_rows(request_for(stage())) is None
