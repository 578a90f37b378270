"""Large sql stages read and compared in columns by the engine (issue 13): past ``COLUMNAR_ROWS`` rows a
PostgreSQL stage is read through ADBC into Arrow and compared there, with the verdict, the evidence and the
snapshot the row path gives; a table Arrow cannot type is read as records without failing the run. Rows read
in columns beyond ``snapshot_limit`` are kept whole in columns, and later stages compare with all of them.

The threshold is lowered to 20,000 rows here, so that tables of 25,000 rows cross it in a few seconds."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select, text

import trackcheck
from trackcheck.compare.tables import table_of
from trackcheck.engine import Engine, core, store_plan
from trackcheck.sources.columnar import ColumnarReader
from trackcheck.store.models import Run
from trackcheck.store.repository import Store
from trackcheck.store.ticks import Waiting

pytestmark = pytest.mark.integration

ROWS = 25_000  # past COLUMNAR_ROWS, lowered to 20,000 (``threshold``)

PLAN = """\
name: columns
key: event_id
params:
  test_id: {required: true}
defaults: {interval: 1s, timeout: 30s, snapshot_limit: 30000}
sources:
  pg: {type: sql, url: "PG_URL"}
stages:
  - name: ods
    source: pg
    table: events
    where: {test_id: "{test_id}"}
    compare: {with: expect, fields: [test_id]}
  - name: dwd
    source: pg
    table: dwd_events
    where: {test_id: "{test_id}"}
    compare: {with: ods}
  - name: bi
    source: pg
    table: bi_events
    where: {test_id: "{test_id}"}
    compare: {with: dwd, fields: [amount, ts, seen, day]}
"""

COLUMNS = (
    "event_id text PRIMARY KEY, test_id text, n integer, amount numeric(12,2), ts timestamptz, seen boolean, day date"
)
ROW = (
    "SELECT :test_id || '-' || i, :test_id, i, (i % 1000) / 100.0, "
    "timestamptz '2026-12-04 10:00:00+00' + i * interval '1 millisecond', i % 3 = 0, date '2026-12-04' - i % 400 "
    "FROM generate_series(0, :n - 1) AS i"
)


@pytest.fixture(autouse=True)
def threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(core, "COLUMNAR_ROWS", 20_000)


@pytest.fixture
def plan(tmp_path: Path, postgres_url: str) -> Path:
    engine = create_engine(postgres_url)
    with engine.begin() as c:
        for table in ("events", "dwd_events", "bi_events"):
            c.execute(text(f"CREATE TABLE {table} ({COLUMNS})"))
            c.execute(text(f"INSERT INTO {table} {ROW}"), {"test_id": "other", "n": 7})  # another run's rows
    engine.dispose()
    path = tmp_path / "plan.yaml"
    path.write_text(PLAN.replace("PG_URL", postgres_url))
    return path


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The stages read in columns, in order."""
    stages: list[str] = []
    read = ColumnarReader.read

    def counted(self: ColumnarReader, request: Any) -> Any:
        stages.append(request.stage.name)
        return read(self, request)

    monkeypatch.setattr(ColumnarReader, "read", counted)
    return stages


def _load(url: str, test_id: str, *statements: str) -> list[dict[str, Any]]:
    """The run's rows in the three tables, then ``statements`` applied; returns the expected records."""
    engine = create_engine(url)
    with engine.begin() as c:
        for table in ("events", "dwd_events", "bi_events"):
            c.execute(text(f"INSERT INTO {table} {ROW}"), {"test_id": test_id, "n": ROWS})
        for statement in statements:
            c.execute(text(statement))
    engine.dispose()
    return [{"event_id": f"{test_id}-{i}", "test_id": test_id} for i in range(ROWS)]


def _shown(result: Any) -> list[dict[str, Any]]:
    """What a user reads of each stage, but when it ran."""
    return [
        {k: v for k, v in stage.items() if k not in ("started_at", "finished_at", "attempts")}
        for stage in result.to_dict()["stages"]
    ]


