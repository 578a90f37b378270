"""The public surface is pinned: a name added to or removed from an ``__all__`` is a decision, made here."""

from __future__ import annotations

import importlib

import pytest

PUBLIC = {
    "trackcheck": {
        "ParamError", "Plan", "PlanError", "RunNotFound", "RunResult", "SourceConnectError", "SourceError",
        "SourceQueryError", "SourceTimeoutError", "StageResult", "StoreError", "TrackcheckError", "load_plan",
        "verify",
    },
    "trackcheck.engine": {"Engine", "PollSummary", "RunRequest", "RunResult", "StageResult", "store_plan"},
    "trackcheck.scheduling": {"Poller", "SchedulerConfig", "build_scheduler"},
}  # fmt: skip


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_all_lists_exactly_the_public_names_and_each_resolves(module: str) -> None:
    imported = importlib.import_module(module)
    assert set(imported.__all__) == PUBLIC[module]
    assert sorted(imported.__all__) == list(imported.__all__), "kept sorted, so a change reads as one line"
    for name in imported.__all__:
        assert getattr(imported, name) is not None, f"{module}.{name}"
