"""The fault suite: each scenario against a real ``trackcheck serve``; one summary line per scenario at the end.

Quick sizes by default (``make test``); ``TRACKCHECK_FAULTS=full`` for the full ones (``make test-faults``).
``TRACKCHECK_FAULTS_SEED=N`` replays the random choices (fates, arrival times, kill moments) of a run.
Everything a scenario starts is stopped and removed afterwards, also when it fails; only with
``TRACKCHECK_FAULTS_KEEP=1`` is each scenario's folder (plans, ``serve-*.log``, SQLite files) kept and named.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.faults.harness import MODE, MODES, Feed, Served

_FAULTS_DIR = Path(__file__).parent
_LINES = pytest.StashKey[list[str]]()
_SEED = pytest.StashKey[int]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "faults: a fault scenario against a real trackcheck serve (tests/faults)")
    if MODE not in MODES:
        raise pytest.UsageError(f"TRACKCHECK_FAULTS={MODE!r}: use one of {', '.join(MODES)}")
    config.stash[_LINES] = []
    config.stash[_SEED] = int(os.environ.get("TRACKCHECK_FAULTS_SEED") or random.SystemRandom().randrange(10**6))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Scenarios need the local servers, as integration tests do (``-m 'not integration'`` skips them too)."""
    for item in items:
        if _FAULTS_DIR in item.path.parents:
            item.add_marker(pytest.mark.faults)
            if "serve" in getattr(item, "fixturenames", ()):
                item.add_marker(pytest.mark.integration)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    lines = config.stash.get(_LINES, [])
    if lines:
        seed = config.stash[_SEED]
        terminalreporter.section(f"fault suite ({MODE} sizes, TRACKCHECK_FAULTS_SEED={seed})")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Record a scenario's summary line (printed at the end of the session, and now for ``-s``)."""

    def add(line: str) -> None:
        request.config.stash[_LINES].append(line)
        print(line)

    return add


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> random.Random:
    return random.Random(f"{request.config.stash[_SEED]}:{request.node.nodeid}")


@pytest.fixture
def workdir(request: pytest.FixtureRequest) -> Iterator[Path]:
    """A folder for this scenario's plans, logs and SQLite files, removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="trackcheck-faults-"))
    yield folder
    if os.environ.get("TRACKCHECK_FAULTS_KEEP") == "1":
        request.config.stash[_LINES].append(f"  kept {folder} ({request.node.name})")
    else:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def feed() -> Iterator[Feed]:
    source = Feed().start()
    yield source
    source.close()


@pytest.fixture
def serve(workdir: Path) -> Iterator[Callable[..., Served]]:
    """``serve(db, plans, workers=2)``: a ``trackcheck serve`` (not started); all are stopped afterwards."""
    started: list[Served] = []

    def make(db: str, plans: Path, workers: int = 2) -> Served:
        served = Served(workdir, db, plans, workers)
        started.append(served)
        return served

    yield make
    for served in started:
        served.kill()
        served.stop()
