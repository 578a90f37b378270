"""Plan limits: no plan text, name, setting or run override can exhaust the service, and every refusal names
the key and the limit; one list of the values that hold ``{param}`` decides which parameters a run needs."""

from __future__ import annotations

import copy
import itertools
import time
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
import yaml

from trackcheck.errors import ParamError, PlanError
from trackcheck.foreground import overrides_from
from trackcheck.loader import load_plan_text, missing_params, resolve_params
from trackcheck.plan import DEFAULT_LIMITS, PlanLimits
from trackcheck.plan.cron import check_cron
from trackcheck.plan.durations import parse_duration
from trackcheck.plan.masking import mask_plan_text
from trackcheck.plan.model import Plan
from trackcheck.plan.safe_yaml import BoundedLoader, parse_yaml
from trackcheck.plan.templates import stage_templates
from trackcheck.sources.files import FileRead

BASE: dict[str, Any] = {
    "name": "limits-demo",
    "key": "event_id",
    "params": {"test_id": {"required": True}, "batch": None},
    "sources": {
        "log": {"type": "file", "path": "/tmp/tc-limits/{test_id}/*.jsonl"},
        "api": {"type": "http", "url": "http://127.0.0.1:9"},
        "cache": {"type": "redis", "url": "redis://127.0.0.1:6379/0"},
    },
    "expect": [{"event_id": "e1"}],
    "stages": [
        {"name": "log", "source": "log", "where": {"test_id": "{test_id}"}, "compare": {"with": "expect"}},
        {"name": "api", "source": "api", "request": {"path": "/events/{test_id}"}, "compare": {"with": "log"}},
        {
            "name": "cache",
            "source": "cache",
            "redis": {"kind": "list", "key": "ev:{test_id}"},
            "compare": {"with": "log"},
        },
    ],
}


def raw_plan(**top: Any) -> dict[str, Any]:
    raw = copy.deepcopy(BASE)
    raw.update(top)
    return raw


def load(raw: dict[str, Any], limits: PlanLimits = DEFAULT_LIMITS) -> Plan:
    return load_plan_text(yaml.safe_dump(raw), origin="limits.yaml", limits=limits)


def refusal(raw: dict[str, Any], limits: PlanLimits = DEFAULT_LIMITS) -> str:
    with pytest.raises(PlanError) as caught:
        load(raw, limits)
    return str(caught.value)


def alias_bomb(levels: int = 9) -> str:
    """Nine levels, each ten aliases of the one before: 10^9 strings from about 350 bytes."""
    names = "abcdefghijk"[:levels]
    lines = [f'{names[0]}: &{names[0]} ["x","x","x","x","x","x","x","x","x","x"]']
    lines += [f"{n}: &{n} [" + ",".join([f"*{p}"] * 10) + "]" for p, n in itertools.pairwise(names)]
    return "\n".join(lines) + "\n"


# -- YAML --------------------------------------------------------------------------------------------------
def test_an_alias_bomb_is_refused_while_composing_after_a_few_dozen_values() -> None:
    bomb = alias_bomb()
    assert len(bomb.encode()) < 400
    loader = BoundedLoader(bomb)
    started = time.perf_counter()
    with pytest.raises(yaml.YAMLError, match=r"max_alias_nodes"):
        loader.get_single_data()
    assert loader.composed < 100  # the fifth level already expands past 10,000 values
    assert time.perf_counter() - started < 1  # generous: it takes well under a millisecond
    with pytest.raises(PlanError, match=r"line 4, column \d+: aliases expand to more than 10000 values"):
        load_plan_text(bomb, origin="bomb.yaml")


