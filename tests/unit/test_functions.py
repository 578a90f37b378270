"""The plan functions of ``select``/``records`` on real encodings (Snowplow's base64url ``ue_px``, JSON in a
text column, cents, epoch milliseconds), the null they give for what they cannot read, the load-time check
of function names and arity, and a whole run through the ``file`` source."""

from __future__ import annotations

import base64
import json
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import trackcheck
from trackcheck.compare import evaluate_stage
from trackcheck.errors import PlanError
from trackcheck.loader import load_plan_text
from trackcheck.plan.functions import OPTIONS, check_calls, compile_path, function_names
from trackcheck.plan.model import StageSpec
from trackcheck.sources.base import apply_select

UNSTRUCT = "iglu:com.snowplowanalytics.snowplow/unstruct_event/jsonschema/1-0-0"
CONTEXTS = "iglu:com.snowplowanalytics.snowplow/contexts/jsonschema/1-0-1"


def ue_px(event: dict[str, Any], schema: str = "iglu:com.acme/purchase/jsonschema/1-0-0") -> str:
    """What a Snowplow tracker sends as ``ue_px``: a self-describing JSON, base64url without padding."""
    text = json.dumps({"schema": UNSTRUCT, "data": {"schema": schema, "data": event}}, ensure_ascii=False)
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def cx(*contexts: dict[str, Any]) -> str:
    """Snowplow's ``cx``: the contexts array, base64url with its padding kept (trackers differ)."""
    return base64.urlsafe_b64encode(json.dumps({"schema": CONTEXTS, "data": list(contexts)}).encode()).decode()


def search(expression: str, data: Any) -> Any:
    return compile_path(expression).search(data, options=OPTIONS)


# -- decoding ------------------------------------------------------------------------------------------------


def test_snowplow_ue_px_decodes_to_the_event_data() -> None:
    event = {"order_id": "o-1", "amount": 25.5, "sku": "tarte ~ tatin?"}
    encoded = ue_px(event)
    # the URL-safe alphabet and the missing padding are what this test is about
    assert set(encoded) & set("-_") and len(encoded) % 4
    with pytest.raises(ValueError):
        base64.b64decode(encoded, validate=True)

    assert search("from_json(base64_decode(ue_px)).data.data", {"ue_px": encoded}) == event
    assert search("from_json(base64_decode(ue_px)).data.schema", {"ue_px": encoded}).startswith("iglu:com.acme/")


def test_snowplow_cx_with_padding_and_the_standard_alphabet() -> None:
    contexts = cx({"schema": "iglu:com.acme/test/jsonschema/1-0-0", "data": {"test_id": "t-1"}})
    assert contexts.endswith("=")
    standard = base64.b64encode(b'{"a": 1, "q": "?>?"}').decode()
    assert "/" in standard and standard.endswith("=")

    assert search("from_json(base64_decode(cx)).data[0].data.test_id", {"cx": contexts}) == "t-1"
    assert search("base64_decode(s)", {"s": base64.b64encode("crème ✓".encode()).decode()}) == "crème ✓"
    assert search("from_json(base64_decode(s)).a", {"s": standard}) == 1


def test_json_inside_a_text_column() -> None:
    row = {"payload": '{"user": {"id": 42}, "items": [{"sku": "A"}]}'}

    assert search("from_json(payload).user.id", row) == 42
    assert search("from_json(payload).items[0].sku", row) == "A"
    # a driver that already decoded the column (PostgreSQL jsonb): the object as it is
    assert search("from_json(payload).user.id", {"payload": {"user": {"id": 42}}}) == 42


def test_case_and_whitespace() -> None:
    row = {"event": "  Add_To_Cart \n"}
    assert search("lower(trim(event))", row) == "add_to_cart"
    assert search("upper(trim(event))", row) == "ADD_TO_CART"


# -- numbers ---------------------------------------------------------------------------------------------------


def test_cents_become_decimals_with_div() -> None:
    assert search("div(amount_cents, `100`)", {"amount_cents": 2550}) == 25.5
    assert search("div(amount_cents, `100`)", {"amount_cents": 1999}) == 19.99
    assert search("div(amount_cents, `100`)", {"amount_cents": 2500}) == 25
    # a CSV's text reads as a number
    assert search("div(amount_cents, `100`)", {"amount_cents": "1999"}) == 19.99


def test_mul_and_round_in_decimal_arithmetic() -> None:
    assert 19.99 * 100 != 1999  # what binary floats would give
    assert search("mul(amount, `100`)", {"amount": 19.99}) == 1999
    assert round(2.675, 2) == 2.67  # Python's own round, through the float
    assert search("round(amount, `2`)", {"amount": 2.675}) == 2.68
    assert search("round(amount, `0`)", {"amount": -2.5}) == -3
    assert search("round(amount, `-2`)", {"amount": 1250}) == 1300


