"""A file source with a ``root`` reads only below it: refused paths at load, symlinks out of it never followed.

Real files and symbolic links in a temporary directory; a canary file outside the root holds a unique
string that must appear nowhere in what a fetch returns.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from trackcheck.errors import PlanError, SourceQueryError
from trackcheck.loader import load_plan_text
from trackcheck.plan.model import SourceSpec, StageSpec
from trackcheck.sources import build_source
from trackcheck.sources.base import FetchRequest, FetchResult
from trackcheck.sources.files import FileSource

CANARY = "canary-7f3c9e1d-outside-the-root"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """``tmp_path/root`` with two event files; ``tmp_path/outside/secret.jsonl`` holds the canary."""
    inside = tmp_path / "root"
    (inside / "2024").mkdir(parents=True)
    (inside / "2024" / "events-1.jsonl").write_text(json.dumps({"event_id": "e1", "test_id": "t1"}) + "\n")
    (inside / "2024" / "events-2.jsonl").write_text(json.dumps({"event_id": "e2", "test_id": "t1"}) + "\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.jsonl").write_text(json.dumps({"event_id": "x", "test_id": "t1", "secret": CANARY}) + "\n")
    (outside / "passwd").write_text(f"root:x:0:0:{CANARY}:/root:/bin/bash\n")
    return inside


def source(root: Path | str, path: str | None = None) -> FileSource:
    spec = SourceSpec.model_validate({"type": "file", "root": str(root), **({"path": path} if path else {})})
    built = build_source("logs", spec, plan="p")
    assert isinstance(built, FileSource)
    return built


def stage(path: str | None = None) -> StageSpec:
    return StageSpec.model_validate({"name": "raw", "source": "logs", "path": path, "compare": {"with": "expect"}})


def fetch(src: FileSource, path: str | None = None, **params: Any) -> FetchResult:
    return src.fetch(FetchRequest(plan="p", stage=stage(path), params=params))


def ids(result: FetchResult) -> list[str]:
    return [r["event_id"] for r in result.records]


def shows_canary(result: FetchResult) -> bool:
    return CANARY in repr(result.records) or any(CANARY in note for note in result.notes)


def plan_text(root: Path, stage_path: str | None, source_path: str | None = None) -> str:
    file_source: dict[str, Any] = {"type": "file", "root": str(root)}
    if source_path is not None:
        file_source["path"] = source_path
    raw_stage: dict[str, Any] = {"name": "raw", "source": "logs", "compare": {"with": "expect"}}
    if stage_path is not None:
        raw_stage["path"] = stage_path
    plan = {"name": "rooted", "key": ["event_id"], "sources": {"logs": file_source}, "stages": [raw_stage]}
    return yaml.safe_dump(plan)


# -- refused when the plan loads ---------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/etc/passwd", "~/.ssh/id_rsa", "../outside/secret.jsonl", "2024/../../outside/*"])
def test_a_path_leaving_the_root_is_refused_when_the_plan_loads(root: Path, path: str) -> None:
    with pytest.raises(PlanError) as caught:
        load_plan_text(plan_text(root, path), origin="uploaded.yaml")

    message = str(caught.value)
    assert "stage 'raw'" in message
    assert "path: " in message
    assert f"paths are relative to the connection's root {root}" in message


def test_the_sources_own_path_is_checked_when_no_stage_replaces_it(root: Path) -> None:
    with pytest.raises(PlanError) as caught:
        load_plan_text(plan_text(root, None, source_path="/var/log/*.jsonl"), origin="uploaded.yaml")

    assert "path: '/var/log/*.jsonl' is absolute" in str(caught.value)


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/etc/passwd", "is absolute"),
        ("~/.ssh/id_rsa", "starts with '~'"),
        ("~root/x", "starts with '~'"),
        ("../outside/secret.jsonl", "has a '..' part"),
        ("2024/../../outside/*.jsonl", "has a '..' part"),
    ],
)
def test_check_read_names_the_key_the_value_and_the_reason(root: Path, path: str, reason: str) -> None:
    assert source(root).check_read(stage(path)) == (
        f"path: {path!r} {reason}; paths are relative to the connection's root {root}"
    )


@pytest.mark.parametrize("path", ["2024/*.jsonl", "**/*.jsonl", "{day}/events-*.jsonl", "events..old/x.jsonl"])
def test_relative_paths_pass_check_read(root: Path, path: str) -> None:
    assert source(root).check_read(stage(path)) is None


def test_without_a_root_any_path_is_allowed(tmp_path: Path) -> None:
    spec = SourceSpec.model_validate({"type": "file"})
    assert build_source("logs", spec, plan="p").check_read(stage("/etc/passwd")) is None


def test_a_relative_root_is_a_plan_error() -> None:
    with pytest.raises(PlanError) as caught:
        build_source("logs", SourceSpec.model_validate({"type": "file", "root": "logs"}), plan="p")

    assert "sources.logs.root" in str(caught.value)
    assert "not an absolute path" in str(caught.value)


# -- reading below the root --------------------------------------------------------------------------------
def test_relative_globs_read_files_below_the_root(root: Path) -> None:
    assert ids(fetch(source(root), "2024/events-*.jsonl")) == ["e1", "e2"]
    assert ids(fetch(source(root), "**/*.jsonl")) == ["e1", "e2"]
    assert ids(fetch(source(root, path="2024/events-1.jsonl"))) == ["e1"]
    assert ids(fetch(source(root), "{day}/events-2.jsonl", day="2024")) == ["e2"]


def test_a_symlink_inside_the_root_to_a_file_inside_is_read(root: Path) -> None:
    (root / "latest.jsonl").symlink_to(root / "2024" / "events-2.jsonl")

    assert ids(fetch(source(root), "latest.jsonl")) == ["e2"]


def test_a_symlink_to_a_file_outside_the_root_is_not_read(root: Path, tmp_path: Path) -> None:
    (root / "2024" / "events-3.jsonl").symlink_to(tmp_path / "outside" / "secret.jsonl")
    (root / "2024" / "events-4.jsonl").symlink_to(tmp_path / "outside" / "passwd")

    result = fetch(source(root), "2024/*.jsonl")

    assert ids(result) == ["e1", "e2"]
    assert result.unparsed == 0  # not even parsed and rejected: never opened
    assert not shows_canary(result)
    [note] = result.notes
    assert "not read: 2 file(s) resolving outside the connection's root" in note
    assert "events-3.jsonl" in note and "events-4.jsonl" in note
    assert str(tmp_path / "outside") not in note  # where the link points is not told either


def test_a_symlinked_directory_leaving_the_root_is_not_read(root: Path, tmp_path: Path) -> None:
    (root / "escape").symlink_to(tmp_path / "outside", target_is_directory=True)

    result = fetch(source(root), "**/*.jsonl")
    assert ids(result) == ["e1", "e2"]
    assert not shows_canary(result)
    assert any("escape/secret.jsonl" in note for note in result.notes)

    with pytest.raises(SourceQueryError) as caught:
        fetch(source(root), "escape/*.jsonl")
    assert "escape leads outside the connection's root" in str(caught.value)
    assert CANARY not in str(caught.value)


def test_a_run_parameter_cannot_lead_out_of_the_root(root: Path, tmp_path: Path) -> None:
    with pytest.raises(SourceQueryError) as absolute:
        fetch(source(root), "{dir}/secret.jsonl", dir=str(tmp_path / "outside"))
    with pytest.raises(SourceQueryError) as dotdot:
        fetch(source(root), "{dir}/secret.jsonl", dir="../outside")

    assert "is absolute; paths are relative to the connection's root" in str(absolute.value)
    assert "may not contain '..'" in str(dotdot.value)
    assert CANARY not in str(absolute.value) + str(dotdot.value)


def test_a_missing_root_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-root"
    with pytest.raises(SourceQueryError) as caught:
        fetch(source(missing), "*.jsonl")

    assert f"the connection's root {missing} does not exist" in str(caught.value)
    assert "source 'logs'" in str(caught.value)


def test_without_a_root_a_symlink_is_followed_as_before(root: Path, tmp_path: Path) -> None:
    """Trusted plans keep reading any file: the guard is the root's, not the file source's."""
    (root / "2024" / "events-3.jsonl").symlink_to(tmp_path / "outside" / "secret.jsonl")
    trusted = build_source("logs", SourceSpec.model_validate({"type": "file"}), plan="p")
    assert isinstance(trusted, FileSource)

    assert ids(fetch(trusted, str(root / "2024" / "*.jsonl"))) == ["e1", "e2", "x"]
