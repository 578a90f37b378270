"""A Kafka-protocol broker for tests and benchmarks: ``noida-db`` (installed in the venv by ``make test``).

There is no Kafka server on this machine. ``noida-db start --data-dir DIR --only kafka --kafka-port N`` runs
one in the foreground (a Python launcher that starts the binary). What it does, as found with the real
confluent-kafka client:

- It answers metadata requests about 0.1-0.2 s after it starts; it stops at once on SIGINT (Ctrl-C), while
  SIGTERM takes about 2 s. Its binary prints a harmless GLIBC "weak version" warning on start.
- Produce, fetch, ``offsets_for_times`` (ListOffsets by time, and -1/-2 for the end and start of a
  partition, in one request for all partitions) and the partition EOF event behave as Kafka's. Message
  timestamps are the producer's (CreateTime), explicit ones included.
- A produce to a missing topic creates it with one partition; a metadata request that does not ask for
  creation (a consumer's, by default) does not. The admin API creates topics with partitions and deletes them.
- Consumer groups: joins, commits, ``committed()``, ``list_consumer_groups`` and
  ``list_consumer_group_offsets`` work, so an application's group can be observed. A consumer that only
  ``assign()``s and never commits leaves no group behind.
- It ignores the client's fetch size limits (``fetch.max.bytes``): a fetch answer holds everything from the
  requested offsets, and one over 100 MB fails in the client (``receive.message.max.bytes``) and is retried
  for ever. Keep what a single read must catch up on below about 600,000 small messages. The client's
  buffers for such answers stay allocated while the consumer lives (about 130 MB after a 70 MB answer).
- SASL PLAIN is accepted with any credentials (a wrong password cannot be tested against it); SCRAM is not
  spoken at all, and the client reports that as an authentication failure (the tests' "credentials refused").
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

from confluent_kafka.admin import AdminClient, NewTopic

from tests.ports import free_port

#: how long the broker may take to answer its first metadata request
START_TIMEOUT = 20.0


def _group_ended(process: subprocess.Popen[bytes], seconds: float) -> bool:
    """Whether every process of ``process``'s group (its session) exited within ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        process.poll()  # reap the launcher
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.02)
    return False


def _interruptible() -> None:
    """In the broker's process before it starts: SIGINT back to its default, since a shell running the tests
    in the background starts them with SIGINT ignored, and children inherit that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def noida_command() -> str:
    """The ``noida-db`` console script of this interpreter's environment (the venv's), else on PATH."""
    beside = Path(sys.executable).with_name("noida-db")
    found = str(beside) if beside.exists() else shutil.which("noida-db")
    if not found:
        raise RuntimeError("noida-db is not installed: pip install -e '.[dev]' (make test does)")
    return found


class KafkaBroker:
    """One ``noida-db`` Kafka broker on a free port, in a temporary data folder; ``with`` starts and stops it.

    The server runs in a session of its own, so ``stop`` ends the launcher and the binary it starts (and
    nothing else) through that session's process group.
    """

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self._folder = tempfile.TemporaryDirectory(prefix="trackcheck-kafka-")
        self.data_dir = Path(self._folder.name) / "data"
        self.log_path = Path(self._folder.name) / "broker.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._admin: AdminClient | None = None
        self.started_in = 0.0

    def start(self) -> KafkaBroker:
        began = time.monotonic()
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                [noida_command(), "start", "--data-dir", str(self.data_dir), "--only", "kafka",
                 "--kafka-port", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                preexec_fn=_interruptible,
            )  # fmt: skip
        try:
            self._wait_ready(began + START_TIMEOUT)
        except BaseException:
            self.stop()
            raise
        self.started_in = time.monotonic() - began
        return self

    def _wait_ready(self, deadline: float) -> None:
        assert self._process is not None
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"noida-db exited with {self._process.returncode}: {self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    pass
                self.admin().list_topics(timeout=2)
                return
            except OSError:
                time.sleep(0.05)
            except Exception:  # the admin client's "not yet" (a KafkaException)
                time.sleep(0.05)
        raise RuntimeError(f"noida-db did not answer on port {self.port} within {START_TIMEOUT:g}s: {self.log()}")

    def stop(self) -> None:
        """End the broker's session (the launcher and the binary it started), wait until every process of it
        is gone (the binary writes its data on the way out), then remove the data folder."""
        self._admin = None
        process, self._process = self._process, None
        if process is not None:
            # SIGINT first (instant); SIGTERM (about 2 s), then SIGKILL, if a step does not end the session
            for sent, grace in ((signal.SIGINT, 3.0), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGCONT)  # a frozen broker cannot act on a signal
                    os.killpg(process.pid, sent)
                if _group_ended(process, grace):
                    break
        self._folder.cleanup()

    def freeze(self) -> None:
        """Stop the broker's processes where they are (SIGSTOP): connections stay open, nothing answers."""
        assert self._process is not None
        os.killpg(self._process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self._process is not None
        os.killpg(self._process.pid, signal.SIGCONT)

    def log(self) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return " | ".join(line for line in text.splitlines() if "GLIBC" not in line)[-800:]

    def admin(self) -> AdminClient:
        """One admin client for the broker's life (a client dropped while a request is under way fails it)."""
        if self._admin is None:
            self._admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})
        return self._admin

    def create_topic(self, name: str, partitions: int = 1) -> None:
        futures = self.admin().create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
        futures[name].result(10)

    def __enter__(self) -> KafkaBroker:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
