"""The Kafka example end to end: a broker, a stream processor, a loader, and trackcheck following the events.

    python examples/kafka/run.py              # passes: exit 0
    python examples/kafka/run.py --drop e2    # the enricher loses e2: the run fails naming it, exit 1

With ``KAFKA_BOOTSTRAP`` set, the example uses that cluster; otherwise it starts a local Kafka-protocol broker
(``noida-db``, installed by ``make``). The pipeline is the application's, and it runs with consumer groups
of its own (``enricher``, ``loader``): trackcheck reads the topics without joining any group, which the
example shows by printing the groups' committed offsets before and after the verification.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

import trackcheck

PLAN = Path(__file__).with_name("plan.yaml")
LOADER_DELAY = 2.0  # seconds: a warehouse load comes later than the bus
TOPICS = ("tracking.raw", "tracking.enriched")


@contextlib.contextmanager
def local_broker(folder: Path) -> Iterator[str]:
    """A noida-db Kafka broker on a free port for as long as the block runs; its bootstrap address."""
    command = shutil.which("noida-db") or str(Path(sys.executable).with_name("noida-db"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(  # noqa: S603 - the broker of the venv, with arguments of our own
        [command, "start", "--data-dir", str(folder / "kafka"), "--only", "kafka", "--kafka-port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    bootstrap = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                AdminClient({"bootstrap.servers": bootstrap, "log_level": 0}).list_topics(timeout=1)
                break
            except KafkaException:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the local Kafka broker did not start") from None
        yield bootstrap
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGINT)
        process.wait(10)


class Pipeline:
    """The application: an enricher (raw → enriched, adding a country) and a loader (enriched → SQLite)."""

    def __init__(self, bootstrap: str, warehouse: Path, drop: set[str]) -> None:
        self.bootstrap, self.warehouse, self.drop = bootstrap, warehouse, drop
        self.stop = threading.Event()
        admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
        for future in admin.create_topics([NewTopic(t, 1) for t in TOPICS]).values():  # the pipeline's own topics
            with contextlib.suppress(KafkaException):  # already there (a cluster of yours)
                future.result(10)
        with sqlite3.connect(warehouse) as db:
            db.execute("CREATE TABLE events (event_id TEXT, event TEXT, user_id TEXT, amount REAL, test_id TEXT)")
        self.threads = [threading.Thread(target=work, daemon=True) for work in (self.enrich, self.load)]

    def consumer(self, group: str, topic: str) -> Consumer:
        consumer = Consumer(
            {"bootstrap.servers": self.bootstrap, "group.id": group, "auto.offset.reset": "earliest", "log_level": 0}
        )
        consumer.subscribe([topic])
        return consumer

    def enrich(self) -> None:
        consumer = self.consumer("enricher", "tracking.raw")
        producer = Producer({"bootstrap.servers": self.bootstrap, "log_level": 0})
        while not self.stop.is_set():
            message = consumer.poll(0.2)
            if message is None or message.error():
                continue
            event = json.loads(message.value())
            if event["event_id"] not in self.drop:
                producer.produce("tracking.enriched", json.dumps({**event, "geo": {"country": "NL"}}).encode())
                producer.flush(5)
            consumer.commit(message, asynchronous=False)
        consumer.close()

    def load(self) -> None:
        consumer = self.consumer("loader", "tracking.enriched")
        while not self.stop.is_set():
            message = consumer.poll(0.2)
            if message is None or message.error():
                continue
            event = json.loads(message.value())
            time.sleep(LOADER_DELAY)
            with sqlite3.connect(self.warehouse) as db:
                db.execute(
                    "INSERT INTO events VALUES (?, ?, ?, ?, ?)",
                    (event["event_id"], event["event"], event["user_id"], event["amount"], event["test_id"]),
                )
            consumer.commit(message, asynchronous=False)
        consumer.close()

    def committed(self) -> dict[str, int]:
        """The offsets the application's groups committed (partition 0 of each topic)."""
        found = {}
        for group, topic in (("enricher", "tracking.raw"), ("loader", "tracking.enriched")):
            probe = Consumer({"bootstrap.servers": self.bootstrap, "group.id": group, "log_level": 0})
            (partition,) = probe.committed([TopicPartition(topic, 0)], timeout=10)
            found[group] = partition.offset
            probe.close()
        return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--drop", action="append", default=[], help="an event_id the enricher loses")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="trackcheck-kafka-example-") as folder, contextlib.ExitStack() as stack:
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP") or stack.enter_context(local_broker(Path(folder)))
        warehouse = Path(folder) / "warehouse.db"
        os.environ.update(KAFKA_BOOTSTRAP=bootstrap, WAREHOUSE_URL=f"sqlite:///{warehouse}")
        pipeline = Pipeline(bootstrap, warehouse, set(args.drop))
        for thread in pipeline.threads:
            thread.start()
        test_id = f"example-{uuid.uuid4().hex[:8]}"
        print(f"verifying run {test_id} of {PLAN.name} on {bootstrap} (the enricher drops: {args.drop or 'nothing'})")
        result = trackcheck.verify(PLAN, {"test_id": test_id}, timeout="40s")
        offsets = pipeline.committed()
        pipeline.stop.set()
        for thread in pipeline.threads:
            thread.join(10)
        for stage in result.stages:
            print(f"  {stage.name:<10} {stage.status:<8} found {stage.found}/{stage.expected}  {stage.reason or ''}")
        print(f"run {result.status}; offsets the application's groups committed: {offsets} (trackcheck joined none)")
        return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
