"""trackcheck from pytest: drive the pipeline, then verify its events arrived, complete and unchanged.

.venv/bin/pytest examples/pytest                   # the passing test
.venv/bin/pytest examples/pytest -m demo_failure   # the failing one: its output is trackcheck's diff
"""

from __future__ import annotations

from pathlib import Path

import pytest
import shop

PLAN = Path(__file__).parent / "checkout.yaml"
EVENTS = [
    {"event_id": "e1", "event": "add_to_cart", "amount": 0},
    {"event_id": "e2", "event": "purchase", "amount": 25.5},
    {"event_id": "e3", "event": "refund", "amount": 25.5},
]


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The pipeline writes into the test's own folder; the plan finds it through ${SHOP_DATA_DIR}."""
    monkeypatch.setenv("SHOP_DATA_DIR", str(tmp_path))
    return tmp_path


def test_checkout_events_reach_the_warehouse(trackcheck, tmp_path: Path) -> None:
    shop.track(tmp_path, "t1", EVENTS)
    shop.load(tmp_path)

    result = trackcheck.verify(PLAN, params={"test_id": "t1"}, expect=EVENTS)

    assert result.stage("warehouse").found == 3


@pytest.mark.demo_failure
def test_a_lossy_loader_is_caught(trackcheck, tmp_path: Path) -> None:
    shop.track(tmp_path, "t2", EVENTS)
    shop.load(tmp_path, lossy=True)

    trackcheck.verify(PLAN, params={"test_id": "t2"}, expect=EVENTS)
