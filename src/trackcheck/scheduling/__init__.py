"""When the engine polls: APScheduler 3 as configuration (scheduler, job store, executor and trigger are chosen,
not hard-wired), the jobs that keep one poll job per waiting group, and the lease that lets one process poll."""

from trackcheck.scheduling.config import SchedulerConfig, build_scheduler
from trackcheck.scheduling.poller import Poller

__all__ = ["Poller", "SchedulerConfig", "build_scheduler"]
