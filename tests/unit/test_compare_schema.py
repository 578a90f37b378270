"""JSON Schema at a stage: one schema file, or a tracking plan that picks the schema by event name."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from trackcheck.compare import Comparison, evaluate_stage
from trackcheck.errors import PlanError
from trackcheck.plan.model import StageSpec

PURCHASE = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {"id": {"type": "string"}, "amount": {"type": "number", "minimum": 0}},
    "required": ["id", "amount"],
}
CLICK = {"type": "object", "properties": {"target": {"type": "string"}}, "required": ["target"]}


def write(folder: Path, name: str, schema: dict[str, Any]) -> str:
    path = folder / name
    path.write_text(json.dumps(schema), encoding="utf-8")
    return str(path)


def run(schema: Any, found: list[Any], reference: list[Any] | None = None) -> Comparison:
    stage = StageSpec.model_validate(
        {"name": "s", "source": "x", "compare": {"with": "expect", "allow_extra": True}, "schema": schema}
    )
    return evaluate_stage(stage, ["id"], found, found if reference is None else reference)


def test_valid_records_keep_the_main_verdict(tmp_path: Path) -> None:
    found = [{"id": "e1", "amount": 10}]
    result = run(write(tmp_path, "p.json", PURCHASE), found)
    assert (result.verdict, result.violations) == ("passed", [])


def test_a_violation_fails_the_stage_with_path_and_message(tmp_path: Path) -> None:
    found = [{"id": "e1", "amount": "ten"}, {"id": "e2", "amount": -1}, {"id": "e3", "amount": 3}]
    result = run(write(tmp_path, "p.json", PURCHASE), found)
    assert result.verdict == "failed"
    assert result.violations == [
        {"key": "e1", "path": "$.amount", "message": "'ten' is not of type 'number'"},
        {"key": "e2", "path": "$.amount", "message": "-1 is less than the minimum of 0"},
    ]
    assert result.reason == (
        "2 schema violations in 2 records: e1 $.amount: 'ten' is not of type 'number'; "
        "e2 $.amount: -1 is less than the minimum of 0; all 3 expected events found and matching"
    )


def test_every_error_of_a_record_is_reported(tmp_path: Path) -> None:
    result = run(write(tmp_path, "p.json", PURCHASE), [{"id": 7}])
    assert {(v["path"], v["message"]) for v in result.violations} == {
        ("$.id", "7 is not of type 'string'"),
        ("$", "'amount' is a required property"),
    }


def test_schema_violations_add_to_a_waiting_stage(tmp_path: Path) -> None:
    result = run(write(tmp_path, "p.json", PURCHASE), [{"id": "e1"}], reference=[{"id": "e1"}, {"id": "e2"}])
    assert result.verdict == "failed"
    assert result.missing == ["e2"]
    assert result.violations[0]["message"] == "'amount' is a required property"


def test_a_tracking_plan_picks_the_schema_by_event(tmp_path: Path) -> None:
    plan = {
        "by": "event",
        "files": {
            "purchase": write(tmp_path, "purchase.json", PURCHASE),
            "click": write(tmp_path, "click.json", CLICK),
        },
    }
    found = [
        {"id": "e1", "event": "purchase", "amount": 5},
        {"id": "e2", "event": "click", "target": "buy"},
        {"id": "e3", "event": "click"},
        {"id": "e4", "event": "scroll"},
    ]
    result = run(plan, found)
    assert result.verdict == "failed"
    assert result.violations == [
        {"key": "e3", "path": "$", "message": "'target' is a required property"},
        {"key": "e4", "path": "$.event", "message": "unplanned event 'scroll': no schema in the tracking plan"},
    ]


def test_records_are_validated_as_json(tmp_path: Path) -> None:
    from datetime import UTC, datetime
    from decimal import Decimal

    schema = {"type": "object", "properties": {"amount": {"type": "number"}, "ts": {"type": "string"}}}
    found = [{"id": "e1", "amount": Decimal("2.5"), "ts": datetime(2026, 11, 24, tzinfo=UTC)}]
    assert run(write(tmp_path, "s.json", schema), found).verdict == "passed"


def test_an_edited_schema_file_is_read_again(tmp_path: Path) -> None:
    path = write(tmp_path, "p.json", PURCHASE)
    found = [{"id": "e1", "amount": -5}]
    assert run(path, found).verdict == "failed"
    write(tmp_path, "p.json", {"type": "object"})
    import os

    os.utime(path, ns=(1, 10**18))
    assert run(path, found).verdict == "passed"


def test_a_schema_file_that_cannot_be_read_is_a_plan_error(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="cannot read schema file"):
        run(str(tmp_path / "nope.json"), [{"id": "e1"}])


@pytest.mark.parametrize(
    ("fmt", "good", "bad"),
    [
        ("date-time", "2026-12-03T10:00:00Z", "2026-12-03 10:00"),
        ("email", "qa@example.com", "not an address"),
        ("uuid", "5b1e3f0a-8f4c-4c1e-9d0a-2f6f1a7f3b21", "5b1e3f0a"),
        ("uri", "https://shop.example.com/p/1", "/relative/only"),
    ],
)
def test_formats_are_asserted(tmp_path: Path, fmt: str, good: str, bad: str) -> None:
    schema = {"type": "object", "properties": {"v": {"type": "string", "format": fmt}}}
    path = write(tmp_path, f"{fmt}.json", schema)
    assert run(path, [{"id": "e1", "v": good}]).verdict == "passed"
    result = run(path, [{"id": "e2", "v": bad}])
    assert result.verdict == "failed" and fmt in result.violations[0]["message"]


def test_a_plan_without_schemas_loads_without_importing_jsonschema(tmp_path: Path) -> None:
    """Importing jsonschema costs ~0.8 CPU s: a poller loading a plan with no schema must not pay it (benchmark
    B1 counted it as the scheduler's work). A fresh interpreter, since this one imported it above."""
    import subprocess
    import sys

    plan = (
        "name: p\nkey: id\nsources: {f: {type: file, path: x.jsonl}}\nexpect: [{id: e1}]\n"
        "stages:\n  - {name: s, source: f, compare: {with: expect}}\n"
    )
    script = (
        "import sys; from trackcheck.loader import load_plan_text\n"
        f"load_plan_text({plan!r}, origin='p.yaml', base_dir=sys.argv[1])\n"
        "print('jsonschema' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
