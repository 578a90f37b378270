"""B2: diff speed. One stage reads N events x 6 fields from PostgreSQL and compares them with a reference.

The reference is the same size as the table and differs by 0.1% missing keys (in the reference, not in the
table), 0.1% unexpected keys (in the table only) and 0.1% mismatched rows (one field off). It holds JSON
types, as ``expect`` records or an earlier stage's snapshot do (amounts as floats, times as ISO text), while
the table returns ``Decimal`` and ``datetime``: the comparison has to match numbers as numbers and instants
as instants, which is its real work.

Variants, each in a child process of its own (peak RSS is then the variant's), interleaved over repeats:

- ``fetch``: trackcheck's SQL source ``fetch`` alone (psycopg 3 through SQLAlchemy, the query trackcheck
  builds: ``SELECT * FROM events AS tc_q WHERE tc_q.test_id = ANY(:p)``);
- ``compare``: the same fetch, then ``trackcheck.compare.evaluate_stage``;
- ``polars``: the same fetch, then the same diff with polars (frames built from the fetched records,
  types normalized, a full outer join on the key, field-by-field comparison, duplicate keys);
- ``columnar_fetch``: the same statement read into an Arrow table (``sources.columnar``: ADBC);
- ``columnar``: that fetch, then ``compare.columnar`` (its evidence checked, off the clock, equal to
  ``RecordsCheck``'s on the same rows);
- ``pandas``: that fetch, then the same diff with a pandas merge (``pandas_diff``).

The ``columnar`` and ``pandas`` children then also time their diff, off the main clock, with the reference
records in columns, as the engine keeps a run's many expected events (``compare.tables.records_table``):
the columnar diff from the bytes the engine stores (``table_bytes``, read back with ``table_of`` on its clock,
as a poll does), pandas from the table itself (it converts what it needs on its clock: ``to_pandas()`` of
both), so their ratio is on the same inputs, the bytes' reading to pandas' advantage.

The ``columnar`` child also times, off the main clock, the engine's own shape of a large comparison by rows:
the reference is an earlier stage's snapshot kept in columns (the same records in a table
``reference_events``, read in columns and turned into the snapshot's bytes by ``compare.tables.table_bytes``
beforehand, as the earlier stage's poll did), and the clock runs from those bytes (``table_of``) to the
comparison's end.

Run as ``python -m benchmarks.b2_diff '<json config>'`` it is one child; ``measure`` is the parent side.
"""

from __future__ import annotations

import gc
import json
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from benchmarks import common

RUN = "b2run"
EVENTS = ("page_view", "add_to_cart", "checkout", "purchase", "refund")
BASE_TS = datetime(2026, 1, 1, tzinfo=UTC)
FIELDS = ("test_id", "event", "user_id", "amount", "ts")  # compared; event_id is the key
VARIANTS = ("fetch", "compare", "polars", "columnar_fetch", "columnar", "pandas")
COLUMNAR = ("columnar_fetch", "columnar", "pandas")  # these fetch into Arrow (``sources.columnar``)

PLAN = """\
name: bench-b2
key: event_id
params:
  test_id: {required: true}
sources:
  warehouse: {type: sql, url: "URL", query_timeout: 10m}
stages:
  - name: warehouse
    source: warehouse
    table: events
    where: {test_id: "{test_id}"}
    compare: {with: expect}
"""


def is_unexpected(i: int) -> bool:
    """In the table, not in the reference (0.1%)."""
    return i % 1000 == 7


def is_mismatched(i: int) -> bool:
    """In both, with the amount off by one (0.1%)."""
    return i % 1000 == 500


