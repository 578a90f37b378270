"""``make run``: the example plan verified end to end against the demo pipeline, with the real CLI.

Two runs: one whose events arrive late but intact (every stage passes, exit 0), and one where the warehouse
changes a purchase amount on the way (the warehouse stage fails with the mismatch, exit 1). State goes to
the embedded SQLite default, ``trackcheck.db``; ``trackcheck show RUN_ID`` prints any run again.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from pipeline import DemoPipeline

PLAN = Path(__file__).with_name("checkout.yaml")


def verify(pipeline: DemoPipeline, title: str, fault: dict[str, object] | None) -> int:
    test_id = f"demo-{uuid.uuid4().hex[:8]}"
    print(f"\n== {title}: test_id={test_id}", flush=True)
    pipeline.emit(test_id, delays=(3, 3), fault=fault)
    command = [
        sys.executable,
        "-m",
        "trackcheck",
        "run",
        str(PLAN),
        "-p",
        f"test_id={test_id}",
        "--interval",
        "1s",
        "--timeout",
        "30s",
    ]
    return subprocess.call(command, env={**os.environ, **pipeline.env})  # noqa: S603 - our own CLI


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="trackcheck-demo-") as root:
        pipeline = DemoPipeline(Path(root)).start()
        try:
            good = verify(pipeline, "events arrive late but intact", None)
            bad = verify(pipeline, "the warehouse changes a purchase amount", {"event_id": "e3", "amount": 52.5})
        finally:
            pipeline.stop()
    print(f"\nexit codes: intact run {good} (expected 0), faulty run {bad} (expected 1)")
    return 0 if (good, bad) == (0, 1) else 1


if __name__ == "__main__":
    sys.exit(main())
