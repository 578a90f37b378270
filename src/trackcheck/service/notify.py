"""Webhook notifications: when a run ends, its JSON is POSTed to the plan's ``notify.webhook``.

The state database is the queue: a run that ends gets ``notify_due`` set (by the engine, in the same write
that ends it), and the leader's notifier delivers what is due, retrying with exponential back-off. Every
attempt is recorded on the run (``notify``), so a crash loses nothing and a failure stays visible.

Signature: ``X-Trackcheck-Signature: sha256=<hex HMAC-SHA256 of the body>`` keyed by ``notify.secret``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx

from trackcheck.engine.result import build_result
from trackcheck.errors import TrackcheckError
from trackcheck.plan.masking import mask_url_passwords
from trackcheck.sources.network import refusal
from trackcheck.store.repository import utcnow

if TYPE_CHECKING:
    from trackcheck.engine.core import Engine
    from trackcheck.store.models import Run

log = logging.getLogger("trackcheck.notify")
SIGNATURE_HEADER = "X-Trackcheck-Signature"


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Notifier:
    """Delivers due notifications every ``every`` seconds on its own thread (in the leading process only)."""

    def __init__(self, engine: Engine, every: float = 1.0, timeout: float = 10.0) -> None:
        self.engine = engine
        self.every = every
        self._client = httpx.Client(timeout=timeout, follow_redirects=False)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="trackcheck-notifier", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.deliver_due()
            except TrackcheckError as exc:
                log.error("notifications: %s", exc)

    def deliver_due(self, now: datetime | None = None) -> int:
        """Attempt every due notification once; returns how many were attempted."""
        due = self.engine.store.due_notifications(now or utcnow())
        for run in due:
            self._attempt(run)
        return len(due)

    def _refusal(self, run: Run, webhook: str) -> str | None:
        """An uploaded plan's webhook host was checked when the plan loaded; its name may resolve to another
        address now (DNS rebinding), so it is checked again before each delivery."""
        if self.engine.setup.uploads.allow_private_networks or self.engine.store.plan_version(run.plan_id).trusted:
            return None
        problem = refusal(httpx.URL(webhook).host, allow_private=False)
        return f"not sent: {problem}" if problem else None

    def _attempt(self, run: Run) -> None:
        plan = self.engine.plan(run.plan_id)
        state: dict[str, Any] = dict(run.notify or {})
        if plan.notify is None:  # the plan version lost its webhook: nothing to deliver
            self.engine.store.record_notification(run.id, state | {"state": "skipped"}, None)
            return
        body = json.dumps(build_result(run, self.engine.store.run_stages(run.id)).to_dict(), default=str).encode()
        # delivery is at least once: a poller killed between the answer and recording it sends again, with the
        # same Idempotency-Key, so that the receiver can drop the repeat
        headers = {"Content-Type": "application/json", "X-Trackcheck-Run": run.id, "Idempotency-Key": run.id}
        if plan.notify.secret:
            headers[SIGNATURE_HEADER] = sign(plan.notify.secret, body)
        attempts = int(state.get("attempts", 0)) + 1
        error = self._refusal(run, plan.notify.webhook)
        try:
            if error is None:
                response = self._client.post(plan.notify.webhook, content=body, headers=headers)
                if response.status_code >= 300:
                    error = f"the webhook answered HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {mask_url_passwords(str(exc))}"
        now = utcnow()
        about = {"run_id": run.id, "plan": plan.name}  # what the lines are about (``trackcheck.logs``)
        if error is None:
            state |= {"state": "delivered", "attempts": attempts, "delivered_at": now.isoformat(), "error": None}
            self.engine.store.record_notification(run.id, state, None)
            log.info("notified webhook of run %s (attempt %d)", run.id, attempts, extra=about)
            return
        if attempts > plan.notify.retries:
            state |= {"state": "failed", "attempts": attempts, "error": error}
            self.engine.store.record_notification(run.id, state, None)
            log.error("giving up notifying run %s after %d attempts: %s", run.id, attempts, error, extra=about)
            return
        delay: timedelta = plan.notify.backoff * 2 ** (attempts - 1)
        state |= {"state": "retrying", "attempts": attempts, "error": error, "next_attempt": (now + delay).isoformat()}
        self.engine.store.record_notification(run.id, state, now + delay)
        log.warning(
            "webhook for run %s failed (attempt %d), retrying in %s: %s", run.id, attempts, delay, error, extra=about
        )
