"""``trackcheck serve``: gunicorn (a production WSGI server) with N worker processes.

The master migrates the state database and loads the plans folder once, then forks; each worker builds its
app and ``Service`` after the fork (no preloading: schedulers, threads and connections must not cross a
fork). Exactly one worker polls, by the lease in ``trackcheck.scheduling.lease``.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication

from trackcheck.engine.core import Engine
from trackcheck.service.config import ServiceConfig, state_database_url
from trackcheck.service.runtime import load_plan_folder, warn_if_open

log = logging.getLogger("trackcheck.service")


def prepare(config: ServiceConfig) -> list[str]:
    """Migrate the state database and store the plans folder's plans; returns the plan names loaded."""
    url = state_database_url(config.db, config.db_password_file)
    engine = Engine(url, setup=config.plan_setup()).start()
    try:
        return load_plan_folder(engine, config.plans)
    finally:
        engine.shutdown()


def _worker_exit(_server: Any, worker: Any) -> None:
    """Give the lease back and stop the scheduler cleanly when gunicorn stops a worker."""
    app = getattr(worker, "wsgi", None)
    service = getattr(app, "extensions", {}).get("trackcheck") if app is not None else None
    if service is not None:
        service.stop()


class TrackcheckServer(BaseApplication):
    def __init__(self, config: ServiceConfig) -> None:
        self.service_config = config
        super().__init__()

    def load_config(self) -> None:
        settings = {
            "bind": f"{self.service_config.host}:{self.service_config.port}",
            "workers": self.service_config.workers,
            "worker_class": "gthread",
            "threads": 8,
            "timeout": 60,
            "graceful_timeout": 10,
            "preload_app": False,
            "worker_exit": _worker_exit,
            "proc_name": "trackcheck",
        }
        if self.service_config.log_format == "json":
            settings.update(json_logging(logging.getLogger().getEffectiveLevel()))
        for key, value in settings.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from trackcheck.service.app import create_app

        return create_app(self.service_config, load_plans=False)


#: an access line: client, method and path (no query string: it is not trackcheck's to vouch for), status,
#: bytes, milliseconds
ACCESS_FORMAT = '%(h)s "%(m)s %(U)s" %(s)s %(b)s %(M)sms'


def json_logging(level: int) -> dict[str, Any]:
    """gunicorn settings for ``log_format = "json"``: its error log (start, workers booting and dying) and an
    access log through trackcheck's JSON formatter onto stderr, with everything else at ``level`` (the root
    logger's), so that stderr holds JSON lines only. Access lines, INFO, appear from -v on; in text the
    service keeps gunicorn's own error lines and no access log."""
    return {
        "access_log_format": ACCESS_FORMAT,
        "logconfig_dict": {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"json": {"()": "trackcheck.logs.JsonLines"}},
            "handlers": {
                "stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"},
            },
            "root": {"level": logging.getLevelName(level), "handlers": ["stderr"]},
            "loggers": {
                "gunicorn.error": {"level": "INFO", "handlers": [], "propagate": True},
                "gunicorn.access": {
                    "level": logging.getLevelName(max(level, logging.INFO)),
                    "handlers": [],
                    "propagate": True,
                },
            },
        },
    }


def serve(config: ServiceConfig) -> None:
    """Run until stopped (SIGINT/SIGTERM)."""
    config.check()
    warn_if_open(config)
    _metrics_folder()
    prepare(config)
    TrackcheckServer(config).run()


def _metrics_folder() -> None:
    """Prometheus multiprocess mode: the poller's counters must be visible from whichever worker answers a
    scrape, so every process writes its samples into one folder (a fresh one, or the given one emptied)."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        for stale in Path(folder).glob("*.db"):
            stale.unlink()
    else:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="trackcheck-metrics-")
