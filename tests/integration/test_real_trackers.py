"""Checks on what real tracker SDKs send: the Snowplow Python tracker, Segment's and RudderStack's SDKs post
to a local collector (``collector.py``), which logs every event as sent; a loader copies the purchases into
a SQLite warehouse a little later, deduplicated, in cents.

The plan decodes Snowplow's base64url ``ue_px`` and ``cx`` with the ``select`` functions, converts cents
with ``div``, accepts the at-least-once duplicate a Segment retry makes (``duplicates: allow-identical``) and
reconciles revenue per event type between the warehouse and the tracker (``aggregates``, summed by the
database).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rudderstack.analytics import Client as RudderClient
from segment.analytics import Client as SegmentClient
from snowplow_tracker import Emitter, SelfDescribingJson, Tracker

import trackcheck
from tests.integration.collector import Collector
from tests.settings import MIN_INTERVAL

PURCHASE = "iglu:com.shop/purchase/jsonschema/1-0-0"
CUSTOMER = "iglu:com.shop/customer/jsonschema/1-0-0"
ORDERS = [("o1", 2550, "u1"), ("o2", 990, "u2"), ("o3", 12000, "u1")]

PLAN = """
name: real-trackers
key: order_id
params:
  test_id: {required: true}
defaults: {interval: 200ms, timeout: 15s}
sources:
  collector: {type: file, path: "COLLECTOR", format: jsonl}
  warehouse: {type: sql, url: "sqlite:///WAREHOUSE"}
expect:
  - {order_id: o1, event: purchase, amount: 25.5, user_id: u1}
  - {order_id: o2, event: purchase, amount: 9.9, user_id: u2}
  - {order_id: o3, event: purchase, amount: 120, user_id: u1}
stages:
  - name: snowplow
    source: collector
    select:
      order_id: from_json(base64_decode(ue_px)).data.data.order_id
      event: from_json(base64_decode(ue_px)).data.data.event
      amount: from_json(base64_decode(ue_px)).data.data.amount
      test_id: from_json(base64_decode(ue_px)).data.data.test_id
      user_id: from_json(base64_decode(cx)).data[0].data.user_id
    where: {test_id: "{test_id}"}
    compare: {with: expect, fields: [event, amount, user_id]}
  - name: segment
    source: collector
    select:
      order_id: properties.order_id
      event: event
      amount: div(properties.revenue_cents, `100`)
      test_id: properties.test_id
      user_id: userId
    where: {test_id: "{test_id}"}
    compare: {with: snowplow, fields: [event, amount, user_id], duplicates: allow-identical}
  - name: revenue
    source: warehouse
    query: SELECT event, revenue_cents / 100.0 AS amount, test_id FROM purchases
    where: {test_id: "{test_id}"}
    aggregates: {by: [event], sum: [amount], count: true, with: snowplow, tolerance: {amount: 0.01}}
"""


class Shop:
    """The tracked app (three SDKs), its collector, and a loader copying purchases to the warehouse."""

    def __init__(self, root: Path) -> None:
        self.collector = Collector(root / "collector")
        self.warehouse = root / "warehouse.db"
        with sqlite3.connect(self.warehouse) as db:
            db.execute("CREATE TABLE purchases (message_id TEXT, event TEXT, revenue_cents INT, test_id TEXT)")
        self.plan = root / "plan.yaml"
        text = PLAN.replace("COLLECTOR", str(self.collector.log)).replace("WAREHOUSE", str(self.warehouse))
        self.plan.write_text(text, encoding="utf-8")
        self._stop = threading.Event()
        self._loader = threading.Thread(target=self._load, daemon=True)

    def __enter__(self) -> Shop:
        self.collector.__enter__()
        self._loader.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._loader.join(5)
        self.collector.__exit__(*exc_info)

    def _load(self) -> None:
        """Every 300 ms: Segment-protocol purchases not loaded yet, once per messageId, in cents."""
        while not self._stop.wait(0.3):
            with sqlite3.connect(self.warehouse) as db:
                loaded = {row[0] for row in db.execute("SELECT message_id FROM purchases")}
                for event in self.collector.events():
                    if event["_protocol"] != "segment" or event.get("messageId") in loaded:
                        continue
                    properties = event.get("properties") or {}
                    db.execute(
                        "INSERT INTO purchases VALUES (?, ?, ?, ?)",
                        (event["messageId"], event["event"], properties["revenue_cents"], properties["test_id"]),
                    )
                    loaded.add(event["messageId"])

    def send(self, test_id: str, *, segment_amounts: dict[str, int] | None = None) -> None:
        """Each order through Snowplow, and through Segment (o1, o3: o1 retried, same messageId) or
        RudderStack (o2); ``segment_amounts`` changes what the server-side SDKs send for an order."""
        host, port = "127.0.0.1", int(self.collector.url.rsplit(":", 1)[1])
        emitter = Emitter(host, protocol="http", port=port, method="post", batch_size=1)
        tracker = Tracker("tc", emitter, app_id="shop")
        segment = SegmentClient("segment-write-key", host=self.collector.url, sync_mode=True)
        rudder = RudderClient("rudder-write-key", host=self.collector.url, sync_mode=True)
        for order_id, cents, user_id in ORDERS:
            data = {"order_id": order_id, "event": "purchase", "amount": cents / 100, "test_id": test_id}
            customer = SelfDescribingJson(CUSTOMER, {"user_id": user_id})
            tracker.track_self_describing_event(SelfDescribingJson(PURCHASE, data), context=[customer])
            sent = (segment_amounts or {}).get(order_id, cents)
            properties = {"order_id": order_id, "revenue_cents": sent, "test_id": test_id}
            message_id = f"{test_id}-{order_id}"
            client = rudder if order_id == "o2" else segment
            client.track(user_id=user_id, event="purchase", properties=properties, message_id=message_id)
            if order_id == "o1":  # an at-least-once retry: the very same message again
                client.track(user_id=user_id, event="purchase", properties=properties, message_id=message_id)
        emitter.flush()
        segment.flush()
        rudder.flush()


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[Shop]:
    logging.getLogger("snowplow_tracker").setLevel(logging.WARNING)
    with Shop(tmp_path) as running:
        yield running


def verify(shop: Shop, test_id: str) -> Any:
    return trackcheck.verify(
        shop.plan, params={"test_id": test_id}, interval="200ms", min_interval=MIN_INTERVAL, timeout="15s"
    )


def test_what_three_sdks_sent_is_decoded_deduplicated_and_reconciled(shop: Shop) -> None:
    test_id = f"t{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    shop.send(test_id)
    result = verify(shop, test_id)
    assert result.ok, result.to_dict()
    snowplow, segment, revenue = result.stages
    assert (snowplow.found, segment.found) == (3, 4)  # o1 arrived twice through Segment
    assert [d for d in segment.duplicates] == ["o1"]  # reported, and accepted: the copies are identical
    assert revenue.counts == [] and revenue.status == "passed"
    assert time.monotonic() - started < 15


def test_a_changed_amount_fails_naming_the_order_and_the_revenue_gap(shop: Shop) -> None:
    test_id = f"t{uuid.uuid4().hex[:8]}"
    shop.send(test_id, segment_amounts={"o3": 12500})
    result = verify(shop, test_id)
    assert result.status == "failed"
    segment = result.stage("segment")
    assert segment.status == "failed"
    assert {(m["key"], m["field"], m["expected"], m["actual"]) for m in segment.mismatches} == {
        ("o3", "amount", 120, 125)
    }
    assert result.stage("revenue").status == "skipped"