def test_a_plan_sharing_settings_through_anchors_still_loads() -> None:
    text = """
name: anchors
key: event_id
params: {test_id: {required: true}}
defaults: &slow {interval: 5m, timeout: 2h}
sources:
  log: {type: file, path: /tmp/tc-limits/*.jsonl}
expect: [{event_id: e1}]
stages:
  - {name: first, source: log, where: &run {test_id: "{test_id}"}, compare: {with: expect}}
  - {<<: *slow, name: second, source: log, where: *run, compare: {with: first}}
"""
    plan = load_plan_text(text)
    assert plan.setting(plan.stage("second"), "timeout") == timedelta(hours=2)
    assert plan.stage("second").where == {"test_id": "{test_id}"}


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("a: &a [1, *a]\n", "alias *a is inside the value it names"),
        ("a: " + "[" * 70 + "]" * 70 + "\n", "nested more than 64 levels (max_depth)"),
        ("a: " + "[" * 100_000 + "]" * 100_000 + "\n", "nest"),  # libyaml's own bound (1000), or ours
        ("a: &a " + "[" * 40 + "1" + "]" * 40 + "\nb: " + "[" * 30 + "*a" + "]" * 30 + "\n", "max_depth"),
        ("a: " + "1" * 5000 + "\n", "max_integer_chars"),
        ("a: 1" + ":1" * 100_000 + "\n", "max_integer_chars"),  # base 60: quadratic to parse
        ("a: " + "*b, " * 101 + "\n", "undefined alias"),
        ("a: &b 1\nc: [" + "*b, " * 101 + "]\n", "more than 100 aliases (max_aliases)"),
        ("at: 2026-02-30\n", "not a valid value: day is out of range"),
        ("a: !!python/object/apply:os.system [echo]\n", "could not determine a constructor"),
        ("a: !!bool maybe\n", "'maybe' is not a valid value"),
        ("a: !!int ''\n", "is not a valid value"),
        ("a: \ud800\n", "a lone surrogate at character 3"),
    ],
)
def test_yaml_beyond_the_limits_is_a_plan_error_with_its_line(text: str, needle: str) -> None:
    started = time.perf_counter()
    with pytest.raises(PlanError) as caught:
        parse_yaml(text, origin="x.yaml")
    assert needle in str(caught.value)
    assert "surrogate" in needle or "line 1" in str(caught.value) or "line 2" in str(caught.value)
    assert time.perf_counter() - started < 2


def test_oversize_text_is_refused_before_parsing() -> None:
    with pytest.raises(PlanError, match=r"the plan is 1048577 bytes, more than 1048576 \(max_yaml_bytes\)"):
        load_plan_text("[" * (1 << 20) + "]")  # unparsed: the parser would recurse, not count
    text = yaml.safe_dump(raw_plan())
    assert load_plan_text(text).name == "limits-demo"
    with pytest.raises(PlanError, match="max_yaml_bytes"):
        load_plan_text(text, limits=PlanLimits(max_yaml_bytes=len(text) - 1))
    with pytest.raises(PlanError, match="max_yaml_bytes"):  # bytes, not characters
        load_plan_text("é" * 600_000)


def test_masking_parses_within_the_limits() -> None:
    assert mask_plan_text(alias_bomb()) == alias_bomb()
    assert mask_plan_text("url: postgresql://u:hunter22@db/x\n") == "url: postgresql://u:***@db/x\n"


# -- durations and settings --------------------------------------------------------------------------------
def test_a_too_short_default_interval_names_the_key_and_the_limit() -> None:
    message = refusal(raw_plan(defaults={"interval": "1ms"}))
    assert "defaults.interval: 1ms is shorter than the minimum interval 1s (min_interval)" in message


def test_a_too_short_stage_interval_names_the_stage() -> None:
    raw = raw_plan()
    raw["stages"][1]["interval"] = "500ms"
    assert "stages[1] (api).interval: 500ms is shorter than the minimum interval 1s" in refusal(raw)


def test_a_deployment_can_lower_the_interval_floor() -> None:
    raw = raw_plan(defaults={"interval": "200ms"})
    fast = replace(DEFAULT_LIMITS, min_interval=timedelta(milliseconds=100))
    assert load(raw, fast).defaults.interval == timedelta(milliseconds=200)
    assert "interval must be more than zero" in refusal(raw_plan(defaults={"interval": 0}), fast)


@pytest.mark.parametrize(
    ("settings", "needle"),
    [
        ({"timeout": "400d"}, "defaults.timeout: 400d is longer than the maximum timeout 30d (max_timeout)"),
        ({"timeout": "99999999999d"}, "defaults.timeout: duration '99999999999d' is longer than 3650d"),
        ({"timeout": float("inf")}, "defaults.timeout: duration inf is longer than 3650d"),
        ({"interval": float("nan")}, "defaults.interval: nan is not a duration"),
        ({"backoff": 0}, "defaults.backoff: 0ms is shorter than the minimum backoff 100ms (min_backoff)"),
        ({"backoff": "2d"}, "defaults.backoff: 2d is longer than the maximum backoff 1d (max_backoff)"),
        ({"retries": 101}, "defaults.retries: 101 is more than the maximum 100 (max_retries)"),
        ({"snapshot_limit": 100_001}, "(max_snapshot_limit)"),
        ({"batch_size": 10_001}, "(max_batch_size)"),
    ],
)
def test_defaults_beyond_the_limits_are_refused(settings: dict[str, Any], needle: str) -> None:
    assert needle in refusal(raw_plan(defaults=settings))


