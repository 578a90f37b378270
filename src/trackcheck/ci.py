"""What CI logs and CI systems read from ``trackcheck run``: heartbeat lines for a log that would otherwise
stay silent for a long wait, and GitHub Actions workflow commands (``::error file=...,line=...::``) that put
a failed stage on the line of the plan that declares it.

Pure functions of a run's result and the plan file: the CLI prints what they return.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from trackcheck.engine.result import RunResult, StageResult


def heartbeat_line(stage: StageResult, now: datetime, deadline: datetime | None) -> str:
    """What a waiting stage waits for, for a CI log that would otherwise stay silent for the whole wait:
    ``12:03:30 warehouse: waiting 4m10s (poll 9, found 2/3; waiting for e3); times out in 25m50s``."""
    started = datetime.fromisoformat(stage.started_at) if stage.started_at else now
    facts = [f"poll {stage.attempts}"] if stage.attempts else ["first poll due"]
    if stage.expected is not None:
        facts.append(f"found {stage.found}/{stage.expected}")
    shown = ", ".join(facts)
    if stage.missing:
        keys = ", ".join(_key(k) for k in stage.missing[:5])
        more = f" and {len(stage.missing) - 5} more" if len(stage.missing) > 5 else ""
        shown += f"; waiting for {keys}{more}"
    elif stage.reason:
        shown += f"; {stage.reason}"
    line = f"{now.astimezone().strftime('%H:%M:%S')} {stage.name}: waiting {_duration(now - started)} ({shown})"
    if deadline is not None:
        line += f"; times out in {_duration(deadline - now)}"
    return line


def _key(key: Any) -> str:
    """An event key as a log line shows it: ``e3``, or ``(shop=north, order_no=1)`` for a composite key."""
    if isinstance(key, dict):
        return "(" + ", ".join(f"{name}={value}" for name, value in key.items()) + ")"
    return str(key)


def _duration(delta: timedelta) -> str:
    seconds = max(0, round(delta.total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


# -- GitHub Actions annotations ------------------------------------------------------------------------


@dataclass
class Outline:
    """Where a plan file names itself and each stage (1-based lines), for annotations on the plan."""

    name: str | None = None
    line: int | None = None
    stages: dict[str, int | None] = field(default_factory=dict)
    #: the line of each stage's ``name:`` by position (a PlanError names a stage as ``stages[1]``)
    positions: list[int | None] = field(default_factory=list)

    def line_of(self, stage: str | None, message: str) -> int | None:
        if stage in self.stages:
            return self.stages[stage]
        found = re.search(r"\bstages\[(\d+)\]", message)
        if found and int(found.group(1)) < len(self.positions):
            return self.positions[int(found.group(1))]
        return self.line


def plan_outline(path: str) -> Outline:
    """The lines of the plan's ``name:`` and of each stage's ``name:``, from the YAML node marks; an empty
    outline when the file cannot be read or parsed (the annotation then points at the file only)."""
    import yaml
    from yaml.nodes import MappingNode, ScalarNode, SequenceNode

    from trackcheck.plan.safe_yaml import BoundedLoader

    outline = Outline()
    try:
        text = Path(path).read_text(encoding="utf-8")
        if len(text) > 1_000_000:
            return outline
        loader = BoundedLoader(text)
        try:
            root = loader.get_single_node()
        finally:
            loader.dispose()
    except (OSError, UnicodeError, yaml.YAMLError):
        return outline

    def entries(node: Any) -> dict[str, tuple[int, Any]]:
        if not isinstance(node, MappingNode):
            return {}
        return {k.value: (k.start_mark.line + 1, v) for k, v in node.value if isinstance(k, ScalarNode)}

    top = entries(root)
    if "name" in top and isinstance(top["name"][1], ScalarNode):
        outline.line, outline.name = top["name"][0], top["name"][1].value
    stages = top.get("stages", (None, None))[1]
    for item in stages.value if isinstance(stages, SequenceNode) else []:
        name = entries(item).get("name")
        if name is not None and isinstance(name[1], ScalarNode):
            outline.stages.setdefault(name[1].value, name[0])
        outline.positions.append(name[0] if name else item.start_mark.line + 1)
    return outline


def _escape_data(text: str) -> str:
    """A workflow command's message, escaped as GitHub's toolkit does (``%``, CR and LF)."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    """A workflow command's property value: as data, and ``:`` and ``,`` too (they delimit properties)."""
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def workflow_command(kind: str, message: str, file: str, line: int | None, title: str) -> str:
    props = {"file": file, "line": str(line) if line else None, "title": title}
    shown = ",".join(f"{name}={_escape_property(value)}" for name, value in props.items() if value)
    return f"::{kind} {shown}::{_escape_data(message)}"


def github_annotations(result: RunResult, plan_file: str) -> list[str]:
    """``::error`` for each failed or errored stage (with its evidence), ``::warning`` for each warning of a
    check of ``severity: warn``, pointing at the line of the stage's ``name:`` in the plan file."""
    outline = plan_outline(plan_file)
    lines = []
    for stage in result.stages:
        line = outline.stages.get(stage.name)
        if stage.status in ("failed", "error"):
            title = f"trackcheck: {stage.name} {'failed' if stage.status == 'failed' else 'could not be read'}"
            lines.append(workflow_command("error", stage_message(stage), plan_file, line, title))
        for warning in stage.warnings[:10]:
            lines.append(workflow_command("warning", warning, plan_file, line, f"trackcheck: {stage.name} warning"))
    return lines


def stage_message(stage: StageResult) -> str:
    """The reason of a failed or errored stage and the first of its evidence, one fact per line."""
    parts = [stage.error or stage.reason or stage.status] if stage.status == "error" else [stage.reason or "failed"]
    if stage.status == "error" and stage.reason and stage.reason != parts[0]:
        parts.append(stage.reason)
    for m in stage.mismatches[:10]:
        parts.append(f"mismatch {_key(m['key'])}.{m['field']}: expected {m['expected']!r}, got {m['actual']!r}")
    for name in ("missing", "unexpected", "duplicates"):
        keys = getattr(stage, name)
        if keys:
            parts.append(f"{name}: {', '.join(_key(k) for k in keys[:20])}")
    return "\n".join(parts)
