"""B6: many runs waiting on one Kafka topic. Reads from the broker do not grow with the number of runs.

The workload: a topic of M messages in four partitions (a noida-db broker started for the benchmark,
``tests/integration/kafka_broker.py``), read by the real confluent-kafka client. Three events of each of N
runs are spread through it at seeded random places; the rest is other traffic. Half of the messages are
in the topic before the runs start, the other half are produced while they wait (so that the stage polls
a topic that grows). N runs (``test_id`` each, 3 expected events compared on ``event`` and ``amount``)
are submitted beforehand, as b1 does, and a child process resumes them in an ``Engine`` with its defaults
(SQLite state, one group, polled every second) until every run passed; ``batch_size`` is N/10 (the default
1,000 at the full size), so a tick makes 10 fetches at N. The same is done with N/10 runs (one fetch per
tick) on a topic of identical content. The child says it is ready after its first tick; the parent then
produces the second half.

Measured in the child: messages fetched from the broker (``KafkaSource.messages_read``), the fetches the
engine made, the seconds spent reading from the broker (the reader's refresh), the wall time until every
run passed, and peak RSS. The proof: the messages read from the broker equal M at N and at N/10 (each
message is read once, whatever the number of runs and fetches), while the number of fetches grows with N.

Run as ``python -m benchmarks.b6_kafka '<json config>'`` it is the child; ``measure`` is the parent side.
"""

from __future__ import annotations

import json
import logging
import math
import random
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks import common

EVENTS = ("page_view", "add_to_cart", "purchase")
PARTITIONS = 4
SEED = 20261203
PLAN = """\
name: bench-b6
key: event_id
params:
  test_id: {required: true}
defaults: {interval: 1s, timeout: 30m, batch_size: BATCH}
sources:
  bus: {type: kafka, bootstrap: "BOOTSTRAP", read_timeout: 30, cache_messages: CACHE}
stages:
  - name: bus
    source: bus
    topic: TOPIC
    from: -1h
    where: {test_id: "{test_id}"}
    compare: {with: expect, fields: [event, amount]}
"""


def test_id(j: int) -> str:
    return f"t{j:06d}"


def run_events(j: int) -> list[dict[str, Any]]:
    return [{"event_id": f"{test_id(j)}-{k}", "event": EVENTS[k], "amount": round(j * 0.37 + k, 2)} for k in range(3)]


def topic_messages(runs: int, messages: int) -> list[bytes]:
    """The topic's content, the same for every side: each run's events at seeded places among other traffic."""
    rng = random.Random(SEED)
    placed = dict(
        zip(rng.sample(range(messages), 3 * runs), ((j, e) for j in range(runs) for e in run_events(j)), strict=True)
    )
    payloads: list[bytes] = []
    for i in range(messages):
        if i in placed:
            j, event = placed[i]
            payloads.append(json.dumps({**event, "test_id": test_id(j)}).encode())
        else:
            other = {"event_id": f"n{i}", "test_id": f"other{i % 5000}", "event": "page_view", "amount": i % 97,
                     "url": f"https://shop.example/p/{i % 1000}"}  # fmt: skip
            payloads.append(json.dumps(other).encode())
    return payloads


# -- the child ----------------------------------------------------------------------------------------------


@dataclass
class ChildConfig:
    n: int
    state_path: str
    deadline: float