def test_division_by_zero_is_null() -> None:
    assert search("div(amount, divisor)", {"amount": 10, "divisor": 0}) is None
    assert search("div(amount, divisor)", {"amount": 10, "divisor": "0.0"}) is None


# -- time ------------------------------------------------------------------------------------------------------


def test_parse_time_reads_iso_8601_into_utc() -> None:
    assert search("parse_time(t)", {"t": "2026-11-24 11:00:00+01:00"}) == "2026-11-24T10:00:00Z"
    assert search("parse_time(t)", {"t": "2026-11-24T10:00:00.250Z"}) == "2026-11-24T10:00:00.250000Z"
    assert search("parse_time(t)", {"t": "2026-11-24T10:00:00"}) == "2026-11-24T10:00:00Z"  # naive: UTC


def test_parse_time_with_a_strptime_format() -> None:
    assert search("parse_time(t, '%d/%m/%Y %H:%M')", {"t": "24/11/2026 10:05"}) == "2026-11-24T10:05:00Z"
    assert search("parse_time(t, '%d/%b/%Y:%H:%M:%S %z')", {"t": "24/Nov/2026:11:05:00 +0100"}) == (
        "2026-11-24T10:05:00Z"
    )
    assert search("parse_time(t, '%d/%m/%Y %H:%M')", {"t": "2026-11-24T10:05:00Z"}) is None


def test_parse_time_reads_epoch_numbers() -> None:
    moment = datetime(2026, 11, 24, 10, 0, 0, 123_000, tzinfo=UTC)
    millis = int(moment.timestamp() * 1000)

    assert search("parse_time(dtm)", {"dtm": millis}) == "2026-11-24T10:00:00.123000Z"
    # Snowplow's dtm is milliseconds as text: to_number first
    assert search("parse_time(to_number(dtm))", {"dtm": str(millis)}) == "2026-11-24T10:00:00.123000Z"
    assert search("parse_time(t)", {"t": millis // 1000}) == "2026-11-24T10:00:00Z"
    assert search("parse_time(t)", {"t": millis * 1000}) == "2026-11-24T10:00:00.123000Z"  # GA4: microseconds


def test_parse_time_takes_a_database_datetime() -> None:
    paris = timezone(timedelta(hours=1))
    assert search("parse_time(t)", {"t": datetime(2026, 11, 24, 11, 0, tzinfo=paris)}) == "2026-11-24T10:00:00Z"
    assert search("parse_time(t)", {"t": date(2026, 11, 24)}) == "2026-11-24T00:00:00Z"


@pytest.mark.parametrize(
    ("unit", "expected"),
    [
        ("second", "2026-11-24T10:59:59Z"),
        ("minute", "2026-11-24T10:59:00Z"),
        ("hour", "2026-11-24T10:00:00Z"),
        ("day", "2026-11-24T00:00:00Z"),
    ],
)
def test_trunc_time(unit: str, expected: str) -> None:
    assert search(f"trunc_time(t, '{unit}')", {"t": "2026-11-24T11:59:59.987+01:00"}) == expected


def test_trunc_time_lets_second_and_millisecond_systems_agree() -> None:
    seconds = search("trunc_time(t, 'second')", {"t": "2026-11-24T10:00:01Z"})
    millis = search("trunc_time(t, 'second')", {"t": 1795514401999})
    assert seconds == millis == "2026-11-24T10:00:01Z"


def test_to_unix_gives_seconds() -> None:
    assert search("to_unix(t)", {"t": "2026-11-24T10:00:00Z"}) == 1795514400
    assert search("to_unix(t)", {"t": "2026-11-24T11:00:00.5+01:00"}) == 1795514400.5
    assert search("to_unix(parse_time(t))", {"t": 1795514400000}) == 1795514400


# -- what cannot be read gives null ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("from_json(v)", "{not json"),
        ("from_json(v)", "NaN"),
        ("from_json(v)", 42),
        ("base64_decode(v)", "not base64!"),
        ("base64_decode(v)", "abcde"),  # a length no base64 has
        ("base64_decode(v)", base64.b64encode(b"\xff\xfe").decode()),  # bytes, not UTF-8 text
        ("base64_decode(v)", None),
        ("lower(v)", 42),
        ("upper(v)", ["A"]),
        ("trim(v)", None),
        ("round(v, `2`)", "ten"),
        ("round(v, `1.5`)", 2.5),
        ("mul(v, `2`)", True),
        ("div(v, `2`)", {"a": 1}),
        ("div(v, `2`)", "1e999999999"),
        ("parse_time(v)", "yesterday"),
        ("parse_time(v)", True),
        ("parse_time(v, `5`)", "2026-11-24"),
        ("parse_time(v)", 1e300),
        ("trunc_time(v, 'hour')", "soon"),
        ('trunc_time(`"2026-11-24T10:00:00Z"`, v)', "hours"),
        ("to_unix(v)", "2026-13-45"),
    ],
)
def test_a_value_a_function_cannot_use_gives_null(expression: str, value: Any) -> None:
    assert search(expression, {"v": value}) is None


