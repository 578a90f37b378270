"""FileSource on real files in a temporary directory: formats, globs, half-written and broken lines."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any

import pytest

from trackcheck.errors import SourceQueryError
from trackcheck.plan.model import SourceSpec, StageSpec
from trackcheck.sources import build_source
from trackcheck.sources.base import FetchRequest, FetchResult
from trackcheck.sources.files import FileSource

EVENTS = [
    {"event_id": "e1", "event": "signup", "user": {"id": 42}, "items": [{"sku": "A"}], "test_id": "t1"},
    {"event_id": "e2", "event": "purchase", "user": {"id": 42}, "items": [], "test_id": "t1"},
    {"event_id": "e3", "event": "signup", "user": {"id": 7}, "items": [{"sku": "B"}], "test_id": "t2"},
]


def source(path: Path | str | None = None, **options: Any) -> FileSource:
    spec = SourceSpec.model_validate({"type": "file", **({"path": str(path)} if path else {}), **options})
    built = build_source("collector", spec, plan="p")
    assert isinstance(built, FileSource)
    return built


def fetch(
    src: FileSource,
    path: str | None = None,
    *,
    params: dict[str, Any] | None = None,
    select: dict[str, str] | None = None,
    **filters: list[Any],
) -> FetchResult:
    stage = StageSpec.model_validate(
        {"name": "raw", "source": "collector", "path": path, "select": select, "compare": {"with": "expect"}}
    )
    return src.fetch(FetchRequest(plan="p", stage=stage, filters=filters, params=params or {}))


def jsonl(records: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def ids(result: FetchResult) -> list[str]:
    return [r["event_id"] for r in result.records]


def test_jsonl_records_filtered_by_where_values(tmp_path: Path) -> None:
    (tmp_path / "events.jsonl").write_text(jsonl(EVENTS))

    result = fetch(source(tmp_path / "events.jsonl"), test_id=["t1"])

    assert result.records == EVENTS[:2]
    assert (result.unparsed, result.notes) == (0, [])


def test_csv_values_stay_text_and_filters_compare_numbers_by_value(tmp_path: Path) -> None:
    (tmp_path / "orders.csv").write_text("event_id,amount,test_id\ne1,25.50,t1\ne2,3,t1\ne3,25.5,t2\n")

    result = fetch(source(tmp_path / "orders.csv"), amount=[25.5], test_id=["t1"])

    assert result.records == [{"event_id": "e1", "amount": "25.50", "test_id": "t1"}]


def test_csv_delimiter_and_tsv_by_extension(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("event_id;test_id\ne1;t1\n")
    (tmp_path / "b.tsv").write_text("event_id\ttest_id\ne2\tt1\n")

    assert ids(fetch(source(tmp_path / "a.csv", delimiter=";"), test_id=["t1"])) == ["e1"]
    assert ids(fetch(source(tmp_path / "b.tsv"), test_id=["t1"])) == ["e2"]


def test_gzipped_files_are_read_transparently(tmp_path: Path) -> None:
    with gzip.open(tmp_path / "events.jsonl.gz", "wt") as stream:
        stream.write(jsonl(EVENTS))
    with gzip.open(tmp_path / "orders.csv.gz", "wt") as stream:
        stream.write("event_id,test_id\ne9,t1\n")

    assert ids(fetch(source(tmp_path / "events.jsonl.gz"))) == ["e1", "e2", "e3"]
    assert fetch(source(tmp_path / "orders.csv.gz")).records == [{"event_id": "e9", "test_id": "t1"}]


def test_a_gzip_still_being_written_gives_what_it_has_without_unparsed_lines(tmp_path: Path) -> None:
    whole = gzip.compress(jsonl(EVENTS * 200).encode())
    (tmp_path / "events.jsonl.gz").write_bytes(whole[: len(whole) - 20])

    result = fetch(source(tmp_path / "events.jsonl.gz"))

    assert 0 < len(result.records) <= 600 and result.unparsed == 0
    assert result.notes == ["events.jsonl.gz: compressed data ends early (still being written?)"]


def test_a_glob_reads_every_matching_file_in_name_order(tmp_path: Path) -> None:
    (tmp_path / "2026-11-24").mkdir()
    (tmp_path / "2026-11-24" / "collector-2.jsonl").write_text(jsonl(EVENTS[2:]))
    (tmp_path / "2026-11-24" / "collector-1.jsonl").write_text(jsonl(EVENTS[:2]))
    (tmp_path / "2026-11-24" / "collector-3.jsonl.gz").write_bytes(gzip.compress(jsonl([{"event_id": "e4"}]).encode()))
    (tmp_path / "2026-11-24" / "notes.txt").write_text("not matched\n")

    result = fetch(source(tmp_path / "*" / "collector-*.jsonl*"))

    assert ids(result) == ["e1", "e2", "e3", "e4"]


def test_unparsable_lines_are_counted_and_described_never_fatal(tmp_path: Path) -> None:
    lines = [json.dumps(EVENTS[0]), "{not json", "", "[1, 2]", json.dumps(EVENTS[1])]
    data = "\n".join(lines).encode() + b"\n\xff\xfe{}\n"
    (tmp_path / "collector-1.jsonl").write_bytes(data)

    result = fetch(source(tmp_path / "collector-1.jsonl"))

    assert ids(result) == ["e1", "e2"]
    assert result.unparsed == 3
    assert result.notes == [
        "collector-1.jsonl line 2: not valid JSON",
        "collector-1.jsonl line 4: not a JSON object but list",
        "collector-1.jsonl line 6: not valid utf-8",
    ]


def test_notes_are_capped_but_every_bad_line_is_counted(tmp_path: Path) -> None:
    (tmp_path / "bad.jsonl").write_text("oops\n" * 50 + jsonl(EVENTS[:1]))

    result = fetch(source(tmp_path / "bad.jsonl"))

    assert ids(result) == ["e1"] and result.unparsed == 50
    assert len(result.notes) == 21
    assert result.notes[-1] == "... and 30 more unparsed lines"


def test_the_last_line_still_being_written_is_not_unparsed(tmp_path: Path) -> None:
    (tmp_path / "writing.jsonl").write_text(jsonl(EVENTS[:2]) + '{"event_id": "e3", "ev')
    (tmp_path / "done.jsonl").write_text(jsonl(EVENTS[:1]) + json.dumps(EVENTS[2]))  # no final newline
    (tmp_path / "writing.csv").write_text("event_id,test_id\ne1,t1\ne2,t1,extra\ne3\ne4")

    writing = fetch(source(tmp_path / "writing.jsonl"))
    done = fetch(source(tmp_path / "done.jsonl"))
    csv_writing = fetch(source(tmp_path / "writing.csv"))

    assert (ids(writing), writing.unparsed, writing.notes) == (["e1", "e2"], 0, [])
    assert ids(done) == ["e1", "e3"]
    assert ids(csv_writing) == ["e1"]
    assert csv_writing.notes == [
        "writing.csv line 3: 3 fields where the header has 2",
        "writing.csv line 4: 1 fields where the header has 2",
    ]


def test_missing_files_are_no_records_yet(tmp_path: Path) -> None:
    assert fetch(source(tmp_path / "not-yet" / "*.jsonl")).records == []
    assert fetch(source(tmp_path / "events.jsonl")).records == []


def test_an_unreadable_directory_is_an_error_not_an_empty_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "events.jsonl").write_text(jsonl(EVENTS))
    real_scandir = os.scandir

    def scandir(path: Any = ".") -> Any:  # chmod 000 does not stop root, who may run these tests
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)

    with pytest.raises(SourceQueryError, match=r"source 'collector', stage 'raw': cannot read directory .*locked"):
        fetch(source(locked / "*.jsonl"))


def test_path_templates_take_run_parameters_literally(tmp_path: Path) -> None:
    for test_id, records in (("t1", EVENTS[:2]), ("t[12]", EVENTS[2:])):
        (tmp_path / test_id).mkdir()
        (tmp_path / test_id / "events.jsonl").write_text(jsonl(records))
    src = source(tmp_path / "{test_id}" / "*.jsonl")

    assert ids(fetch(src, params={"test_id": "t1"})) == ["e1", "e2"]
    assert ids(fetch(src, params={"test_id": "t[12]"})) == ["e3"]
    with pytest.raises(SourceQueryError, match=r"\{test_id\} may not contain '\.\.'"):
        fetch(src, params={"test_id": "../t1"})


def test_a_stage_path_replaces_the_source_path(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text(jsonl(EVENTS[:1]))
    (tmp_path / "b.jsonl").write_text(jsonl(EVENTS[1:2]))

    assert ids(fetch(source(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl"))) == ["e2"]
    with pytest.raises(SourceQueryError, match="no 'path'"):
        fetch(source())


def test_select_maps_nested_fields_before_filtering(tmp_path: Path) -> None:
    (tmp_path / "events.jsonl").write_text(jsonl(EVENTS))
    select = {"event_id": "event_id", "user_id": "user.id", "sku": "items[0].sku"}

    result = fetch(source(tmp_path / "events.jsonl"), select=select, user_id=["42"])
    numeric = fetch(source(tmp_path / "events.jsonl"), select=select, user_id=[42])

    assert result.records == [
        {"event_id": "e1", "user_id": 42, "sku": "A"},
        {"event_id": "e2", "user_id": 42, "sku": None},
    ]
    assert numeric.records == result.records  # "42" and 42 select the same records


def test_format_is_needed_when_the_extension_does_not_tell(tmp_path: Path) -> None:
    (tmp_path / "events.log").write_text(jsonl(EVENTS))

    with pytest.raises(SourceQueryError, match="cannot tell the format of events.log"):
        fetch(source(tmp_path / "events.log"))
    assert ids(fetch(source(tmp_path / "events.log", format="jsonl"))) == ["e1", "e2", "e3"]


def test_encoding_option_decodes_the_file(tmp_path: Path) -> None:
    (tmp_path / "names.csv").write_bytes("event_id,city\ne1,Köln\n".encode("latin-1"))

    assert fetch(source(tmp_path / "names.csv", encoding="latin-1")).records == [{"event_id": "e1", "city": "Köln"}]
    with pytest.raises(SourceQueryError, match="is not utf-8: set the source's encoding"):
        fetch(source(tmp_path / "names.csv"))


def test_a_path_that_starts_with_a_run_parameter_is_where_the_parameter_says(tmp_path: Path) -> None:
    """``{data_dir}/events.jsonl``: the folder comes with each run, not from the plan's folder."""
    import trackcheck

    data = tmp_path / "data"
    data.mkdir()
    (data / "events.jsonl").write_text('{"event_id": "e1", "test_id": "p1"}\n', encoding="utf-8")
    plan = tmp_path / "plans" / "p.yaml"
    plan.parent.mkdir()
    plan.write_text(
        """
name: param-folder
key: event_id
params: {data_dir: {required: true}, test_id: {required: true}}
sources: {spool: {type: file, path: "{data_dir}/events.jsonl"}}
expect: [{event_id: e1}]
stages:
  - {name: spool, source: spool, where: {test_id: "{test_id}"}, compare: {with: expect}}
""",
        encoding="utf-8",
    )
    result = trackcheck.verify(
        plan, params={"data_dir": str(data), "test_id": "p1"}, interval="200ms", min_interval="100ms", timeout="5s"
    )
    assert result.ok, result.to_dict()
