"""APScheduler 3 as configuration: scheduler, job store, executor and trigger are chosen, not hard-wired."""

from trackcheck.scheduling.config import SchedulerConfig, build_scheduler

__all__ = ["SchedulerConfig", "build_scheduler"]