def test_stage_settings_and_notify_are_bounded_too() -> None:
    raw = raw_plan()
    raw["stages"][0]["timeout"] = "31d"
    assert "stages[0] (log).timeout: 31d is longer than the maximum timeout 30d" in refusal(raw)
    raw = raw_plan()
    raw["stages"][2]["redis"]["count"] = 1_000_001
    assert "stages[2] (cache).redis.count: 1000001 is more than the maximum 1000000 (max_redis_count)" in refusal(raw)
    raw = raw_plan(notify={"webhook": "https://hooks.example.com/x", "backoff": "30d"})
    assert "notify.backoff: 30d is longer than the maximum backoff 1d" in refusal(raw)


@pytest.mark.parametrize("value", ["99999999999d", "1" * 400 + "s", 1e300, float("inf"), timedelta(days=4000)])
def test_huge_durations_are_a_value_error_never_an_overflow(value: object) -> None:
    with pytest.raises(ValueError, match="longer than 3650d"):
        parse_duration(value)


# -- overrides ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("given", "field", "needle"),
    [
        ({"interval": "1ms"}, "interval", "shorter than the minimum interval 1s (min_interval)"),
        ({"interval": 0}, "interval", "more than zero"),
        ({"timeout": "400d"}, "timeout", "longer than the maximum timeout 30d (max_timeout)"),
        ({"timeout": "99999999999d"}, "timeout", "longer than 3650d"),
        ({"timeout": "0s"}, "timeout", "more than zero"),
        ({"interval": "fast"}, "interval", "not a duration"),
    ],
)
def test_run_overrides_are_held_to_the_same_bounds(given: dict[str, Any], field: str, needle: str) -> None:
    with pytest.raises(PlanError) as caught:
        overrides_from(**given)
    assert caught.value.context == {"field": field}
    assert needle in caught.value.message


def test_run_overrides_follow_the_deployments_limits() -> None:
    assert overrides_from("2s", "1h") == {"interval": 2.0, "timeout": 3600.0}
    fast = replace(DEFAULT_LIMITS, min_interval=timedelta(milliseconds=50))
    assert overrides_from("200ms", limits=fast) == {"interval": 0.2}


# -- cron --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("cron", "needle"),
    [
        ("0 0 30 2 *", "never fires"),
        ("0 0 31 4 *", "never fires"),
        ("0 0 29 2 *", "does not fire in every year (not in 2001, a common year"),
        ("0 0 1 1 0", "does not fire in every year"),  # 1 January on a Monday (APScheduler 3: 0 is Monday)
        ("61 * * * *", "not a cron expression"),
        ("* " * 150 + "*", "longer than 200"),
    ],
)
def test_a_cron_must_fire_every_year(cron: str, needle: str) -> None:
    with pytest.raises(ValueError) as caught:
        check_cron(cron)
    assert needle in str(caught.value)
    raw = raw_plan()
    raw["stages"][1]["cron"] = cron
    assert "stages[1] (api).cron" in refusal(raw)


@pytest.mark.parametrize("cron", ["*/15 * * * *", "10 2 * * *", "0 0 31 * *", "0 0 13 * 4", "0 0 29 * *"])
def test_crons_that_fire_every_year_are_accepted(cron: str) -> None:
    assert check_cron(cron) == cron
    raw = raw_plan()
    raw["stages"][1]["cron"] = cron
    assert load(raw).stage("api").cron == cron


# -- names -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("checkout\nINFO forged log line", "control character '\\n'"),
        ("a" * 201, "201 characters is longer than 200 (max_plan_name_chars)"),
        (" checkout", "starts or ends with a space"),
        ("checkout\u202e", "control character"),  # right-to-left override: a name that hides its text
        ("team/checkout", "/api/plans/<name>"),
        ("", "needs a name"),
    ],
)
def test_bad_plan_names_are_refused_naming_the_key(name: str, needle: str) -> None:
    message = refusal(raw_plan(name=name))
    assert "name: " in message and needle in message
    assert "\n" not in message  # the name is escaped in the message: it cannot forge a log line


