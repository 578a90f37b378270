"""Fencing: a poll that is no longer the newest claim on its group writes nothing, on every state database.

Two pollers of one deployment run here as two engines on one state database. The first starts a poll under
its claim; while it reads its source (a query listener: the moment a frozen process would be stopped), the
second takes over (a newer epoch of the lease, or a newer tick of the group) and polls the same runs to the
end. When the first goes on, its writes are refused. What a user would otherwise see: a second ``passed``
poll of the same run, a run passed twice, its stage's counts written over by an older read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.settings import FAST_SETUP
from trackcheck.engine import Engine, store_plan
from trackcheck.engine.core import QueryFacts, RunRequest
from trackcheck.store.ticks import Claim
from trackcheck.testing import MemorySource

PLAN = """
name: fenced
key: event_id
params:
  test_id: {required: true}
defaults: {interval: 58s, timeout: 30m}
sources:
  log: {type: memory, table: log}
expect:
  - {event_id: e1, event: view}
stages:
  - name: log
    source: log
    where: {test_id: "{test_id}"}
    compare: {with: expect, fields: [event]}
"""
RUNS = 12


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state.db'}"
    else:
        yield request.getfixturevalue({"postgresql": "postgres_url", "mariadb": "mariadb_url"}[request.param])


@pytest.fixture
def pollers(state_url: str) -> Iterator[tuple[Engine, Engine]]:
    MemorySource.reset()
    with Engine(state_url, setup=FAST_SETUP) as first, Engine(state_url, setup=FAST_SETUP) as second:
        yield first, second
    MemorySource.reset()


def submitted(engine: Engine) -> tuple[list[str], str]:
    """RUNS runs whose events are all there (each poll passes them): their ids and their group."""
    plan_id = store_plan(engine, PLAN, "fenced.yaml", None)[0]
    ids = [f"t{i:02d}" for i in range(RUNS)]
    MemorySource.tables["log"].extend({"event_id": "e1", "event": "view", "test_id": t} for t in ids)
    runs = engine.submit_many(plan_id, [RunRequest({"test_id": t}) for t in ids])
    [group] = engine.store.active_groups()
    return runs, group.group_key


def once(action: Callable[[], object]) -> Callable[[QueryFacts], None]:
    """A query listener that runs ``action`` at the first source query only."""
    done: list[object] = []

    def listener(_facts: QueryFacts) -> None:
        if not done:
            done.append(action())

    return listener


def polls_per_run(engine: Engine, runs: list[str]) -> dict[str, list[str]]:
    return {run_id: [poll.outcome for poll in engine.store.polls(run_id)] for run_id in runs}


def test_a_poll_of_a_leader_replaced_while_it_read_writes_nothing(pollers: tuple[Engine, Engine]) -> None:
    first, second = pollers
    runs, group = submitted(first)
    old = first.store.take_epoch()

    def take_over() -> object:
        new = second.store.take_epoch()
        assert new > old
        return second.poll_group(group, claim=Claim(group, new, tick=1))

    first.query_listeners.append(once(take_over))
    summary = first.poll_group(group, claim=Claim(group, old, tick=1))

    assert summary.superseded and summary.polled == 0
    assert polls_per_run(first, runs) == {run_id: ["passed"] for run_id in runs}, "one poll per run: the new one"
    assert all(first.result(run_id).status == "passed" for run_id in runs)
    # the former leader's next ticks do not even start
    later = first.poll_group(group, claim=Claim(group, old, tick=2))
    assert later.superseded and later.polled == 0


def test_a_newer_tick_of_the_group_supersedes_the_poll_in_progress(pollers: tuple[Engine, Engine]) -> None:
    first, second = pollers
    runs, group = submitted(first)
    epoch = first.store.take_epoch()
    first.query_listeners.append(once(lambda: second.poll_group(group, claim=Claim(group, epoch, tick=2))))

    summary = first.poll_group(group, claim=Claim(group, epoch, tick=1))

    assert summary.superseded
    assert polls_per_run(first, runs) == {run_id: ["passed"] for run_id in runs}


def test_a_retried_job_outranks_its_stalled_first_attempt(pollers: tuple[Engine, Engine]) -> None:
    """The same tick again with a higher attempt (a job retried after its worker stalled) takes the group;
    the stalled attempt, woken afterwards, writes nothing; a repeat of an attempt already claimed is refused."""
    first, second = pollers
    runs, group = submitted(first)
    epoch = first.store.take_epoch()
    first.query_listeners.append(once(lambda: second.poll_group(group, claim=Claim(group, epoch, tick=5, attempt=1))))

    assert first.poll_group(group, claim=Claim(group, epoch, tick=5, attempt=0)).superseded
    assert polls_per_run(first, runs) == {run_id: ["passed"] for run_id in runs}
    assert not first.store.claim(Claim(group, epoch, tick=5, attempt=1)), "the same claim twice"
    assert not first.store.claim(Claim(group, epoch, tick=4, attempt=9)), "an older tick"
    assert first.store.claim(Claim(group, epoch, tick=6))


def test_a_claim_needs_the_current_epoch(pollers: tuple[Engine, Engine]) -> None:
    first, _ = pollers
    _, group = submitted(first)
    assert not first.store.claim(Claim(group, 1, tick=1)), "nobody took the lease yet: no epoch is current"
    one = first.store.take_epoch()
    two = first.store.take_epoch()
    assert two == one + 1
    assert not first.store.claim(Claim(group, one, tick=10**15)), "a former epoch, however late its tick"
    assert first.store.claim(Claim(group, two, tick=1))


def test_polls_without_a_claim_are_not_fenced(pollers: tuple[Engine, Engine]) -> None:
    """The CLI's foreground run and ``verify()`` poll their own runs without the lease: nothing is claimed."""
    first, _ = pollers
    runs, group = submitted(first)
    first.store.take_epoch()
    assert first.poll_group(group).polled == RUNS
    assert polls_per_run(first, runs) == {run_id: ["passed"] for run_id in runs}