def test_a_poison_record_makes_its_field_null_not_the_whole_select_fail() -> None:
    records = [
        {"id": "e1", "ue": ue_px({"amount": 10}), "tags": ["a", "b"]},
        {"id": "e2", "ue": "%%% not base64 %%%", "tags": 7},  # length(7) is a type error in JMESPath itself
    ]
    select = {"id": "id", "amount": "from_json(base64_decode(ue)).data.data.amount", "tags": "length(tags)"}

    assert apply_select(records, select) == [
        {"id": "e1", "amount": 10, "tags": 2},
        {"id": "e2", "amount": None, "tags": None},
    ]


# -- load-time checks -----------------------------------------------------------------------------------------


def plan_text(select: dict[str, str] | None = None, records: str | None = None) -> str:
    stage: dict[str, Any] = {"name": "collector", "source": "logs", "compare": {"with": "expect"}}
    source = {"type": "file", "path": "/tmp/events.jsonl"}
    if select is not None:
        stage["select"] = select
    if records is not None:
        source = {"type": "http", "url": "http://127.0.0.1:9"}
        stage.update(request={"path": "/events"}, records=records)
    plan = {"name": "decoded", "key": "event_id", "sources": {"logs": source}, "stages": [stage]}
    return json.dumps(plan)  # JSON is YAML


def load_error(text: str) -> str:
    with pytest.raises(PlanError) as caught:
        load_plan_text(text, origin="decoded.yaml")
    assert caught.value.context.get("stage") == "collector"
    return caught.value.message


def test_an_unknown_function_is_rejected_with_the_closest_name() -> None:
    message = load_error(plan_text({"event_id": "event_id", "ue": "from_json(base64decode(ue_px)).data"}))
    assert message == "stages[0] (collector): select.ue: unknown function base64decode(); did you mean base64_decode()?"


def test_an_unknown_function_without_a_close_name() -> None:
    message = load_error(plan_text({"event_id": "event_id", "x": "frobnicate(x)"}))
    assert message.endswith("select.x: unknown function frobnicate(); see docs/plans.md")


def test_a_wrong_argument_count_is_rejected() -> None:
    assert load_error(plan_text({"event_id": "event_id", "amount": "round(amount)"})).endswith(
        "select.amount: round() takes 2 arguments, got 1"
    )
    assert load_error(plan_text({"event_id": "event_id", "t": "parse_time(t, 'a', 'b')"})).endswith(
        "select.t: parse_time() takes 1 or 2 arguments, got 3"
    )
    assert load_error(plan_text({"event_id": "event_id", "v": "not_null()"})).endswith(
        "select.v: not_null() takes at least 1 argument, got 0"
    )


def test_a_trunc_time_unit_written_in_the_plan_is_checked() -> None:
    assert load_error(plan_text({"event_id": "event_id", "t": "trunc_time(t, 'hours')"})).endswith(
        "select.t: trunc_time() unit 'hours' is not one of second, minute, hour, day"
    )


def test_records_is_checked_like_select() -> None:
    assert load_error(plan_text(records="flatten(data.items)")).endswith(
        "records: unknown function flatten(); see docs/plans.md"
    )
    assert "records: 'data.[' is not a JMESPath expression" in load_error(plan_text(records="data.["))


def test_calls_nested_anywhere_are_checked_and_optional_arguments_allowed() -> None:
    assert check_calls(compile_path("items[?lowr(sku) == 'a'].sku")) == (
        "unknown function lowr(); did you mean lower() or floor()?"
    )
    assert check_calls(compile_path("{a: parse_time(t), b: parse_time(t, '%Y'), c: items[1:3]}")) is None
    plan = load_plan_text(plan_text({"event_id": "event_id", "t": "parse_time(t, '%Y')"}))
    assert plan.stages[0].select == {"event_id": "event_id", "t": "parse_time(t, '%Y')"}


def test_the_registry_holds_jmespath_functions_and_ours() -> None:
    names = function_names()
    for name in ("to_number", "length", "from_json", "base64_decode", "parse_time", "trunc_time", "to_unix"):
        assert name in names


