"""A real HTTP server in a thread, for tests of everything trackcheck sends or reads over HTTP.

Tests set a reply per path (status, JSON or raw body, headers, delay) and read back every request the
server received (method, path, query parameters, headers, body)::

    with HttpTestServer() as server:
        server.reply("/api/events", {"data": {"items": []}})
        ...  # point the code under test at server.url
        assert server.requests[0].query == {"test_id": ["abc"]}

A path without a reply answers 404 with a JSON error naming the path. Replies are matched on the path
only (the query string is recorded, not matched); a reply set with ``method=`` applies to that method only.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

__all__ = ["HttpTestServer", "ReceivedRequest", "Reply"]


@dataclass(frozen=True)
class Reply:
    """What the server answers on one path: ``body`` is sent as JSON unless it is ``str`` or ``bytes``."""

    body: Any = None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0

    def payload(self) -> tuple[bytes, str]:
        """The bytes to send and their default content type."""
        if isinstance(self.body, bytes):
            return self.body, "application/octet-stream"
        if isinstance(self.body, str):
            return self.body.encode(), "text/plain; charset=utf-8"
        if self.body is None and self.status == 204:
            return b"", "application/json"
        return json.dumps(self.body).encode(), "application/json"


@dataclass(frozen=True)
class ReceivedRequest:
    """One request as the server saw it; header names are lower-case."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    received_at: float = field(default_factory=time.monotonic)  # monotonic clock, to tell ticks apart

    def param(self, name: str) -> str | None:
        """The first value of query parameter ``name``, or None."""
        values = self.query.get(name)
        return values[0] if values else None

    def json(self) -> Any:
        return json.loads(self.body)


class HttpTestServer:
    """A ThreadingHTTPServer on 127.0.0.1 and an ephemeral port; ``with`` starts and stops it."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._host = host
        self._replies: dict[tuple[str | None, str], Reply] = {}
        self._requests: list[ReceivedRequest] = []
        self._lock = threading.Lock()
        self._received = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._server is not None:
            return
        self._stopping.clear()
        self._server = ThreadingHTTPServer((self._host, 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="http-test-server", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving; requests still sleeping in a ``delay`` are woken and dropped."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "the server is not started"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` (no trailing slash)."""
        return f"http://{self._host}:{self.port}"

    # -- what it answers -------------------------------------------------------------------------------
    def reply(
        self,
        path: str,
        body: Any = None,
        *,
        status: int = 200,
        headers: dict[str, str] | None = None,
        delay: float = 0.0,
        method: str | None = None,
    ) -> None:
        """Answer requests to ``path`` (any method, or only ``method``) with this status and body."""
        with self._lock:
            key = (method.upper() if method else None, path)
            self._replies[key] = Reply(body, status, dict(headers or {}), delay)

    def _reply_for(self, method: str, path: str) -> Reply:
        with self._lock:
            found = self._replies.get((method, path)) or self._replies.get((None, path))
        return found or Reply({"error": f"no reply set for {method} {path}"}, status=404)

    # -- what it received ------------------------------------------------------------------------------
    @property
    def requests(self) -> list[ReceivedRequest]:
        """Every request received so far, oldest first (a copy)."""
        with self._lock:
            return list(self._requests)

    def requests_to(self, path: str) -> list[ReceivedRequest]:
        return [r for r in self.requests if r.path == path]

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[ReceivedRequest]:
        """Block until at least ``count`` requests arrived (for code that sends in the background)."""
        deadline = time.monotonic() + timeout
        with self._received:
            while len(self._requests) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"expected {count} request(s) within {timeout}s, got {len(self._requests)}")
                self._received.wait(left)
            return list(self._requests)

    def clear(self) -> None:
        """Forget replies and received requests."""
        with self._lock:
            self._replies.clear()
            self._requests.clear()

    def _record(self, request: ReceivedRequest) -> None:
        with self._received:
            self._requests.append(request)
            self._received.notify_all()


def _handler_for(server: HttpTestServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _handle(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            server._record(
                ReceivedRequest(
                    method=self.command,
                    path=parts.path,
                    query=parse_qs(parts.query, keep_blank_values=True),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                )
            )
            reply = server._reply_for(self.command, parts.path)
            if reply.delay and server._stopping.wait(reply.delay):
                return
            payload, content_type = reply.payload()
            try:
                self.send_response(reply.status)
                headers = {"Content-Type": content_type, **reply.headers, "Content-Length": str(len(payload))}
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (e.g. its timeout was shorter than the delay)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
