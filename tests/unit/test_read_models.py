"""Each source backend owns the stage keys it reads (``ReadSpec``): the plan model names none of them.

These tests load plans as a user writes them and check what a plan's author sees: a key of another backend
refused with the keys this one reads, the keys kept typed on the stage, and a backend defined in one
module (here, in this file) whose keys are validated and rendered with no change to ``plan/``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

import pytest

from trackcheck.errors import PlanError
from trackcheck.loader import load_plan_text, resolve_params
from trackcheck.plan.model import ReadSpec, StageSpec
from trackcheck.sources import register
from trackcheck.sources.base import FetchRequest, FetchResult, Source, SourceOptions
from trackcheck.sources.mqtt import MqttSource
from trackcheck.sources.sql import SqlRead


class DeskRead(ReadSpec):
    """A backend of this test only: a help desk whose ``queue`` may hold ``{param}`` and whose ``limit``
    may not."""

    queue: str
    limit: int = 10

    def templates(self, source: str, options: Mapping[str, Any]) -> dict[str, Any]:
        return {"queue": self.queue}


class DeskOptions(SourceOptions):
    url: str


@register
class DeskSource(Source):
    type_name = "helpdesk"
    options_model = DeskOptions
    read_model = DeskRead

    def fetch(self, request: FetchRequest) -> FetchResult:
        return FetchResult([])


def plan_text(source: dict[str, Any], stage: dict[str, Any], params: dict[str, Any] | None = None) -> str:
    plan = {
        "name": "owned",
        "key": "event_id",
        "params": params or {"test_id": {"required": True}},
        "sources": {"s": source},
        "stages": [{"name": "read", "source": "s", "compare": {"with": "expect"}, **stage}],
    }
    return json.dumps(plan)  # JSON is YAML


def refusal(text: str) -> str:
    with pytest.raises(PlanError) as caught:
        load_plan_text(text)
    assert caught.value.context.get("stage") == "read"
    return caught.value.message


SQL = {"type": "sql", "url": "sqlite:///:memory:"}
SPELLING = "(check the spelling; see docs/plans.md)"


def test_a_key_of_another_backend_is_refused_with_the_keys_this_one_reads() -> None:
    message = refusal(plan_text(SQL, {"table": "events", "topic": "events"}))
    assert message == (
        "stages[0] (read).topic: unknown key: a sql stage reads query, table (check the spelling; see docs/plans.md)"
    )


def test_a_misspelt_key_is_refused_by_the_backend_that_reads_it() -> None:
    message = refusal(plan_text(SQL, {"querry": "SELECT 1"}))
    assert message.startswith("stages[0] (read).querry: unknown key: a sql stage reads query, table")


def test_the_backends_own_rules_name_the_stage() -> None:
    both = refusal(plan_text(SQL, {"table": "events", "query": "SELECT 1"}))
    assert both == "stages[0] (read): set 'query' or 'table', not both"
    assert refusal(plan_text(SQL, {})) == "a sql stage needs 'query' or 'table'"
    mqtt = refusal(plan_text({"type": "mqtt", "url": "mqtt://127.0.0.1:1883"}, {"topic": "a/b", "from": "-10m"}))
    assert mqtt.startswith("stages[0] (read).from: MQTT keeps no history")


def test_the_loaded_stage_keeps_its_keys_typed() -> None:
    plan = load_plan_text(plan_text(SQL, {"table": "events", "where": {"test_id": "{test_id}"}}))
    stage = plan.stage("read")
    read = SqlRead.of(stage)
    assert read.table == "events" and read.query is None
    assert stage.bound_read is read  # validated once, when the plan loaded; a fetch reads it again
    assert stage.read_keys == {"table": "events"}


def test_a_stage_validated_on_its_own_is_read_by_its_source() -> None:
    """A source given a stage that no loader bound (a test, a tool) validates the keys itself."""
    stage = StageSpec.model_validate({"name": "bus", "source": "m", "compare": {"with": "expect"}, "stream": "s"})
    assert stage.bound_read is None
    problem = MqttSource.check_stage(stage)
    assert (
        problem
        == "stream: unknown key: a mqtt stage reads topic, qos, format, records (check the spelling; see docs/plans.md)"
    )


def test_a_backend_defined_in_one_module_brings_its_keys() -> None:
    source = {"type": "helpdesk", "url": "https://desk.example"}
    plan = load_plan_text(plan_text(source, {"queue": "tickets-{test_id}", "limit": 5}))
    stage = plan.stage("read")
    assert DeskRead.of(stage) == DeskRead(queue="tickets-{test_id}", limit=5)
    assert plan.stage_params(stage) == {"test_id"}  # its templates join the plan's
    assert resolve_params(plan, {"test_id": "t1"}) == {"test_id": "t1"}

    undeclared = refusal(plan_text(source, {"queue": "tickets-{ticket}"}))
    assert undeclared == "stages[0] (read): queue uses run parameter(s) {ticket} that 'params' does not declare"
    assert refusal(plan_text(source, {"limit": 5})) == "stages[0] (read).queue: this key is required"
    assert refusal(plan_text(source, {"queue": "q", "limit": "many"})).startswith("stages[0] (read).limit: ")
    foreign = refusal(plan_text(source, {"queue": "q", "table": "t"}))
    assert "a helpdesk stage reads queue, limit" in foreign


class _Counting(DeskRead):
    validations: ClassVar[int] = 0

    @classmethod
    def model_validate(cls, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        _Counting.validations += 1
        return super().model_validate(*args, **kwargs)


def test_a_sources_reads_of_a_stage_validate_its_keys_once() -> None:
    stage = StageSpec.model_validate({"name": "d", "source": "s", "compare": {"with": "expect"}, "queue": "q"})
    first = _Counting.of(stage)
    assert _Counting.of(stage) is first and _Counting.of(stage) is first
    assert _Counting.validations == 1