def create_table(database: str, rows: int) -> None:
    with psycopg.connect(common.dsn(database), autocommit=True) as connection:
        connection.execute(
            "CREATE TABLE events (event_id text NOT NULL, test_id text NOT NULL, event text NOT NULL, "
            "user_id text NOT NULL, amount numeric(12, 2) NOT NULL, ts timestamptz NOT NULL)"
        )
        connection.execute(
            f"INSERT INTO events SELECT 'e' || lpad(i::text, 8, '0'), '{RUN}', "
            f"(ARRAY{list(EVENTS)})[i % {len(EVENTS)} + 1], 'u' || (i % 50000), (i % 100000) / 100.0, "
            f"timestamptz '2026-01-01 00:00:00+00' + i * interval '1 second' "
            f"FROM generate_series(0, {rows - 1}) AS i"
        )
        connection.execute("CREATE INDEX events_test_id ON events (test_id)")
        connection.execute("VACUUM ANALYZE events")
        # the records of ``reference`` in the table's types, in the same order: an earlier stage's rows
        extra = sum(1 for i in range(rows) if is_unexpected(i))
        connection.execute(
            f"CREATE TABLE reference_events AS SELECT 'e' || lpad(i::text, 8, '0') AS event_id, "
            f"'{RUN}'::text AS test_id, (ARRAY{list(EVENTS)})[i % {len(EVENTS)} + 1] AS event, "
            f"'u' || (i % 50000) AS user_id, "
            f"((i % 100000) / 100.0 + CASE WHEN i % 1000 = 500 THEN 1 ELSE 0 END)::numeric(12, 2) AS amount, "
            f"timestamptz '2026-01-01 00:00:00+00' + i * interval '1 second' AS ts "
            f"FROM generate_series(0, {rows + extra - 1}) AS i WHERE i >= {rows} OR i % 1000 <> 7 ORDER BY i"
        )
        # indexed as the stage's own table: read in key order, as ``events`` is (a parallel scan interleaves
        # the rows, and the comparison then pairs keys by a hash join: ~0.2 s more per million rows)
        connection.execute("CREATE INDEX reference_events_test_id ON reference_events (test_id)")
        connection.execute("VACUUM ANALYZE reference_events")


def reference(rows: int) -> list[dict[str, Any]]:
    """The reference, in JSON types: every table row but the unexpected ones, mismatches changed, and as
    many missing keys (beyond the table's) as there are unexpected ones, so it has ``rows`` records."""

    def record(i: int) -> dict[str, Any]:
        amount = (i % 100_000) / 100
        return {
            "event_id": f"e{i:08d}",
            "test_id": RUN,
            "event": EVENTS[i % len(EVENTS)],
            "user_id": f"u{i % 50_000}",
            "amount": amount + 1 if is_mismatched(i) else amount,
            "ts": (BASE_TS + timedelta(seconds=i)).isoformat(),
        }

    records = [record(i) for i in range(rows) if not is_unexpected(i)]
    records.extend(record(i) for i in range(rows, rows + rows - len(records)))
    return records


def expected_counts(rows: int) -> dict[str, int]:
    unexpected = sum(1 for i in range(rows) if is_unexpected(i))
    return {
        "missing": unexpected,
        "unexpected": unexpected,
        "mismatched": sum(1 for i in range(rows) if is_mismatched(i)),
    }


# -- the child ----------------------------------------------------------------------------------------------


@dataclass
class ChildConfig:
    variant: str
    database: str
    rows: int


