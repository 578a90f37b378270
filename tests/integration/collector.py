"""A local tracking collector for tests on real SDK output: it speaks the two protocols trackers use.

- ``POST /v1/batch``: the Segment HTTP tracking API (Segment's and RudderStack's SDKs; gzip or plain JSON
  ``{"batch": [message, ...]}``);
- ``POST /com.snowplowanalytics.snowplow/tp2``: the Snowplow tracker protocol (``{"schema", "data": [event]}``,
  with ``ue_px``/``cx`` base64url encoded as the tracker sends them).

Every event is appended, as the tracker sent it, to ``events.jsonl`` in the collector's folder: what a real
collector's log (or a loader's input) holds. Each line also carries ``_protocol`` (``segment`` or
``snowplow``). Whatever the SDK sends is kept verbatim: tests decode it with the plan's ``select``.
"""

from __future__ import annotations

import gzip
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

SEGMENT_PATH = "/v1/batch"
SNOWPLOW_PATH = "/com.snowplowanalytics.snowplow/tp2"


class Collector:
    """A collector on 127.0.0.1 writing ``events.jsonl`` under ``folder``; use it as a context manager."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.log = folder / "events.jsonl"
        #: the Authorization header of each request (Segment's write key is sent as basic auth)
        self.authorizations: list[str] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> Self:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def events(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text(encoding="utf-8").splitlines() if line]

    def write(self, protocol: str, events: list[dict[str, Any]]) -> None:
        with self._lock, self.log.open("a", encoding="utf-8") as out:
            for event in events:
                out.write(json.dumps({**event, "_protocol": protocol}) + "\n")


def _handler_for(collector: Collector) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            collector.authorizations.append(self.headers.get("Authorization") or "")
            if self.headers.get("Content-Encoding") == "gzip":
                raw = gzip.decompress(raw)
            body = json.loads(raw or b"{}")
            if self.path == SEGMENT_PATH:
                collector.write("segment", list(body.get("batch", [])))
            elif self.path == SNOWPLOW_PATH:
                collector.write("snowplow", list(body.get("data", [])))
            else:
                self.send_response(404)
                self.end_headers()
                return
            payload = b'{"success": true}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler
