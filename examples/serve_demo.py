"""``make run``: the service on the embedded SQLite default, fed by the demo pipeline.

Starts ``trackcheck serve`` with the example plans, sends four test runs' events through the demo pipeline
(collector log → SQLite warehouse → BI API, each a few seconds behind the one before; the last run has a
purchase amount changed on its way into the warehouse), submits a run for each over the API, and prints
the dashboard address and each run's outcome. Within a minute three runs pass and one fails with a readable
diff. The service keeps running (Ctrl-C stops it) so the dashboard can be explored.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from pipeline import DemoPipeline

HERE = Path(__file__).parent
PORT = int(os.environ.get("PORT", "8000"))
URL = f"http://127.0.0.1:{PORT}"
#: the demo's stages poll every 2 s, not the plan's 58 s / 5 m, so a newcomer sees the flow in a minute
OVERRIDES = {"interval": "2s", "timeout": "90s"}


def wait_healthy(server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"trackcheck serve exited with {server.returncode} (is port {PORT} free? set PORT=...)")
        try:
            if httpx.get(f"{URL}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    sys.exit("trackcheck serve did not become healthy within 60 s")


def submit(pipeline: DemoPipeline, fault: dict[str, object] | None = None) -> str:
    test_id = f"demo-{uuid.uuid4().hex[:8]}"
    pipeline.emit(test_id, delays=(4, 4), fault=fault)
    answer = httpx.post(
        f"{URL}/api/runs", json={"plan": "checkout-events", "params": {"test_id": test_id}, **OVERRIDES}, timeout=10
    )
    answer.raise_for_status()
    run_id: str = answer.json()["id"]
    print(f"submitted run {run_id} (test_id {test_id}{', with a changed amount' if fault else ''}): {answer.json()}")
    return run_id


def report(run_ids: list[str]) -> None:
    pending = set(run_ids)
    while pending:
        time.sleep(1)
        for run_id in sorted(pending):
            result = httpx.get(f"{URL}/api/runs/{run_id}", timeout=10).json()
            if result["status"] == "running":
                continue
            pending.discard(run_id)
            stages = ", ".join(f"{s['name']} {s['status']}" for s in result["stages"])
            print(f"run {run_id} {result['status'].upper()}: {stages}  →  {URL}/runs/{run_id}", flush=True)
            for stage in result["stages"]:
                for m in stage["mismatches"]:
                    print(f"    {stage['name']}: {m['key']}.{m['field']} expected {m['expected']}, got {m['actual']}")


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="trackcheck-demo-") as root:
        pipeline = DemoPipeline(Path(root)).start()
        server = subprocess.Popen(  # noqa: S603 - our own CLI
            [sys.executable, "-m", "trackcheck", "serve", "--plans", str(HERE), "--port", str(PORT)],
            env={**os.environ, **pipeline.env},
        )
        try:
            wait_healthy(server)
            print(f"\ndashboard: {URL}/\n", flush=True)
            runs = [submit(pipeline) for _ in range(3)] + [submit(pipeline, {"event_id": "e3", "amount": 52.5})]
            report(runs)
            print(f"\nall runs ended; the dashboard stays at {URL}/ until Ctrl-C", flush=True)
            server.wait()
        except KeyboardInterrupt:
            pass
        finally:
            if server.poll() is None:
                server.send_signal(signal.SIGTERM)
                server.wait(30)
            pipeline.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
