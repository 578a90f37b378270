"""The poller: an APScheduler 3 scheduler that polls the engine's stage groups on their triggers.

The engine verifies (submit, poll one group, decide); the poller decides *when*. It keeps one job per group
with waiting runs (``jobs.JobPlanner``), learns of new groups from the engine's group listener (runs
submitted in this process) and from the ``tc:sync`` job (runs submitted by other processes, a restart),
prunes what retention no longer keeps, and holds the capture loop of buses without history while it leads.

    engine = Engine(url, setup=setup)
    with Poller(engine, SchedulerConfig(jobstore="memory")) as poller:   # starts the engine too
        run_id = engine.submit(plan_id, {"test_id": "t1"})

A service runs one Poller per worker process, paused; the one that holds the lease (``lease.py``) leads.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from apscheduler.schedulers.base import STATE_PAUSED, STATE_RUNNING

from trackcheck.engine.core import PollSummary
from trackcheck.scheduling import jobs
from trackcheck.scheduling.config import CONTROL, SchedulerConfig, build_scheduler
from trackcheck.scheduling.distributed import Dispatcher
from trackcheck.store.repository import PruneCounts, Retention, utcnow
from trackcheck.store.ticks import Claim

if TYPE_CHECKING:
    from apscheduler.schedulers.base import BaseScheduler

    from trackcheck.engine.core import Engine

log = logging.getLogger("trackcheck.scheduler")


class Poller:
    """Polls ``engine``'s groups on an APScheduler scheduler built from ``config``. ``start()`` before use,
    ``shutdown()`` after (or ``with``)."""

    def __init__(
        self,
        engine: Engine,
        config: SchedulerConfig | None = None,
        *,
        retention: Retention | None = None,
        resume: bool = True,
        process_init: Callable[[Engine], object] | None = None,
    ) -> None:
        """``resume=False`` polls only the runs submitted through this poller's engine (the CLI's foreground
        run), not every unfinished run of the state database; ``retention``: what the poller prunes (default:
        nothing); ``process_init``: called with the engine of each pool process (executor ``processpool``),
        e.g. to count its queries in the service's metrics."""
        self.engine = engine
        self.config = config or SchedulerConfig()
        self.retention = retention or Retention()
        self.resume = resume
        self.process_init = process_init
        self.scheduler: BaseScheduler | None = None
        self.planner: jobs.JobPlanner | None = None
        #: with ``resume=False``: the groups of this process's runs (the only ones it schedules)
        self.own_groups: set[str] = set()
        #: the lease's epoch this poller polls under while it leads (``resume``: the deployment's poller);
        #: None while it does not lead, or when it does not fence (``resume=False``: its own runs only)
        self.epoch: int | None = None
        #: the epoch as its pool processes see it (executor ``processpool``; 0: not leading)
        self._epoch_cell: jobs.EpochCell | None = None
        #: backend ``procrastinate``: where due polls go instead of this process's executor
        self.dispatcher: Dispatcher | None = None

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self, *, paused: bool = False) -> Poller:
        """Start the engine and the scheduler; ``paused``: only to write jobs (schedules) into the shared job
        store while another process polls; ``lead()`` later makes this one poll."""
        self.engine.start()
        if self.config.backend == "procrastinate":
            self.dispatcher = Dispatcher(self.engine.store.url).open()
        if self.config.executor == "processpool" and self.resume:
            self._epoch_cell = multiprocessing.get_context("spawn").Value("q", 0, lock=False)
        self.scheduler = build_scheduler(
            self.config, self.engine.store.engine, self.engine.setup, self.process_init, self._epoch_cell
        )
        self.planner = jobs.JobPlanner(self.scheduler, self)
        self.engine.group_listeners.append(self._groups_started)
        jobs.bind(self.engine, self)
        if self.config.scheduler == "blocking":
            return self
        self.scheduler.start(paused=paused)
        if not paused:
            self.lead()
        return self

    @property
    def leading(self) -> bool:
        """True while this poller's scheduler runs the poll jobs."""
        if self.scheduler is None or self.scheduler.state != STATE_RUNNING:
            return False
        thread = getattr(self.scheduler, "_thread", None)  # a BackgroundScheduler's loop must be alive too
        return thread is None or thread.is_alive()

    def lead(self) -> None:
        """Become the poller: resume the scheduler and pick up every unfinished run (after a restart too)."""
        assert self.scheduler is not None and self.planner is not None
        if self.resume:
            self._set_epoch(self.engine.store.take_epoch())
        if self.scheduler.state == STATE_PAUSED:
            self.scheduler.resume()
        if self.resume:
            _settle()
            self.planner.start_sync()
            self.planner.start_prune(self.retention)
            self.planner.request_sync(full=True)
        self.engine.capture.start()

    def follow(self) -> None:
        """Stop polling (another process leads now); jobs stay in the shared store for the new leader."""
        self.engine.capture.stop()
        self._set_epoch(None)
        if self.planner is not None:
            self.planner.forget()
        if self.scheduler is not None and self.scheduler.state == STATE_RUNNING:
            self.scheduler.pause()

    def run_forever(self) -> None:
        """Block in a BlockingScheduler (``trackcheck worker``) until interrupted."""
        assert self.scheduler is not None and self.planner is not None
        self._set_epoch(self.engine.store.take_epoch())
        self.planner.start_sync()
        self.planner.start_prune(self.retention)
        self.scheduler.add_job(
            jobs.SYNC_JOB, id="tc:first-sync", replace_existing=True, executor=CONTROL, kwargs={"full": True}
        )
        self.engine.capture.start()
        _settle()
        self.scheduler.start()

    def shutdown(self, wait: bool = True) -> None:
        """Stop the capture loop and the scheduler (``wait``: for the polls in progress), then the engine."""
        self.engine.capture.stop()
        if self.planner is not None:
            self.planner.stop()
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=wait)
        if self._groups_started in self.engine.group_listeners:
            self.engine.group_listeners.remove(self._groups_started)
        jobs.unbind(self.engine)
        if self.dispatcher is not None:
            self.dispatcher.close()
        self.engine.shutdown()

    def __enter__(self) -> Poller:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # -- what the jobs do ------------------------------------------------------------------------------
    def poll(self, group: str, fresh_only: bool = False) -> PollSummary | None:
        """Poll ``group`` under a new claim of this poller's epoch (``store.ticks.Claim``): if another process
        took the lease meanwhile, its writes are refused. A poller that polls for the whole deployment and
        does not lead (any more) polls nothing; one with ``resume=False`` polls unfenced. With a dispatcher
        (backend ``procrastinate``), the poll is queued for the workers under this epoch: None, no summary."""
        if not self.resume:
            return self.engine.poll_group(group, fresh_only)
        epoch = self.epoch
        if epoch is None:
            return PollSummary(group=group, superseded=True)
        if self.dispatcher is not None:
            self.dispatcher.dispatch(group, fresh_only, epoch)
            return None
        return self.engine.poll_group(group, fresh_only, Claim(group, epoch, jobs.next_tick()))

    def _set_epoch(self, epoch: int | None) -> None:
        self.epoch = epoch
        if self._epoch_cell is not None:
            self._epoch_cell.value = epoch or 0

    def sync_groups(self, *, full: bool = False) -> None:
        """Schedule the groups that runs joined since the last sync (``full``: every group with waiting runs,
        dropping the jobs of drained groups)."""
        if self.planner is None:
            return
        self.engine.refresh_connections()
        self.planner.sync(full=full, only=None if self.resume else self.own_groups)

    def prune(self) -> PruneCounts:
        """Delete the polls and ended runs that ``retention`` no longer keeps (the ``tc:prune`` job)."""
        polls_before, runs_before = self.retention.cutoffs(utcnow())
        counts = self.engine.store.prune(polls_before, runs_before)
        if counts.total:
            log.info(
                "retention: deleted %d run(s) with %d stage(s) and %d snapshot(s), and %d poll(s)",
                counts.runs,
                counts.stages,
                counts.snapshots,
                counts.polls,
            )
        return counts

    def polled(self, summary: PollSummary) -> None:
        """A poll of this process's scheduler ended: the groups its runs moved on to are this poller's too."""
        if not self.resume:
            self.own_groups.update(summary.activated)

    def _groups_started(self, groups: Sequence[str]) -> None:
        """The engine's group listener: runs submitted here joined ``groups``; poll them at once if leading
        (otherwise the leader's ``tc:sync`` finds them within seconds)."""
        self.own_groups.update(groups)
        if self.planner is not None and self.leading:
            for group in groups:
                self.planner.request_start(group)


#: the youngest generation's threshold while polling (CPython's default is 700)
GC_FIRST_THRESHOLD = 50_000
_settled = False


def _settle() -> None:
    """Move what start-up allocated (imports, plans, the scheduler) out of the garbage collector's sight, once
    per process that polls every unfinished run (a service, ``trackcheck worker``; not ``verify()``, whose
    process is a test suite's).

    A tick of many runs allocates hundreds of thousands of short-lived containers; with everything loaded at
    start-up in the tracked generations, each collection of the oldest one walked all of it again.
    ``gc.freeze()`` leaves those objects alone, and a higher first threshold makes collections rarer.
    """
    global _settled
    if _settled:
        return
    _settled = True
    gc.collect()
    gc.freeze()
    first, second, third = gc.get_threshold()
    gc.set_threshold(max(first, GC_FIRST_THRESHOLD), second, third)