# -- a selected path null in every record ---------------------------------------------------------------------


def select_stage(select: dict[str, str]) -> StageSpec:
    return StageSpec.model_validate(
        {"name": "s", "source": "x", "select": select, "compare": {"with": "expect", "fields": ["amount"]}}
    )


def test_a_field_null_in_every_record_is_named_on_the_stage() -> None:
    stage = select_stage({"id": "id", "amount": "amount", "user_id": "usr.id", "sku": "sku"})
    found = [{"id": f"e{i}", "amount": 1, "user_id": None, "sku": None} for i in range(12)]

    result = evaluate_stage(stage, ["id"], found, [{"id": f"e{i}", "amount": 1} for i in range(12)])

    assert result.verdict == "passed"
    assert result.warnings == [
        "select.user_id is null in all 12 records: check the path",
        "select.sku is null in all 12 records: check the path",
    ]
    assert result.reason == (
        "all 12 expected events found and matching; select.user_id is null in all 12 records: check the path; "
        "select.sku is null in all 12 records: check the path"
    )


def test_a_field_with_a_value_in_one_record_is_not_reported() -> None:
    stage = select_stage({"id": "id", "amount": "amount"})
    found = [{"id": "e1", "amount": None}, {"id": "e2", "amount": 3}]

    result = evaluate_stage(stage, ["id"], found, [{"id": "e1", "amount": None}, {"id": "e2", "amount": 3}])

    assert result.warnings == []
    assert result.reason is not None and "null" not in result.reason


def test_one_record_and_no_records() -> None:
    stage = select_stage({"id": "id", "amount": "amount"})
    one = evaluate_stage(stage, ["id"], [{"id": "e1", "amount": None}], [{"id": "e1"}, {"id": "e2"}])
    none = evaluate_stage(stage, ["id"], [], [{"id": "e1"}])

    assert one.warnings == ["select.amount is null in the 1 record found: check the path"]
    assert none.warnings == []


# -- a run through the file source ----------------------------------------------------------------------------


PLAN = """
name: snowplow-decoded
key: event_id
params:
  test_id: {required: true}
sources:
  collector: {type: file, path: events.jsonl}
stages:
  - name: collector
    source: collector
    where: {test_id: "{test_id}"}
    select:
      event_id: eid
      test_id: from_json(base64_decode(cx)).data[0].data.test_id
      amount: from_json(base64_decode(ue_px)).data.data.amount
      cents: mul(from_json(base64_decode(ue_px)).data.data.amount, `100`)
      sent: parse_time(to_number(dtm))
      sku: from_json(base64_decode(ue_px)).data.sku
    compare: {with: expect, fields: [amount, cents, sent]}
"""


def collector_line(eid: str, test_id: str, amount: float, dtm: int) -> dict[str, Any]:
    """One Snowplow GET request as a collector logs its query string."""
    context = {"schema": "iglu:com.acme/test_run/jsonschema/1-0-0", "data": {"test_id": test_id}}
    return {
        "e": "ue",
        "eid": eid,
        "p": "web",
        "dtm": str(dtm),
        "ue_px": ue_px({"order_id": eid, "amount": amount, "sku": "tarte ~ tatin?"}),
        "cx": cx(context).rstrip("="),
    }


def test_a_run_decodes_snowplow_payloads_and_names_a_null_path(tmp_path: Path) -> None:
    sent = 1795514400123
    lines = [
        collector_line("e1", "t-1", 25.5, sent),
        collector_line("e2", "t-1", 19.99, sent + 1000),
        collector_line("e3", "t-2", 99.0, sent),
    ]
    (tmp_path / "events.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (tmp_path / "plan.yaml").write_text(PLAN)
    expect = [
        {"event_id": "e1", "amount": 25.5, "cents": 2550, "sent": "2026-11-24T10:00:00.123Z"},
        {"event_id": "e2", "amount": 19.99, "cents": 1999, "sent": "2026-11-24T10:00:01.123Z"},
    ]

    result = trackcheck.verify(
        tmp_path / "plan.yaml",
        params={"test_id": "t-1"},
        expect=expect,
        min_interval="100ms",
        interval="200ms",
        timeout="10s",
    )

    stage = result.stage("collector")
    assert result.ok, result.to_dict()
    assert (stage.expected, stage.found) == (2, 2)
    # ``sku`` misses the inner ``.data``: null everywhere, said on the stage although the run passed
    assert stage.warnings == ["select.sku is null in all 2 records: check the path"]
    assert stage.reason is not None and stage.reason.endswith("select.sku is null in all 2 records: check the path")
