"""A stand-in for a real pipeline: a tracker writes events to the collector's log, a loader copies them to
the warehouse. ``lossy=True`` is the bug the failing example catches: the loader rounds amounts down and
drops the last event."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def track(data_dir: Path, test_id: str, events: list[dict[str, Any]]) -> None:
    """What the tracker does: one JSON line per event, tagged with the test that sent it."""
    with (data_dir / "collector.jsonl").open("a", encoding="utf-8") as log:
        for event in events:
            log.write(json.dumps({**event, "test_id": test_id}) + "\n")


def load(data_dir: Path, *, lossy: bool = False) -> None:
    """What the warehouse loader does: read the collector's log, write the warehouse's export."""
    lines = (data_dir / "collector.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines]
    if lossy:
        rows = [{**row, "amount": int(row["amount"])} for row in rows[:-1]]
    with (data_dir / "warehouse.jsonl").open("w", encoding="utf-8") as export:
        export.writelines(json.dumps(row) + "\n" for row in rows)