def run_child(config: ChildConfig) -> dict[str, Any]:
    from trackcheck.loader import load_plan_text
    from trackcheck.sources import build_source
    from trackcheck.sources.base import FetchRequest

    url = common.sqlalchemy_url(config.database)
    plan = load_plan_text(PLAN.replace("URL", url))
    stage = plan.stages[0]
    source = build_source("warehouse", plan.sources["warehouse"], plan=plan.name)
    source.open()
    wanted = reference(config.rows)
    from trackcheck.compare import evaluate_stage

    if config.variant == "polars":
        import polars  # noqa: F401 - imported before the clock starts, as trackcheck's comparison is
    if config.variant == "pandas":
        import pandas  # noqa: F401 - likewise
    from trackcheck.compare.columnar import ColumnarRecordsCheck
    from trackcheck.sources.columnar import ColumnarReader

    reader = ColumnarReader(source)  # type: ignore[arg-type]
    if config.variant in COLUMNAR:
        reader.open()  # the driver's import before the clock starts, as psycopg's is in source.open()

    gc.collect()
    rss_before = common.current_rss_mb()
    request = FetchRequest(plan=plan.name, stage=stage, filters={"test_id": [RUN]})
    began = time.perf_counter()
    table: Any = None
    found: list[dict[str, Any]] = []
    if config.variant in COLUMNAR:
        table = reader.read(request)
    else:
        found = source.fetch(request).records
    fetched = time.perf_counter()
    counts: dict[str, int] = {}
    check = ColumnarRecordsCheck(stage.compare, plan.key_for(stage))  # type: ignore[arg-type]
    if config.variant == "compare":
        counts = _counts(evaluate_stage(stage, plan.key_for(stage), found, wanted))
    elif config.variant == "polars":
        counts = polars_diff(found, wanted)
    elif config.variant == "columnar":
        comparison = check.evaluate_table(table, wanted)
        counts = _counts(comparison)
    elif config.variant == "pandas":
        counts = pandas_diff(table, wanted)
    ended = time.perf_counter()
    arrow_reference_s = snapshot_s = None
    if config.variant == "columnar":  # off the clock: the row path on the same rows gives the same evidence
        evidence = comparison.to_dict()
        counts["same_as_rows"] = int(evidence == check.evaluate(table.to_pylist(), wanted).to_dict())
        # and with the records in columns, as the engine keeps a run's many expected events (``records_table``,
        # its bytes made when the run was submitted): the clock runs from those bytes, as a poll reads them
        from trackcheck.compare.tables import records_table, table_bytes, table_of

        expected = table_bytes(records_table(wanted))  # type: ignore[arg-type]
        gc.collect()
        began_arrow = time.perf_counter()
        in_columns = check.evaluate_table(table, table_of(expected))
        arrow_reference_s = time.perf_counter() - began_arrow
        counts["same_with_arrow_reference"] = int(in_columns.to_dict() == evidence)
        # and with the reference as the engine keeps an earlier stage's rows in columns: the snapshot's bytes

        earlier = load_plan_text(PLAN.replace("URL", url).replace("table: events", "table: reference_events"))
        request = FetchRequest(plan=plan.name, stage=earlier.stages[0], filters={"test_id": [RUN]})
        kept = table_bytes(reader.read(request))
        gc.collect()
        began_snapshot = time.perf_counter()
        from_snapshot = check.evaluate_table(table, table_of(kept))
        snapshot_s = time.perf_counter() - began_snapshot
        counts["same_with_snapshot"] = int(_differences(from_snapshot) == _differences(comparison))
    elif config.variant == "pandas":  # the same inputs as the columnar diff's second figure: two Arrow tables
        from trackcheck.compare.tables import records_table

        reference_table = records_table(wanted)
        began_arrow = time.perf_counter()
        in_columns_counts = pandas_diff(table, reference_table)
        arrow_reference_s = time.perf_counter() - began_arrow
        counts["same_with_arrow_reference"] = int(in_columns_counts == counts)
    rows_found = len(found) if table is None else table.num_rows
    reader.close()
    result = {
        "variant": config.variant,
        "rows_found": rows_found,
        "fetch_s": fetched - began,
        "compare_s": ended - fetched,
        "total_s": ended - began,
        "rss_before_mb": rss_before,
        "peak_rss_mb": common.peak_rss_mb(),
        "counts": counts,
        "arrow_reference_s": arrow_reference_s,
        "snapshot_s": snapshot_s,
    }
    source.close()
    return result


def polars_diff(found: list[dict[str, Any]], wanted: list[dict[str, Any]]) -> dict[str, int]:
    """The same diff with polars: frames from the fetched records and the reference, the reference's JSON
    types read as the table's (numbers as decimals, ISO text as instants), a full outer join on the key, and a
    field-by-field comparison of the matched rows."""
    import polars as pl

    actual = pl.DataFrame(found, infer_schema_length=None)
    expected = pl.DataFrame(wanted, infer_schema_length=None).with_columns(
        pl.col("amount").cast(actual.schema["amount"]),
        pl.col("ts").str.to_datetime(time_zone="UTC").cast(actual.schema["ts"]),
    )
    duplicates = int(actual.select(pl.col("event_id").is_duplicated().sum()).item())
    joined = actual.join(expected, on="event_id", how="full", suffix="_ref")
    missing = joined.filter(pl.col("event_id").is_null()).height
    unexpected = joined.filter(pl.col("event_id_ref").is_null()).height
    paired = joined.filter(pl.col("event_id").is_not_null() & pl.col("event_id_ref").is_not_null())
    differs = pl.any_horizontal([pl.col(f).ne_missing(pl.col(f"{f}_ref")) for f in FIELDS])
    mismatched = paired.filter(differs).height
    return {"missing": missing, "unexpected": unexpected, "mismatched": mismatched, "duplicates": duplicates}


def _counts(comparison: Any) -> dict[str, int]:
    return {
        "missing": len(comparison.missing),
        "unexpected": len(comparison.unexpected),
        "mismatched": len({json.dumps(m["key"]) for m in comparison.mismatches}),
        "duplicates": len(comparison.duplicates),
    }