def run_child(config: ChildConfig) -> dict[str, Any]:
    """Resume the submitted runs; count fetches, broker reads and the time spent reading the broker."""
    from trackcheck.engine import Engine
    from trackcheck.engine.core import PollSummary
    from trackcheck.scheduling import Poller, SchedulerConfig
    from trackcheck.sources import kafka

    lock = threading.Lock()
    figures = {"fetches": 0, "reads": 0, "read_s": 0.0, "fetch_s": 0.0, "ticks": 0}
    done, first_tick = threading.Event(), threading.Event()
    fetch, refresh = kafka.KafkaSource.fetch, kafka._TopicReader.refresh

    def counted_fetch(source: kafka.KafkaSource, request: Any) -> Any:
        began = time.perf_counter()
        try:
            return fetch(source, request)
        finally:
            with lock:
                figures["fetches"] += 1
                figures["fetch_s"] += time.perf_counter() - began
                figures["reads"] = max(figures["reads"], source.messages_read)

    def timed_refresh(reader: Any, start: int, stage: Any) -> int:
        began = time.perf_counter()
        try:
            return int(refresh(reader, start, stage))
        finally:
            with lock:
                figures["read_s"] += time.perf_counter() - began

    kafka.KafkaSource.fetch = counted_fetch  # type: ignore[method-assign]
    kafka._TopicReader.refresh = timed_refresh  # type: ignore[method-assign]

    class MeasuredEngine(Engine):
        def poll_group(self, group: str, fresh_only: bool = False, claim: Any = None) -> PollSummary:
            summary = super().poll_group(group, fresh_only, claim)
            with lock:
                figures["ticks"] += 1
            first_tick.set()
            if summary.remaining == 0:
                done.set()
            return summary

    poller = Poller(MeasuredEngine(f"sqlite:///{config.state_path}"), SchedulerConfig())
    began = time.time()
    poller.start()
    first_tick.wait(config.deadline)
    common.emit_ready()  # the parent now produces the second half of the topic
    finished = done.wait(config.deadline)
    wall = time.time() - began
    rss = common.peak_rss_mb()
    poller.shutdown()
    return {**figures, "all_done": finished, "wall_s": wall, "peak_rss_mb": rss}


def child_main(raw: str) -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    common.emit_result(run_child(ChildConfig(**json.loads(raw))))


# -- the parent ---------------------------------------------------------------------------------------------


@dataclass
class SideResult:
    n: int
    messages: int
    reads: int  # messages fetched from the broker over the whole run
    fetches: int  # source fetches the engine made (one per 1,000 waiting runs per tick)
    ticks: int
    read_s: float  # seconds spent reading from the broker
    fetch_s: float  # seconds inside fetch: broker reads, decoding, indexing, filtering
    wall_s: float  # from the engine's start until every run passed
    peak_rss_mb: float
    passed: int

    @property
    def read_rate(self) -> float:
        return self.reads / self.read_s if self.read_s > 0 else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "read_rate": self.read_rate}


@dataclass
class B6Result:
    runs: int
    messages: int
    batch: int  # the plan's batch_size: runs per fetch
    sides: list[SideResult]
    produce_rate: float  # messages per second the parent produced (the broker's side of the setup)

    def to_dict(self) -> dict[str, Any]:
        return {"runs": self.runs, "messages": self.messages, "batch": self.batch, "produce_rate": self.produce_rate,
                "sides": [s.to_dict() for s in self.sides]}  # fmt: skip


def _produce(bootstrap: str, topic: str, payloads: list[bytes]) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.num.messages": 10_000,
                         "queue.buffering.max.messages": 2_000_000, "log_level": 0})  # fmt: skip
    for i, payload in enumerate(payloads):
        while True:
            try:
                producer.produce(topic, payload)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 50_000 == 0:
            producer.poll(0)
    if producer.flush(120):
        raise RuntimeError(f"messages to {topic} were not all delivered")


def _submit(state_path: str, plan_text: str, n: int) -> None:
    from trackcheck.engine.core import Engine, RunRequest, store_plan

    engine = Engine(f"sqlite:///{state_path}").start()
    try:
        plan_id, _ = store_plan(engine, plan_text, "bench-b6.yaml", None)
        for first in range(0, n, 1_000):
            batch = [
                RunRequest({"test_id": test_id(j)}, expect=run_events(j)) for j in range(first, min(n, first + 1_000))
            ]
            engine.submit_many(plan_id, batch)
    finally:
        engine.shutdown()


def _passed(state_path: str) -> int:
    from sqlalchemy import create_engine, text

    engine = create_engine(f"sqlite:///{state_path}")
    try:
        with engine.connect() as connection:
            return int(
                connection.execute(text("SELECT count(*) FROM tc_run_stages WHERE status = 'passed'")).scalar_one()
            )
    finally:
        engine.dispose()