@pytest.mark.parametrize(
    "name", ["checkout-events", "warehouse-orders", "checks-demo", "a" * 200, "Checkout events (web) v2", "café"]
)
def test_documented_and_ordinary_plan_names_load(name: str) -> None:
    assert load(raw_plan(name=name)).name == name


def test_stage_source_and_parameter_names_are_bounded() -> None:
    raw = raw_plan()
    raw["stages"][0]["name"] = "s" * 101
    message = refusal(raw)
    assert "is longer than 100 characters (max_name_chars)" in message
    assert len(message) < 400  # the name is shortened wherever it is shown
    raw["stages"][0]["name"] = "log\nINFO forged"
    message = refusal(raw)
    assert "stages[0] (log\\nINFO forged).name: 'log\\nINFO forged' is not a stage name" in message
    assert "\n" not in message
    raw = raw_plan()
    raw["sources"]["bad source"] = raw["sources"].pop("api")
    raw["stages"][1]["source"] = "bad source"
    assert "sources: 'bad source' is not a source name" in refusal(raw)
    raw = raw_plan(params={"test_id": {"required": True}, "test-id": None})
    assert "params: 'test-id' is not a parameter name" in refusal(raw)


# -- {param}: one list --------------------------------------------------------------------------------------
def test_stage_templates_lists_every_rendered_value() -> None:
    raw = raw_plan()
    raw["stages"][1]["request"] = {
        "path": "/e/{a}",
        "params": {"p": "{b}"},
        "json": {"j": ["{c}"]},
        "headers": {"X-Run": "{d}"},
    }
    raw["params"] = {name: None for name in ("test_id", "a", "b", "c", "d")}
    plan = load(raw)
    assert plan.templates(plan.stage("log")) == {
        "where": {"test_id": "{test_id}"},
        "sources.log.path": "/tmp/tc-limits/{test_id}/*.jsonl",
    }
    assert plan.stage_params(plan.stage("api")) == {"a", "b", "c", "d"}
    assert plan.templates(plan.stage("cache")) == {"redis.key": "ev:{test_id}"}
    # the plan's own keys, without the backend's; ``where`` left out for batching
    assert stage_templates(plan.stage("log"), where=False) == {}
    # a stage's own path replaces its source's: only the one read counts
    own = FileRead(path="/tmp/other/*.jsonl")
    assert own.templates("log", {"path": "/tmp/{x}.jsonl"}) == {"path": "/tmp/other/*.jsonl"}


def test_an_undeclared_parameter_in_a_file_sources_path_names_the_key() -> None:
    raw = raw_plan()
    raw["sources"]["log"]["path"] = "/tmp/{day}/*.jsonl"
    assert "stages[0] (log): sources.log.path uses run parameter(s) {day}" in refusal(raw)


def test_a_later_stages_parameter_without_a_value_is_refused_at_submission() -> None:
    raw = raw_plan()
    raw["stages"][2]["redis"]["key"] = "ev:{batch}"
    plan = load(raw)
    assert missing_params(plan, {"test_id": "t1"}) == [("cache", "batch")]
    assert missing_params(plan, {"test_id": "t1", "batch": 3}) == []
    with pytest.raises(ParamError) as caught:
        resolve_params(plan, {"test_id": "t1"})
    assert caught.value.context == {"plan": "limits-demo", "stage": "cache", "parameter": "batch"}
    assert "{batch} has no value, and this stage uses it in redis.key" in caught.value.message
    assert resolve_params(plan, {"test_id": "t1", "batch": "3"}) == {"test_id": "t1", "batch": "3"}


def test_a_parameter_with_a_default_is_never_missing() -> None:
    raw = raw_plan(params={"test_id": {"required": True}, "batch": {"default": "b0"}})
    raw["stages"][1]["request"]["params"] = {"batch": "{batch}"}
    plan = load(raw)
    assert missing_params(plan, resolve_params(plan, {"test_id": "t"})) == []


# -- the limits themselves ---------------------------------------------------------------------------------
def test_limits_are_checked_when_made() -> None:
    with pytest.raises(ValueError, match="max_depth"):
        PlanLimits(max_depth=0)
    with pytest.raises(ValueError, match="min_interval"):
        PlanLimits(min_interval=timedelta(seconds=-1))
