"""Plan loading: the v1 example loads, and every kind of broken plan is rejected naming what is wrong."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from trackcheck.errors import ParamError, PlanError
from trackcheck.loader import check_expect, load_plan, load_plan_text, resolve_params
from trackcheck.plan.durations import format_duration, parse_duration
from trackcheck.plan.templates import render

EXAMPLE = Path(__file__).parents[2] / "examples" / "checkout.yaml"
ENV = {"LOG_DIR": "/tmp/logs", "WAREHOUSE_URL": "sqlite:///w.db", "BI_URL": "http://127.0.0.1:9"}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)


def example() -> dict:
    return yaml.safe_load(EXAMPLE.read_text())


def load(raw: dict) -> object:
    return load_plan_text(yaml.safe_dump(raw), origin="test.yaml")


def test_example_plan_loads_with_every_setting(env: None) -> None:
    plan = load_plan(EXAMPLE)
    assert plan.name == "checkout-events"
    assert [s.name for s in plan.stages] == ["collector", "warehouse", "bi"]
    assert plan.key == ["event_id"]
    assert plan.defaults.interval == timedelta(seconds=58)
    warehouse = plan.stage("warehouse")
    assert plan.setting(warehouse, "interval") == timedelta(minutes=5)
    assert plan.setting(warehouse, "timeout") == timedelta(hours=2)
    assert plan.setting(plan.stage("collector"), "interval") == timedelta(seconds=58)
    assert warehouse.compare is not None and warehouse.compare.tolerance == {"amount": 0.01}
    bi = plan.stage("bi")
    assert bi.counts is not None and bi.counts.by == ["event"] and bi.counts.with_ == "warehouse"
    assert plan.sources["collector"].options["path"] == "/tmp/logs/collector-*.jsonl"
    assert len(plan.expect) == 3


def test_missing_environment_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_DIR", "/tmp")
    monkeypatch.setenv("BI_URL", "http://x")
    monkeypatch.delenv("WAREHOUSE_URL", raising=False)
    with pytest.raises(PlanError) as caught:
        load_plan(EXAMPLE)
    assert "WAREHOUSE_URL" in str(caught.value)
    assert "checkout-events" in str(caught.value)
    assert "sources.warehouse.url" in str(caught.value)


def test_env_default_is_used_when_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TC_NOT_SET", raising=False)
    raw = example()
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    raw["sources"]["bi"]["url"] = "${TC_NOT_SET:-http://127.0.0.1:8080}"
    plan = load(raw)
    assert plan.sources["bi"].options["url"] == "http://127.0.0.1:8080"


@pytest.mark.parametrize(
    ("mutate", "needles"),
    [
        (lambda r: r["stages"][1].update(source="lake"), ["warehouse", "unknown source 'lake'", "collector"]),
        (lambda r: r["stages"][0]["compare"].update({"with": "warehouse"}), ["collector", "later stage"]),
        (lambda r: r["stages"][1]["compare"].update({"with": "nowhere"}), ["nowhere", "not a stage"]),
        (
            lambda r: r["stages"][1].update(interval="5 minutes"),
            ["stages[1] (warehouse).interval", "5 minutes"],
        ),
        (lambda r: r["stages"][1].update(colour="red"), ["stages[1] (warehouse).colour", "unknown key"]),
        (lambda r: r.update(defaults={"interval": "fast"}), ["defaults.interval", "'fast'"]),
        (lambda r: r["stages"][1].update(cron="61 * * * *"), ["warehouse", "cron"]),
        (lambda r: r["stages"][1].update(cron="10 * * * *"), ["only one of interval, cron and at"]),
        (lambda r: r["stages"][2].pop("counts"), ["bi", "needs one of 'compare'"]),
        (lambda r: r["stages"][0].update(where={"test_id": "{run_tag}"}), ["collector", "{run_tag}"]),
        (
            lambda r: r["stages"][1].update(query="SELECT * FROM t WHERE test_id = '{test_id}'"),
            ["warehouse", "never pasted into SQL"],
        ),
        (lambda r: r["stages"][1]["compare"].update(tolerance={"price": 1}), ["tolerance", "price"]),
        (lambda r: r["stages"].append(dict(r["stages"][0])), ["collector", "used twice"]),
        (lambda r: r["sources"]["bi"].update(type="kinesis"), ["sources.bi.type", "kinesis", "known:"]),
        (lambda r: r["sources"]["bi"].update(colour="blue"), ["sources.bi.colour"]),
        (
            lambda r: r["stages"][0].update(query="SELECT 1"),
            ["stages[0] (collector).query: unknown key: a file stage reads path"],
        ),
        (lambda r: r["stages"][2]["counts"].update(tolerance="lots"), ["counts.tolerance", "percentage"]),
        (lambda r: r.pop("key"), ["key", "required"]),
    ],
)
def test_broken_plan_is_rejected_naming_the_fault(env: None, mutate, needles: list[str]) -> None:
    raw = example()
    mutate(raw)
    with pytest.raises(PlanError) as caught:
        load(raw)
    message = str(caught.value)
    assert "checkout-events" in message
    for needle in needles:
        assert needle in message, message
    assert caught.value.exit_code == 2


def test_yaml_syntax_error_gives_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\nstages: [\n  - name: a\n")
    with pytest.raises(PlanError, match="line"):
        load_plan(broken)


def test_unreadable_plan_file_is_a_plan_error(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="cannot read plan file"):
        load_plan(tmp_path / "nope.yaml")


def test_schema_file_must_exist_and_be_a_schema(env: None, tmp_path: Path) -> None:
    raw = example()
    raw["stages"][0]["schema"] = str(tmp_path / "missing.json")
    with pytest.raises(PlanError, match=r"cannot read schema file .*missing\.json"):
        load(raw)
    bad = tmp_path / "bad.json"
    bad.write_text('{"type": 12}')
    raw["stages"][0]["schema"] = str(bad)
    with pytest.raises(PlanError, match="not a JSON Schema"):
        load(raw)


def test_params_are_checked_and_converted(env: None) -> None:
    raw = example()
    raw["params"]["batch"] = {"type": "integer", "default": 1}
    plan = load(raw)
    assert resolve_params(plan, {"test_id": "abc", "batch": "7"}) == {"test_id": "abc", "batch": 7}
    assert resolve_params(plan, {"test_id": 42}) == {"test_id": "42", "batch": 1}
    with pytest.raises(ParamError, match="test_id.*required"):
        resolve_params(plan, {})
    with pytest.raises(ParamError, match="'colour'.*unknown"):
        resolve_params(plan, {"test_id": "a", "colour": "red"})
    with pytest.raises(ParamError, match="'batch'.*'seven' is not an integer"):
        resolve_params(plan, {"test_id": "a", "batch": "seven"})
    with pytest.raises(ParamError, match="batch.*expected a integer, got list"):
        resolve_params(plan, {"test_id": "a", "batch": [1]})


def test_expect_must_carry_the_key(env: None) -> None:
    plan = load(example())
    with pytest.raises(ParamError, match=r"expect\[1\] has no value for key field 'event_id'"):
        check_expect(plan, [{"event_id": "e1"}, {"event": "x"}])
    with pytest.raises(ParamError, match="neither the plan nor the run"):
        check_expect(plan, [])


def test_nan_and_infinity_are_refused_where_a_run_is_submitted(env: None) -> None:
    """JSON has no NaN or Infinity (Python's json reads and writes them): PostgreSQL and MariaDB refuse them
    in a JSON column, so a run holding one is refused, naming where, before anything is stored."""
    raw = example()
    raw["params"]["ratio"] = {"type": "number"}
    plan = load(raw)
    assert resolve_params(plan, {"test_id": "a", "ratio": "0.5"})["ratio"] == 0.5
    for bad in ("nan", "inf", "-Infinity", float("nan"), float("inf")):
        with pytest.raises(ParamError, match="ratio"):
            resolve_params(plan, {"test_id": "a", "ratio": bad})
    with pytest.raises(ParamError, match=r"expect\[1\]\.props: NaN and Infinity are not JSON numbers"):
        check_expect(plan, [{"event_id": "e1"}, {"event_id": "e2", "props": {"scores": [1.0, float("nan")]}}])
    check_expect(plan, [{"event_id": "e1", "amount": 1e308}])


def test_render_keeps_types_and_escapes_braces() -> None:
    params = {"test_id": 7, "day": "2026-11-24"}
    assert render("{test_id}", params) == 7
    assert render("events:{test_id}:{day}", params) == "events:7:2026-11-24"
    assert render({"q": ["{day}", "{{literal}}"]}, params) == {"q": ["2026-11-24", "{literal}"]}
    with pytest.raises(ParamError, match="missing_one"):
        render("{missing_one}", params)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("58s", 58), ("5m", 300), ("2h", 7200), ("1d", 86400), (3, 3), ("1.5s", 1.5)],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize(
    "text", ["5", "5 minutes", "-1s", "", True, -3, "99999999999d", float("inf"), float("nan"), "3651d"]
)
def test_bad_durations_say_what_is_accepted(text: object) -> None:
    with pytest.raises(ValueError, match="duration|negative"):
        parse_duration(text)


def test_format_duration_round_trips() -> None:
    for text in ("500ms", "58s", "5m", "2h", "1d"):
        assert format_duration(parse_duration(text)) == text