def _side(broker: Any, n: int, batch: int, payloads: list[bytes], deadline: float) -> tuple[SideResult, float]:
    """One side: a fresh topic with the workload's content (half now, half while the runs wait)."""
    topic = f"bench-b6-{n}-{int(time.time())}"
    broker.create_topic(topic, partitions=PARTITIONS)
    half = len(payloads) // 2
    began = time.perf_counter()
    _produce(broker.bootstrap, topic, payloads[:half])
    produce_s = time.perf_counter() - began
    cache = max(2 * len(payloads), 1_000_000)
    plan_text = PLAN.replace("BOOTSTRAP", broker.bootstrap).replace("TOPIC", topic).replace("CACHE", str(cache))
    plan_text = plan_text.replace("BATCH", str(batch))
    with tempfile.TemporaryDirectory(prefix="trackcheck-b6-") as folder:
        state_path = str(Path(folder) / "state.db")
        _submit(state_path, plan_text, n)
        child = common.spawn_child("benchmarks.b6_kafka", asdict(ChildConfig(n, state_path, deadline)))
        try:
            child.wait_ready()
            began = time.perf_counter()
            _produce(broker.bootstrap, topic, payloads[half:])
            produce_s += time.perf_counter() - began
            raw = child.result(timeout=deadline + 120)
        finally:
            child.kill()
        passed = _passed(state_path)
    side = SideResult(n, len(payloads), int(raw["reads"]), int(raw["fetches"]), int(raw["ticks"]),
                      round(raw["read_s"], 3), round(raw["fetch_s"], 3), round(raw["wall_s"], 2),
                      round(raw["peak_rss_mb"], 1), passed)  # fmt: skip
    common.log(f"B6 N={n:,}: {side.to_dict()}")
    return side, len(payloads) / produce_s


def measure(runs: int, messages: int, deadline: float = 600.0) -> B6Result:
    """N/10 runs, then N runs, each on its own topic of the same M messages, on one broker."""
    from tests.integration.kafka_broker import KafkaBroker

    payloads = topic_messages(runs, messages)
    batch = max(1, runs // 10)
    sides: list[SideResult] = []
    rates: list[float] = []
    with KafkaBroker() as broker:
        for n in (max(1, runs // 10), runs):
            common.log(f"B6: {n:,} runs on a topic of {messages:,} messages")
            side, rate = _side(broker, n, batch, payloads, deadline)
            sides.append(side)
            rates.append(rate)
    return B6Result(runs, messages, batch, sides, round(common.median(rates)))


def missing(result: B6Result) -> list[str]:
    """Every figure the report needs that is absent or wrong (the only thing --quick asserts)."""
    problems: list[str] = []
    for side in result.sides:
        if side.passed != side.n:
            problems.append(f"B6 N={side.n}: {side.passed} of {side.n} runs passed")
        if side.reads <= 0 or not math.isfinite(side.read_rate):
            problems.append(f"B6 N={side.n}: no messages were read from the broker")
    return problems


def render(result: B6Result) -> str:
    """RESULTS.md's B6 section."""
    small, large = result.sides[0], result.sides[-1]
    equal = small.reads == large.reads == result.messages
    verdict = "**met**" if equal else "**missed**"
    rows = [
        f"| {s.n:,} | {s.messages:,} | {s.fetches:,} | {s.ticks:,} | {s.reads:,} | {s.reads / s.messages:.2f} | "
        f"{s.read_rate:,.0f} | {s.fetch_s:.1f} s | {s.wall_s:.1f} s | {s.peak_rss_mb:.0f} MB | {s.passed:,} |"
        for s in result.sides
    ]
    return "\n".join([
        "## B6: many runs on one Kafka topic",
        "",
        f"{result.messages:,} messages in a topic of {PARTITIONS} partitions on a local noida-db broker, read with",
        "the real confluent-kafka client; each run's 3 events are among them, half of the messages are there",
        "before the runs start and half arrive while they wait. The runs are resumed by an `Engine` with its",
        f"defaults (SQLite state, every 1 s; `batch_size` {result.batch:,}: one fetch per {result.batch:,} waiting",
        "runs per tick) until all passed. *Reads*: messages fetched from the broker (`KafkaSource.messages_read`);",
        "*read rate*: reads per second spent reading the broker; *fetch time*: all fetches together (reads,",
        "decoding once per message, index look-ups). Peak RSS includes the client's receive buffers: noida-db",
        "answers a fetch with everything from the requested offsets (about 130 MB after a 70 MB answer).",
        f"The parent produced {result.produce_rate:,.0f} messages/s.",
        "",
        "| runs | messages | fetches | ticks | reads | reads per message | read rate (msg/s) | fetch time "
        "| all passed after | peak RSS | passed |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"Reads do not grow with runs: {small.reads:,} at N = {small.n:,} and {large.reads:,} at N = {large.n:,} "
        f"for {result.messages:,} messages, while fetches went from {small.fetches:,} to {large.fetches:,}: {verdict}.",
    ])  # fmt: skip


if __name__ == "__main__":
    child_main(sys.argv[1])