def _differences(comparison: Any) -> tuple[list[Any], list[Any], list[tuple[Any, str]]]:
    """The keys missing and unexpected, and the (key, field) of each mismatch: what a snapshot in the table's
    types must find as the records do (its values show as the table's: ``6`` where the records say ``6.0``)."""
    mismatches = [(m["key"], m["field"]) for m in comparison.mismatches]
    return list(comparison.missing), list(comparison.unexpected), mismatches


def pandas_diff(table: Any, wanted: list[dict[str, Any]] | Any) -> dict[str, int]:
    """The same diff with pandas, on the Arrow fetch: frames from the table and the reference (records, or
    an Arrow table: ``to_pandas()``), the reference's JSON types read as the table's (amounts as numbers at
    the table's scale, ISO text as UTC instants), an outer merge on the key with an indicator, and a
    field-by-field comparison of both sides."""
    import pandas as pd

    actual = table.to_pandas()
    actual["amount"] = actual["amount"].astype("float64").round(2)
    expected = pd.DataFrame.from_records(wanted) if isinstance(wanted, list) else wanted.to_pandas()
    expected["amount"] = expected["amount"].astype("float64").round(2)
    expected["ts"] = pd.to_datetime(expected["ts"], utc=True, format="ISO8601").astype(actual["ts"].dtype)
    duplicates = int(actual["event_id"].duplicated().sum())
    joined = actual.merge(expected, on="event_id", how="outer", suffixes=("", "_ref"), indicator=True)
    paired = joined[joined["_merge"] == "both"]
    differs = pd.Series(False, index=paired.index)
    for field in FIELDS:
        left, right = paired[field], paired[f"{field}_ref"]
        differs |= (left != right) & ~(left.isna() & right.isna())
    return {
        "missing": int((joined["_merge"] == "right_only").sum()),
        "unexpected": int((joined["_merge"] == "left_only").sum()),
        "mismatched": int(differs.sum()),
        "duplicates": duplicates,
    }


def child_main(raw: str) -> None:
    common.emit_result(run_child(ChildConfig(**json.loads(raw))))


# -- the parent ---------------------------------------------------------------------------------------------


@dataclass
class B2Result:
    """B2's figures. Every child fetches the same rows the same way first, so "fetch alone" is the median
    of all the fetches (3 per repeat), and "fetch and compare" that plus the median comparison: the ratio
    then rests on as many samples as possible on a machine whose load changes under the benchmark."""

    rows: int
    repeats: int
    fetch_s: float  # fetch alone: median over every row-path child's fetch (fetch, compare, polars)
    columnar_fetch_s: float  # Arrow fetch alone: median over every columnar child's fetch
    columnar_s: float  # compare.columnar after the Arrow fetch (median over the columnar children)
    pandas_s: float  # the pandas merge diff after the Arrow fetch (median over the pandas children)
    columnar_arrow_reference_s: float  # compare.columnar from the expected events kept in columns (their bytes)
    pandas_arrow_reference_s: float  # the pandas merge diff given the expected events in columns (pandas children)
    columnar_snapshot_s: float  # compare.columnar from an earlier stage's snapshot kept in columns (its bytes)
    compare_s: float  # trackcheck's evaluate_stage after the fetch (median over the compare children)
    polars_s: float  # the same diff with polars after the fetch (median over the polars children)
    same_child_ratio: float  # median of (fetch + compare) / fetch within each compare child, a cross-check
    fetch_peak_rss_mb: float
    compare_peak_rss_mb: float
    polars_peak_rss_mb: float
    columnar_peak_rss_mb: float
    pandas_peak_rss_mb: float
    reference_rss_mb: float  # RSS with the reference built, before the fetch (the same in every child)
    counts: dict[str, dict[str, int]]
    expected: dict[str, int]
    runs: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def fetch_compare_s(self) -> float:
        return self.fetch_s + self.compare_s

    @property
    def fetch_polars_s(self) -> float:
        return self.fetch_s + self.polars_s

    @property
    def ratio_to_fetch(self) -> float:
        """Fetch and compare over fetch alone: the target is at most 1.5."""
        return self.fetch_compare_s / self.fetch_s

    @property
    def columnar_ratio_to_fetch(self) -> float:
        """Arrow fetch and columnar compare over the Arrow fetch alone: the target is at most 1.25."""
        return (self.columnar_fetch_s + self.columnar_s) / self.columnar_fetch_s

    @property
    def snapshot_ratio_to_fetch(self) -> float:
        """The same with the reference an earlier stage's snapshot kept in columns, as the engine compares a
        large stage with the one before it: the target is at most 1.25."""
        return (self.columnar_fetch_s + self.columnar_snapshot_s) / self.columnar_fetch_s

    @property
    def pandas_over_columnar(self) -> float:
        """How many times longer the pandas merge diff takes than the columnar compare (target: >= 3)."""
        return self.pandas_s / self.columnar_s

    @property
    def pandas_over_columnar_arrow_reference(self) -> float:
        """The same ratio with both diffs given the expected events in columns (target: >= 3)."""
        return self.pandas_arrow_reference_s / self.columnar_arrow_reference_s

    @property
    def fetch_over_columnar_fetch(self) -> float:
        """How many times longer today's fetch takes than the Arrow fetch (target: >= 3)."""
        return self.fetch_s / self.columnar_fetch_s

    @property
    def correct(self) -> bool:
        """Every diff found exactly the planted differences, and the columnar compare's evidence is the row
        path's."""
        planted = all({k: c.get(k) for k in self.expected} == self.expected for c in self.counts.values())
        columnar, pandas = self.counts["columnar"], self.counts["pandas"]
        return (
            planted
            and columnar.get("same_as_rows") == 1
            and columnar.get("same_with_arrow_reference") == 1
            and columnar.get("same_with_snapshot") == 1
            and pandas.get("same_with_arrow_reference") == 1
        )


