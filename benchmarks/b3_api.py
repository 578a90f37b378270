"""B3: ``POST /api/runs`` under load, from a second process on loopback.

The service runs as users run it (``trackcheck serve``: gunicorn, SQLite state, the poller active); the
plan's only source is a file that never receives the events, so every accepted run stays waiting and
each tick polls them all, as under real load. A load process (``python -m benchmarks.b3_api <config>``)
keeps ``concurrency`` requests in flight for ``seconds`` or until ``max_requests``, whichever comes first,
and reports every latency. Nothing here asserts a speed: the report compares p99 with the 50 ms target.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import REPO, RESULT_MARK, log, percentile

PLAN = """
name: b3
key: event_id
params:
  test_id: {required: true}
defaults: {interval: 58s, timeout: 30m}
sources:
  log: {type: file, path: "LOG", format: jsonl}
expect:
  - {event_id: e1, event: view}
stages:
  - name: log
    source: log
    where: {test_id: "{test_id}"}
    compare: {with: expect, fields: [event]}
"""


@dataclass(frozen=True)
class B3Result:
    seconds: float
    concurrency: int
    requests: int
    errors: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    throughput: float  # accepted runs per second

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure(seconds: float, concurrency: int, max_requests: int) -> B3Result:
    """Start a service, load it from a second process, stop it; the load process's figures."""
    with tempfile.TemporaryDirectory(prefix="trackcheck-b3-") as root:
        folder = Path(root)
        (folder / "plans").mkdir()
        (folder / "plans" / "b3.yaml").write_text(PLAN.replace("LOG", str(folder / "never.jsonl")))
        port = _free_port()
        service = subprocess.Popen(
            [sys.executable, "-m", "trackcheck", "serve", "--port", str(port), "--plans", str(folder / "plans"),
             "--db", f"sqlite:///{folder / 'state.db'}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, cwd=folder,
        )  # fmt: skip
        try:
            _wait_healthy(port, service)
            config = {"url": f"http://127.0.0.1:{port}", "seconds": seconds, "concurrency": concurrency,
                      "max_requests": max_requests}  # fmt: skip
            load = subprocess.run(
                [sys.executable, "-m", "benchmarks.b3_api", json.dumps(config)],
                capture_output=True, text=True, cwd=REPO, timeout=seconds + 120, check=True,
            )  # fmt: skip
        finally:
            os.killpg(service.pid, signal.SIGTERM)
            service.wait(30)
    line = next(x for x in load.stdout.splitlines() if x.startswith(RESULT_MARK))
    return B3Result(**json.loads(line[len(RESULT_MARK) :]))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_healthy(port: int, service: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if service.poll() is not None:
            raise RuntimeError(f"trackcheck serve exited with {service.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("trackcheck serve did not become healthy")


def _load(url: str, seconds: float, concurrency: int, max_requests: int) -> B3Result:
    """The second process: ``concurrency`` threads POSTing runs back to back."""
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def worker(index: int) -> None:
        nonlocal errors
        with httpx.Client(base_url=url, timeout=30) as client:
            n = 0
            while time.monotonic() < stop_at:
                with lock:
                    if len(latencies) + errors >= max_requests:
                        return
                body = {"plan": "b3", "params": {"test_id": f"w{index}-{n}"}}
                began = time.perf_counter()
                answer = client.post("/api/runs", json=body)
                took = time.perf_counter() - began
                n += 1
                with lock:
                    if answer.status_code == 202:
                        latencies.append(took)
                    else:
                        errors += 1

    began = time.monotonic()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - began
    ms = [x * 1000 for x in latencies]
    return B3Result(
        seconds=round(elapsed, 2),
        concurrency=concurrency,
        requests=len(latencies),
        errors=errors,
        p50_ms=round(percentile(ms, 50), 2),
        p99_ms=round(percentile(ms, 99), 2),
        max_ms=round(max(ms, default=float("nan")), 2),
        throughput=round(len(latencies) / elapsed, 1) if elapsed else float("nan"),
    )


if __name__ == "__main__":
    settings = json.loads(sys.argv[1])
    result = _load(settings["url"], settings["seconds"], settings["concurrency"], settings["max_requests"])
    print(RESULT_MARK + json.dumps(result.to_dict()), flush=True)
    log(f"B3 load: {result.requests} runs accepted in {result.seconds}s, p99 {result.p99_ms} ms")
