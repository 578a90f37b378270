"""Run every benchmark and write the results: ``python -m benchmarks.run [--quick] [--output PATH]``.

The full run (``make bench``, about 25 minutes with B7) writes ``benchmarks/RESULTS.md``. ``--quick`` (``make
bench-quick``, about a minute and a half, for CI) runs the same code at small sizes, writes its report to a
temporary file (never over RESULTS.md) and prints it; like the full run it exits non-zero when any figure is missing.
Neither asserts how fast anything is: the figures depend on the machine, the report states them.

``--only b7`` runs B7 alone (with ``--quick``: its quick sizes; ``--b7-n 10000`` picks the N), writes its
report to a temporary file unless ``--output`` says where, and prints it. ``--only b2`` does the same for B2
(the row diff, and the columnar path beside it: ``python -m benchmarks.run --only b2`` runs it at 1 M rows).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import b1_polling, b2_diff, b3_api, b3_batch, b6_kafka, b7_scale, common, report

RESULTS = Path(__file__).with_name("RESULTS.md")


@dataclass(frozen=True)
class Plan:
    """The sizes of one benchmark run."""

    name: str
    ns: tuple[int, ...]
    interval: float  # seconds between polls in B1 (the default 58 s would make the run last an hour)
    land_window: float  # rows land within this many seconds of the start
    profile_n: int
    b2_rows: int
    b2_repeats: int
    b3_seconds: float
    b3_max_requests: int
    batch_runs: int  # runs on each side of the batch submit figure
    batch_size: int
    b6_runs: int  # runs waiting on one Kafka topic (and a tenth of them, on a topic of the same content)
    b6_messages: int  # messages in that topic
    b7_ns: tuple[int, ...]  # waiting runs in B7, trackcheck beside main at each
    b7_interval: float  # B7's poll interval (issue 9: 10 s)
    b7_land_window: float


FULL = Plan(
    "full", (1, 100, 1_000, 10_000), 5.0, 15.0, 10_000, 1_000_000, 3, 30.0, 50_000, 10_000, 1_000, 10_000, 1_000_000,
    (1_000, 10_000, 30_000, 100_000), 10.0, 30.0,
)  # fmt: skip
#: B7 quick polls every second: at 10 s, its four children alone would take most of a minute
QUICK = Plan("quick", (1, 50), 1.0, 2.0, 50, 5_000, 1, 3.0, 500, 300, 100, 200, 20_000, (200, 1_000), 1.0, 3.0)
#: B3's clients in flight at once: a CI suite or a few people submitting together, not a load test
B3_CONCURRENCY = 4


def run_b1(plan: Plan) -> tuple[list[b1_polling.SideResult], dict[str, Any]]:
    """Both sides at every N (trackcheck first, then the baseline, each in a fresh database), then one more
    profiled trackcheck run at ``profile_n`` (profiling slows it, so its figures are not reported)."""
    results: list[b1_polling.SideResult] = []
    template = b1_polling.create_template()
    try:
        for n in plan.ns:
            for side in ("trackcheck", "baseline"):
                common.log(f"B1 {side} N={n:,} (interval {plan.interval:g}s, rows land within {plan.land_window:g}s)")
                result, _ = b1_polling.measure(side, n, plan.interval, plan.land_window, template)
                results.append(result)
                common.log(
                    f"B1 {side} N={n:,}: p99 {result.latency_p99:.2f}s, {result.queries_per_tick:g} queries/tick, "
                    f"CPU/tick {result.cpu_per_tick:.3f}s, peak RSS {result.peak_rss_mb:.0f} MB"
                )
        common.log(f"B1 profile: trackcheck N={plan.profile_n:,} under pyinstrument")
        _, raw = b1_polling.measure(
            "trackcheck", plan.profile_n, plan.interval, plan.land_window, template, profile=True
        )
    finally:
        b1_polling.drop_database(template)
    profile = raw.get("profile")
    if profile is None:
        raise RuntimeError("the profiled run produced no profile")
    profile["n"] = plan.profile_n
    return results, profile


def run_b7(plan: Plan, ns: tuple[int, ...] | None = None, tree: Path | None = None) -> b7_scale.B7Result:
    """trackcheck (the working tree, or ``tree``) beside main (``b7_scale.REFERENCE``) at every N."""
    sizes = ns or plan.b7_ns
    common.log(
        f"B7: N = {', '.join(f'{n:,}' for n in sizes)} waiting runs, PostgreSQL state, interval "
        f"{plan.b7_interval:g}s, rows land within {plan.b7_land_window:g}s"
    )
    return b7_scale.measure(sizes, plan.b7_interval, plan.b7_land_window, tree=tree)


def missing_figures(
    b1: list[b1_polling.SideResult],
    profile: dict[str, Any],
    b2: b2_diff.B2Result,
    b7: b7_scale.B7Result | None = None,
    *,
    strict: bool = True,
) -> list[str]:
    """Every figure the report needs that is absent or not a number (the only thing --quick asserts). B7 with
    ``strict`` (the quick run): every side must also have detected every run before its deadline."""
    problems: list[str] = [] if b7 is None else b7_scale.missing(b7, strict=strict)
    for result in b1:
        for name, value in result.to_dict().items():
            if isinstance(value, float) and not math.isfinite(value):
                problems.append(f"B1 {result.side} N={result.n}: {name} is {value}")
        if result.detected == 0:
            problems.append(f"B1 {result.side} N={result.n}: no run was detected")
        if result.server_queries <= 0:
            problems.append(f"B1 {result.side} N={result.n}: the server counted no source query")
    expected = {(side, n) for side in ("trackcheck", "baseline") for n in {r.n for r in b1}}
    if {(r.side, r.n) for r in b1} != expected or not b1:
        problems.append("B1: a side or an N is missing")
    if not profile.get("self"):
        problems.append("B1 profile: no functions recorded")
    for name, value in b2.to_dict().items():
        if isinstance(value, float) and not (math.isfinite(value) and value >= 0):
            problems.append(f"B2: {name} is {value}")
    if not b2.correct:
        problems.append(f"B2: a diff did not find the planted differences: {b2.counts} (expected {b2.expected})")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, report to a temp file (CI)")
    parser.add_argument("--output", type=Path, help="where to write the report (default: see above)")
    parser.add_argument("--json", type=Path, help="also write the raw figures as JSON here")
    parser.add_argument("--only", choices=["b2", "b7"], help="run this benchmark alone (report to a temp file)")
    parser.add_argument(
        "--b7-n", type=int, action="append", metavar="N", help="B7 at this N (repeatable; default: the plan's)"
    )
    parser.add_argument(
        "--b7-tree", type=Path, metavar="SRC", help="B7's trackcheck side from this src directory (default: src/)"
    )
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    output: Path = args.output or (
        Path(tempfile.mkdtemp(prefix="trackcheck-bench-")) / "RESULTS.md" if args.quick or args.only else RESULTS
    )
    began = time.time()
    machine = common.machine()
    common.log(f"{plan.name} run on {machine['cores']} cores, load {machine['load_average']}")
    b7_ns = tuple(args.b7_n) if args.b7_n else None
    if args.only == "b7":
        return _only_b7(plan, machine, began, output, args.json, b7_ns, args.b7_tree, strict=args.quick)
    if args.only == "b2":
        return _only_b2(plan, output, args.json)
    b1, profile = run_b1(plan)
    common.log(f"B2: {plan.b2_rows:,} rows, {plan.b2_repeats} repeat(s)")
    b2 = b2_diff.measure(plan.b2_rows, plan.b2_repeats)
    common.log(f"B3: POST /api/runs for {plan.b3_seconds:g} s, {B3_CONCURRENCY} clients")
    b3 = b3_api.measure(plan.b3_seconds, B3_CONCURRENCY, plan.b3_max_requests)
    common.log(f"B3 batch: {plan.batch_runs:,} runs one by one and in batches of {plan.batch_size:,}")
    batch = b3_batch.measure(plan.batch_runs, plan.batch_size)
    common.log(f"B6: {plan.b6_runs:,} runs on a Kafka topic of {plan.b6_messages:,} messages")
    b6 = b6_kafka.measure(plan.b6_runs, plan.b6_messages)
    b7 = run_b7(plan, b7_ns, args.b7_tree)
    _finish(machine, began)
    text = report.render(plan.name, plan.interval, plan.land_window, machine, b1, profile, b2, b3, batch, b6, b7)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    if args.json:
        raw = {
            "machine": machine,
            "b1": [r.to_dict() for r in b1],
            "b2": b2.to_dict(),
            "b3": b3.to_dict(),
            "b3_batch": batch.to_dict(),
            "b6_kafka": b6.to_dict(),
            "b7_scale": b7.to_dict(),
            "profile": profile,
        }
        args.json.write_text(json.dumps(raw, indent=1, default=str), encoding="utf-8")
    problems = missing_figures(b1, profile, b2, b7, strict=args.quick)
    if b3.requests == 0 or not math.isfinite(b3.p99_ms):
        problems.append(f"B3: no request was accepted ({b3.errors} errors)")
    for name, value in batch.to_dict().items():
        if isinstance(value, float) and not (math.isfinite(value) and value > 0):
            problems.append(f"B3 batch: {name} is {value}")
    problems.extend(b6_kafka.missing(b6))
    if args.quick:
        print(text)
    common.log(f"report written to {output} ({machine['duration_s']} s)")
    for problem in problems:
        common.log(f"MISSING: {problem}")
    return 1 if problems else 0


def _only_b2(plan: Plan, output: Path, json_path: Path | None) -> int:
    """``--only b2``: B2 alone (the row and columnar diffs), its section printed and written to ``output``."""
    common.log(f"B2: {plan.b2_rows:,} rows, {plan.b2_repeats} repeat(s)")
    b2 = b2_diff.measure(plan.b2_rows, plan.b2_repeats)
    text = report._b2(b2)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    if json_path:
        json_path.write_text(json.dumps(b2.to_dict(), indent=1, default=str), encoding="utf-8")
    print(text)
    problems = [f"B2: {k} is {v}" for k, v in b2.to_dict().items() if isinstance(v, float) and not math.isfinite(v)]
    if not b2.correct:
        problems.append(f"B2: a diff did not find the planted differences: {b2.counts} (expected {b2.expected})")
    for problem in problems:
        common.log(f"MISSING: {problem}")
    return 1 if problems else 0


def _finish(machine: dict[str, Any], began: float) -> None:
    machine["load_average_end"] = list(common.machine()["load_average"])
    machine["duration_s"] = round(time.time() - began)
    machine["preloaded"] = common.preloaded_libraries() or "(none)"


def _only_b7(
    plan: Plan,
    machine: dict[str, Any],
    began: float,
    output: Path,
    json_path: Path | None,
    ns: tuple[int, ...] | None,
    tree: Path | None,
    *,
    strict: bool,
) -> int:
    """``--only b7``: B7 alone, its report printed and written to ``output``."""
    b7 = run_b7(plan, ns, tree)
    _finish(machine, began)
    text = report.render_b7_only(plan.name, machine, b7)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    if json_path:
        json_path.write_text(json.dumps({"machine": machine, "b7_scale": b7.to_dict()}, indent=1), encoding="utf-8")
    print(text)
    common.log(f"report written to {output} ({machine['duration_s']} s)")
    problems = b7_scale.missing(b7, strict=strict)
    for problem in problems:
        common.log(f"MISSING: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
