"""B3 batch: runs accepted per second, one run per submit against ``batch`` runs per submit.

The same B3 plan (a file source that never receives the events), the same SQLite state, measured twice:
in-process (``Engine.submit`` against ``Engine.submit_many``: validation and the state write only) and over
HTTP (``POST /api/runs`` against ``POST /api/runs/batch`` to ``trackcheck serve`` with its poller active),
each from one client sending one request after the other, so that the two sides differ only in how many
runs a request carries.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from benchmarks.b3_api import PLAN, _free_port, _wait_healthy
from benchmarks.common import log
from trackcheck.engine.core import Engine, RunRequest, store_plan


@dataclass(frozen=True)
class BatchResult:
    runs: int  # runs submitted on each side
    batch: int  # runs per batch submit
    inprocess_single: float  # runs accepted / s
    inprocess_batch: float
    http_single: float
    http_batch: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure(runs: int, batch: int) -> BatchResult:
    """Both sides in-process, then both over HTTP, ``runs`` runs each."""
    with tempfile.TemporaryDirectory(prefix="trackcheck-b3b-") as root:
        folder = Path(root)
        plan_text = PLAN.replace("LOG", str(folder / "never.jsonl"))
        single, batched = _in_process(folder, plan_text, runs, batch)
        http_single, http_batched = _over_http(folder, plan_text, runs, batch)
    result = BatchResult(runs, batch, single, batched, http_single, http_batched)
    log(f"B3 batch: {result}")
    return result


def _rate(runs: int, submit: Callable[[int], None], chunk: int) -> float:
    """Runs per second of ``submit(first_index)`` called once per ``chunk`` runs."""
    began = time.perf_counter()
    for first in range(0, runs, chunk):
        submit(first)
    return round(runs / (time.perf_counter() - began), 1)


def _in_process(folder: Path, plan_text: str, runs: int, batch: int) -> tuple[float, float]:
    with Engine(f"sqlite:///{folder / 'inprocess.db'}") as engine:
        plan_id, _ = store_plan(engine, plan_text, "b3.yaml", str(folder))

        def one(first: int) -> None:
            engine.submit(plan_id, {"test_id": f"s-{first}"})

        def many(first: int) -> None:
            count = min(batch, runs - first)
            engine.submit_many(plan_id, [RunRequest({"test_id": f"b-{first + i}"}) for i in range(count)])

        single = _rate(runs, one, 1)
        batched = _rate(runs, many, batch)
    return single, batched


def _over_http(folder: Path, plan_text: str, runs: int, batch: int) -> tuple[float, float]:
    (folder / "plans").mkdir()
    (folder / "plans" / "b3.yaml").write_text(plan_text)
    port = _free_port()
    service = subprocess.Popen(
        [sys.executable, "-m", "trackcheck", "serve", "--port", str(port), "--plans", str(folder / "plans"),
         "--db", f"sqlite:///{folder / 'state.db'}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, cwd=folder,
    )  # fmt: skip
    try:
        _wait_healthy(port, service)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:

            def one(first: int) -> None:
                answer = client.post("/api/runs", json={"plan": "b3", "params": {"test_id": f"s-{first}"}})
                answer.raise_for_status()

            def many(first: int) -> None:
                count = min(batch, runs - first)
                items = [{"params": {"test_id": f"b-{first + i}"}} for i in range(count)]
                answer = client.post("/api/runs/batch", json={"plan": "b3", "runs": items})
                answer.raise_for_status()

            single = _rate(runs, one, 1)
            batched = _rate(runs, many, batch)
    finally:
        os.killpg(service.pid, signal.SIGTERM)
        service.wait(30)
    return single, batched
