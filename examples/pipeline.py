"""A small, real demo pipeline: a collector log (JSONL files), a SQLite "warehouse" and a BI HTTP API.

Events reach each system later than the one before it, as they do in production. ``fault`` changes one
field on its way into the warehouse, so a run shows what a mismatch looks like. Used by ``demo.py`` and by
the end-to-end tests; it is example code, not part of the trackcheck package.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

EVENTS = [
    {"event_id": "e1", "event": "page_view", "user_id": "u1", "amount": 0},
    {"event_id": "e2", "event": "add_to_cart", "user_id": "u1", "amount": 0},
    {"event_id": "e3", "event": "purchase", "user_id": "u1", "amount": 25.5},
]


class DemoPipeline:
    """Owns a folder with the collector log and the warehouse database, and a BI server on loopback."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.log_dir = root / "logs"
        self.warehouse = root / "warehouse.db"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(self.warehouse) as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS ods_events (event_id TEXT, event_name TEXT, uid TEXT,"
                " amount REAL, test_id TEXT)"
            )
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._visible_at: dict[str, float] = {}

    @property
    def env(self) -> dict[str, str]:
        """The environment the example plan expects."""
        return {
            "LOG_DIR": str(self.log_dir),
            "WAREHOUSE_URL": f"sqlite:///{self.warehouse}",
            "BI_URL": f"http://127.0.0.1:{self._server.server_address[1]}",
        }

    def start(self) -> DemoPipeline:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def emit(
        self,
        test_id: str,
        *,
        delays: tuple[float, float] = (2, 4),
        fault: dict[str, Any] | None = None,
        drop: str | None = None,
    ) -> threading.Thread:
        """Send the demo events through the pipeline in the background: collector at once, the warehouse
        ``delays[0]`` s later, BI sees them ``delays[1]`` s after that. ``fault`` overrides fields of one
        event in the warehouse ({"event_id": ..., field: value}); ``drop`` loses one event on the way."""

        def flow() -> None:
            events = [dict(e, test_id=test_id) for e in EVENTS if e["event_id"] != drop]
            with (self.log_dir / f"collector-{test_id}.jsonl").open("a", encoding="utf-8") as log:
                for event in events:
                    log.write(json.dumps(event) + "\n")
            time.sleep(delays[0])
            rows = []
            for event in events:
                if fault and fault.get("event_id") == event["event_id"]:
                    event = {**event, **{k: v for k, v in fault.items() if k != "event_id"}}
                rows.append((event["event_id"], event["event"], event["user_id"], event["amount"], test_id))
            with sqlite3.connect(self.warehouse) as db:
                db.executemany("INSERT INTO ods_events VALUES (?, ?, ?, ?, ?)", rows)
            self._visible_at[test_id] = time.monotonic() + delays[1]

        thread = threading.Thread(target=flow, daemon=True)
        thread.start()
        return thread

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        pipeline = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                test_id = parse_qs(url.query).get("test_id", [""])[0]
                if url.path != "/api/event-counts":
                    self.send_error(404)
                    return
                items: list[dict[str, Any]] = []
                if time.monotonic() >= pipeline._visible_at.get(test_id, float("inf")):
                    with sqlite3.connect(pipeline.warehouse) as db:
                        names = [
                            r[0] for r in db.execute("SELECT event_name FROM ods_events WHERE test_id = ?", (test_id,))
                        ]
                    items = [{"event": k, "count": v} for k, v in sorted(Counter(names).items())]
                body = json.dumps({"data": {"items": items}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        return Handler