def measure(rows: int, repeats: int) -> B2Result:
    with common.fresh_database("tc_bench_b2") as database:
        common.log(f"B2: generating {rows:,} rows")
        create_table(database, rows)
        runs: list[dict[str, Any]] = []
        for repeat in range(repeats):
            for variant in VARIANTS:
                child = common.spawn_child("benchmarks.b2_diff", asdict(ChildConfig(variant, database, rows)))
                try:
                    result = child.result(timeout=1800)
                finally:
                    child.kill()
                result["repeat"] = repeat
                runs.append(result)
                common.log(
                    f"B2 {variant} #{repeat + 1}: fetch {result['fetch_s']:.2f}s, then {result['compare_s']:.2f}s, "
                    f"peak RSS {result['peak_rss_mb']:.0f} MB"
                )

    def pick(variant: str, figure: str) -> list[float]:
        return [float(r[figure]) for r in runs if r["variant"] == variant]

    def last_counts(variant: str) -> dict[str, int]:
        return next(r["counts"] for r in reversed(runs) if r["variant"] == variant)

    return B2Result(
        rows=rows,
        repeats=repeats,
        fetch_s=common.median([float(r["fetch_s"]) for r in runs if r["variant"] not in COLUMNAR]),
        columnar_fetch_s=common.median([float(r["fetch_s"]) for r in runs if r["variant"] in COLUMNAR]),
        columnar_s=common.median(pick("columnar", "compare_s")),
        pandas_s=common.median(pick("pandas", "compare_s")),
        columnar_arrow_reference_s=common.median(pick("columnar", "arrow_reference_s")),
        pandas_arrow_reference_s=common.median(pick("pandas", "arrow_reference_s")),
        columnar_snapshot_s=common.median(pick("columnar", "snapshot_s")),
        compare_s=common.median(pick("compare", "compare_s")),
        polars_s=common.median(pick("polars", "compare_s")),
        same_child_ratio=common.median([r["total_s"] / r["fetch_s"] for r in runs if r["variant"] == "compare"]),
        fetch_peak_rss_mb=max(pick("fetch", "peak_rss_mb")),
        compare_peak_rss_mb=max(pick("compare", "peak_rss_mb")),
        polars_peak_rss_mb=max(pick("polars", "peak_rss_mb")),
        columnar_peak_rss_mb=max(pick("columnar", "peak_rss_mb")),
        pandas_peak_rss_mb=max(pick("pandas", "peak_rss_mb")),
        reference_rss_mb=common.median([float(r["rss_before_mb"]) for r in runs]),
        counts={
            "trackcheck": last_counts("compare"),
            "polars": last_counts("polars"),
            "columnar": last_counts("columnar"),
            "pandas": last_counts("pandas"),
        },
        expected=expected_counts(rows),
        runs=runs,
    )


if __name__ == "__main__":
    child_main(sys.argv[1])