def test_large_stages_read_in_columns_pass_and_compare_with_their_snapshots(
    plan: Path, postgres_url: str, reads: list[str]
) -> None:
    expect = _load(postgres_url, "t1")

    result = trackcheck.verify(plan, {"test_id": "t1"}, expect=expect, min_interval="1s")

    assert result.status == "passed", _shown(result)[1]["reason"]
    assert [(s.expected, s.found) for s in result.stages] == [(ROWS, ROWS)] * 3
    # every stage was read in columns: ods for its 25,000 expected records, dwd and bi for their reference's
    # snapshot, which the stage before them kept from its rows in columns
    assert reads == ["ods", "dwd", "bi"]


def test_a_failing_large_stage_says_what_the_row_path_says(
    plan: Path, postgres_url: str, reads: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    expect = _load(
        postgres_url,
        "t2",
        "UPDATE dwd_events SET amount = amount + 1 WHERE event_id IN ('t2-17', 't2-23000')",
        "UPDATE dwd_events SET ts = ts + interval '1 microsecond' WHERE event_id = 't2-5'",
        "UPDATE dwd_events SET seen = NULL, day = NULL WHERE event_id = 't2-9'",
        "DELETE FROM dwd_events WHERE event_id IN ('t2-3', 't2-24999')",
        "INSERT INTO dwd_events VALUES ('t2-x1', 't2', -1, 0, now(), true, NULL)",
    )

    in_columns = trackcheck.verify(plan, {"test_id": "t2"}, expect=expect, min_interval="1s")
    assert reads == ["ods", "dwd"]
    monkeypatch.setattr(core, "COLUMNAR_ROWS", 10 * ROWS)  # the same run again, read as records
    by_rows = trackcheck.verify(plan, {"test_id": "t2"}, expect=expect, min_interval="1s")
    assert reads == ["ods", "dwd"]

    assert in_columns.status == "failed"
    dwd = _shown(in_columns)[1]
    assert dwd["status"] == "failed"
    assert sorted(m["field"] for m in dwd["mismatches"]) == ["amount", "amount", "day", "seen", "ts"]
    assert (dwd["missing"], dwd["unexpected"]) == (["t2-3", "t2-24999"], ["t2-x1"])
    assert _shown(in_columns) == _shown(by_rows)


FAULTS = (
    "UPDATE dwd_events SET amount = amount + 1 WHERE event_id IN ('{id}-17', '{id}-23000')",
    "UPDATE dwd_events SET ts = ts + interval '1 microsecond' WHERE event_id = '{id}-5'",
    "UPDATE dwd_events SET seen = NULL, day = NULL WHERE event_id = '{id}-9'",
    "DELETE FROM dwd_events WHERE event_id IN ('{id}-3', '{id}-24999')",
    "INSERT INTO dwd_events VALUES ('{id}-x1', '{id}', -1, 0, now(), true, NULL)",
)


@pytest.mark.parametrize("backend", ["sqlite", "postgres", "mariadb"])
def test_a_stage_compares_with_more_rows_than_its_reference_snapshot_keeps_as_records(
    plan: Path,
    postgres_url: str,
    reads: list[str],
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    backend: str,
) -> None:
    # the snapshots keep 1,000 records to show; a stage read in columns keeps all 25,000 rows in columns too,
    # in the state database (each backend: COPY on PostgreSQL, a LONGBLOB under max_allowed_packet on MariaDB)
    state = request.getfixturevalue(f"{backend}_url")
    plan.write_text(plan.read_text().replace("snapshot_limit: 30000", "snapshot_limit: 1000"))
    expect = _load(postgres_url, "t6", *(fault.format(id="t6") for fault in FAULTS))

    in_columns = trackcheck.verify(plan, {"test_id": "t6"}, expect=expect, min_interval="1s", db=state)

    assert reads == ["ods", "dwd"]
    dwd = _shown(in_columns)[1]
    assert dwd["status"] == "failed", dwd["reason"]
    assert sorted(m["field"] for m in dwd["mismatches"]) == ["amount", "amount", "day", "seen", "ts"]
    assert (dwd["missing"], dwd["unexpected"]) == (["t6-3", "t6-24999"], ["t6-x1"])
    store = Store(state).open()
    ods = store.snapshots_for([in_columns.run_id], 0, arrow=True)[in_columns.run_id]
    assert (len(ods.records), ods.total, ods.truncated) == (1000, ROWS, True)
    assert ods.arrow is not None and table_of(ods.arrow).num_rows == ROWS
    assert store.snapshot_sizes([in_columns.run_id], 0) == {in_columns.run_id: (ROWS, False)}
    store.close()
    # the row path says the same, given a snapshot of every record
    plan.write_text(plan.read_text().replace("snapshot_limit: 1000", "snapshot_limit: 30000"))
    monkeypatch.setattr(core, "COLUMNAR_ROWS", 10 * ROWS)
    by_rows = trackcheck.verify(plan, {"test_id": "t6"}, expect=expect, min_interval="1s")
    assert _shown(in_columns) == _shown(by_rows)


def test_rows_in_columns_too_large_for_the_state_database_are_not_compared_with(
    plan: Path, postgres_url: str, reads: list[str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    plan.write_text(plan.read_text().replace("snapshot_limit: 30000", "snapshot_limit: 1000"))
    expect = _load(postgres_url, "t7")
    monkeypatch.setattr(Store, "largest_blob", lambda self: 4096)  # a MariaDB with a 1 MiB + 4 KiB packet

    result = trackcheck.verify(plan, {"test_id": "t7"}, expect=expect, min_interval="1s")

    dwd = _shown(result)[1]
    assert (result.status, dwd["status"]) == ("error", "error")
    assert dwd["reason"].endswith(
        f"stage 'ods' read {ROWS} records, more than its snapshot keeps (1000); raise defaults.snapshot_limit, "
        "or compare with method: checksum"
    )
    assert any(
        "more than the state database takes in one value" in r.getMessage() and "first 1000 records" in r.getMessage()
        for r in caplog.records
    )


def test_a_stage_read_as_records_compares_with_rows_kept_in_columns(
    plan: Path, postgres_url: str, reads: list[str]
) -> None:
    # dwd cannot be read in columns (jsonb): it compares its records with all of ods's rows, kept in columns
    _sql(postgres_url, "ALTER TABLE dwd_events ADD COLUMN extra jsonb")
    expect = _load(postgres_url, "t8", "UPDATE dwd_events SET amount = 0 WHERE event_id = 't8-24001'")
    plan.write_text(plan.read_text().replace("snapshot_limit: 30000", "snapshot_limit: 1000").split("  - name: bi")[0])

    result = trackcheck.verify(plan, {"test_id": "t8"}, expect=expect, min_interval="1s")

    assert reads == ["ods", "dwd"]  # dwd was tried in columns once
    dwd = _shown(result)[1]
    assert dwd["status"] == "failed"
    assert dwd["mismatches"] == [{"key": "t8-24001", "field": "amount", "expected": 0.01, "actual": 0}]
    assert (dwd["expected"], dwd["found"], dwd["missing"], dwd["unexpected"]) == (ROWS, ROWS, [], [])


def test_many_expected_events_are_kept_in_columns_and_never_parsed_at_a_poll(
    plan: Path, postgres_url: str, sqlite_url: str, reads: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    expect = _load(postgres_url, "t11", "INSERT INTO events VALUES ('t11-x1', 't11', -1, 0, now(), true, NULL)")
    expect[7]["test_id"] = "t11x"
    parse = Waiting.expect

    def refused(self: Waiting) -> Any:
        raise AssertionError("the expected events' JSON was parsed")

    monkeypatch.setattr(Waiting, "expect", property(refused))

    in_columns = trackcheck.verify(plan, {"test_id": "t11"}, expect=expect, min_interval="1s", db=sqlite_url)

    assert reads == ["ods"]
    ods = _shown(in_columns)[0]
    assert ods["status"] == "failed"
    assert ods["mismatches"] == [{"key": "t11-7", "field": "test_id", "expected": "t11x", "actual": "t11"}]
    assert (ods["expected"], ods["found"], ods["missing"], ods["unexpected"]) == (ROWS, ROWS + 1, [], ["t11-x1"])
    store = Store(sqlite_url).open()
    with store.session() as s:
        kept = s.execute(select(Run.expect_arrow).where(Run.id == in_columns.run_id)).scalar_one()
    store.close()
    assert kept is not None and table_of(kept).to_pylist() == expect
    # as records, parsed from their JSON, they say the same
    monkeypatch.setattr(Waiting, "expect", parse)
    monkeypatch.setattr(core, "COLUMNAR_ROWS", 10 * ROWS)
    by_rows = trackcheck.verify(plan, {"test_id": "t11"}, expect=expect, min_interval="1s")
    assert _shown(in_columns) == _shown(by_rows)


@pytest.mark.parametrize("backend", ["sqlite", "postgres", "mariadb"])
def test_a_reader_without_arrow_reads_the_expected_events_kept_in_columns_as_json(
    plan: Path, request: pytest.FixtureRequest, backend: str
) -> None:
    expect = [{"event_id": f"t12-{i}", "test_id": "t12", "n": i} for i in range(ROWS)]
    with Engine(request.getfixturevalue(f"{backend}_url")) as engine:
        plan_id = store_plan(engine, plan.read_text(), str(plan), None)[0]
        engine.submit(plan_id, {"test_id": "t12"}, expect=expect)
        [group] = engine.store.active_groups()

        [in_columns] = engine.store.waiting(group.group_key, arrow=True)
        [as_json] = engine.store.waiting(group.group_key, arrow=False)

    assert in_columns.expect_json is None and in_columns.expect_arrow is not None
    assert table_of(in_columns.expect_arrow).to_pylist() == expect
    assert as_json.expect_arrow is None and as_json.expect == expect


COLLECTED = """\
name: collected
key: event_id
params:
  test_id: {required: true}
defaults: {interval: 1s, timeout: 30s, snapshot_limit: 1000}
sources:
  spool: {type: file, path: "SPOOL/*.jsonl", format: jsonl}
  pg: {type: sql, url: "PG_URL"}
stages:
  - name: collector
    source: spool
    where: {test_id: "{test_id}"}
    compare: {with: expect, fields: [test_id]}
  - name: dwd
    source: pg
    table: dwd_events
    where: {test_id: "{test_id}"}
    compare: {with: collector, fields: [n, amount]}
"""


def _spool(folder: Path, test_id: str, **extra: Any) -> None:
    """The run's events as a collector wrote them: JSON lines with the values ``ROW`` puts in the tables."""
    folder.mkdir(exist_ok=True)
    with (folder / f"{test_id}.jsonl").open("w") as spool:
        for i in range(ROWS):
            event = {"event_id": f"{test_id}-{i}", "test_id": test_id, "n": i, "amount": (i % 1000) / 100, **extra}
            spool.write(json.dumps(event) + "\n")


def test_records_of_any_source_are_kept_in_columns_for_a_later_stage(
    tmp_path: Path, plan: Path, postgres_url: str, reads: list[str]
) -> None:
    # a file stage's 25,000 events, more than its snapshot keeps as records: kept in columns, the warehouse
    # stage compares every row with them
    expect = _load(postgres_url, "t9", "UPDATE dwd_events SET amount = 7 WHERE event_id = 't9-20500'")
    _spool(tmp_path / "spool", "t9")
    plan.write_text(COLLECTED.replace("SPOOL", str(tmp_path / "spool")).replace("PG_URL", postgres_url))

    result = trackcheck.verify(plan, {"test_id": "t9"}, expect=expect, min_interval="1s")

    assert reads == ["dwd"]  # the file is read as records, the warehouse in columns
    dwd = _shown(result)[1]
    assert dwd["status"] == "failed", dwd["reason"]
    assert dwd["mismatches"] == [{"key": "t9-20500", "field": "amount", "expected": 5.0, "actual": 7}]
    assert (dwd["expected"], dwd["found"], dwd["missing"], dwd["unexpected"]) == (ROWS, ROWS, [], [])


def test_records_arrow_would_change_are_not_kept_in_columns(
    tmp_path: Path, plan: Path, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    expect = _load(postgres_url, "t10")
    _spool(tmp_path / "spool", "t10", props={"screen": "home"})  # nested: Arrow would read it back otherwise
    plan.write_text(COLLECTED.replace("SPOOL", str(tmp_path / "spool")).replace("PG_URL", postgres_url))

    result = trackcheck.verify(plan, {"test_id": "t10"}, expect=expect, min_interval="1s")

    dwd = _shown(result)[1]
    assert dwd["status"] == "error"
    assert dwd["reason"].endswith(
        f"stage 'collector' read {ROWS} records, more than its snapshot keeps (1000); "
        "raise defaults.snapshot_limit, or compare with method: checksum"
    )
    assert any(
        "cannot be kept in columns (field 'props' holds values of several types, or nested ones)" in r.getMessage()
        for r in caplog.records
    )


def test_a_stage_with_a_time_field_measures_the_lateness_of_every_row_in_columns(
    plan: Path, postgres_url: str, reads: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    expect = _load(postgres_url, "t5", "UPDATE dwd_events SET ts = NULL WHERE event_id IN ('t5-11', 't5-20011')")
    plan.write_text(plan.read_text().replace("compare: {with: ods}", "compare: {with: ods}\n    time_field: ts"))

    in_columns = trackcheck.verify(plan, {"test_id": "t5"}, expect=expect, min_interval="1s")
    assert reads == ["ods", "dwd"]
    monkeypatch.setattr(core, "COLUMNAR_ROWS", 10 * ROWS)  # the same run again, read as records
    by_rows = trackcheck.verify(plan, {"test_id": "t5"}, expect=expect, min_interval="1s")

    columns, rows = _shown(in_columns)[1], _shown(by_rows)[1]
    # every row's lateness was measured, the two without a time named; the seconds differ by when each ran
    assert columns["latency"]["n"] == rows["latency"]["n"] == ROWS - 2
    assert columns["latency"]["unreadable"] == rows["latency"]["unreadable"] == 2
    assert "2 event(s) without a readable ts" in columns["reason"]
    assert {k: v for k, v in columns.items() if k != "latency"} == {k: v for k, v in rows.items() if k != "latency"}


def test_a_first_poll_reads_in_columns_when_the_planner_expects_many_rows(
    plan: Path, postgres_url: str, reads: list[str]
) -> None:
    # a stage checking a few sample events among all it reads: at its first poll, nothing but PostgreSQL's
    # planner tells how many rows come
    _load(postgres_url, "t4")
    _sql(postgres_url, "ANALYZE dwd_events")
    plan.write_text(
        PLAN.split("stages:")[0].replace("PG_URL", postgres_url)
        + "stages:\n  - name: dwd\n    source: pg\n    table: dwd_events\n"
        + '    where: {test_id: "{test_id}"}\n    compare: {with: expect, allow_extra: true}\n'
    )
    sample = [{"event_id": "t4-7", "test_id": "t4", "n": 7}, {"event_id": "t4-24000", "test_id": "t4", "n": 24000}]

    result = trackcheck.verify(plan, {"test_id": "t4"}, expect=sample, min_interval="1s")

    assert result.status == "passed", _shown(result)[0]["reason"]
    assert (result.stages[0].expected, result.stages[0].found, result.stages[0].attempts) == (2, ROWS, 1)
    assert reads == ["dwd"]  # its first and only poll


def test_a_table_arrow_cannot_type_is_read_as_records(plan: Path, postgres_url: str, reads: list[str]) -> None:
    engine = create_engine(postgres_url)
    with engine.begin() as c:
        c.execute(text("ALTER TABLE dwd_events ADD COLUMN extra jsonb"))
    engine.dispose()
    expect = _load(postgres_url, "t3", "UPDATE dwd_events SET extra = '{\"a\": 1}'")
    late = "INSERT INTO dwd_events SELECT * FROM tc_late"
    _sql(postgres_url, "CREATE TABLE tc_late AS SELECT * FROM dwd_events WHERE event_id = 't3-42'")
    _sql(postgres_url, "DELETE FROM dwd_events WHERE event_id = 't3-42'")
    timer = threading.Timer(2.5, _sql, (postgres_url, late))
    timer.start()
    plan.write_text(plan.read_text().replace("compare: {with: ods}", "compare: {with: ods, fields: [amount, ts]}"))

    result = trackcheck.verify(plan, {"test_id": "t3"}, expect=expect, min_interval="1s")

    timer.join()
    assert result.status == "passed", _shown(result)[1]["reason"]
    assert result.stages[1].attempts >= 2  # it waited for the late row, read as records at every poll
    # dwd was tried in columns once only, refused (jsonb has no Arrow type); bi was read in columns
    assert reads == ["ods", "dwd", "bi"]


def _sql(url: str, statement: str) -> None:
    engine = create_engine(url)
    with engine.begin() as c:
        c.execute(text(statement))
    engine.dispose()
