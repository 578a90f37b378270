"""The redis source against the real Redis on 127.0.0.1:6379 (database 15, one key prefix per test)."""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from trackcheck.errors import SourceConnectError, SourceQueryError, SourceTimeoutError
from trackcheck.plan.model import StageSpec
from trackcheck.sources.base import FetchRequest, FetchResult
from trackcheck.sources.redis import RedisSource

pytestmark = pytest.mark.integration

REDIS_URL = "redis://127.0.0.1:6379/15"
START_REDIS = (
    'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no '
    "--dir /var/lib/redis --logfile /var/log/redis/ci.log"
)


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        connection.ping()
    except redis.ConnectionError as exc:
        pytest.fail(f"Redis is not reachable at 127.0.0.1:6379 ({exc}); start it with: {START_REDIS}")
    yield connection
    connection.close()


@pytest.fixture
def prefix(client: redis.Redis) -> Iterator[str]:
    """A key prefix of this test only; its keys are deleted afterwards."""
    unique = f"trackcheck-test:{uuid.uuid4().hex}:"
    yield unique
    keys = list(client.scan_iter(match=unique + "*", count=1000))
    if keys:
        client.delete(*keys)


@pytest.fixture
def source() -> Iterator[RedisSource]:
    with RedisSource("cache", RedisSource.options_model.model_validate({"url": REDIS_URL})) as opened:
        yield opened


def make_stage(**redis_spec: Any) -> StageSpec:
    return StageSpec.model_validate(
        {"name": "cache", "source": "cache", "redis": redis_spec, "compare": {"with": "expect"}}
    )


def fetch(source: RedisSource, stage: StageSpec, **request: Any) -> FetchResult:
    request.setdefault("params", {"test_id": "abc"})
    return source.fetch(FetchRequest(plan="p", stage=stage, **request))


def test_stream_entries_are_records_with_their_id(client: redis.Redis, prefix: str, source: RedisSource) -> None:
    key = prefix + "events:abc"
    plain = client.xadd(key, {"test_id": "abc", "event": "purchase", "amount": "25.50", "props": '{"a": 1}'})
    payload = client.xadd(key, {"data": json.dumps({"test_id": "abc", "event": "refund", "amount": 3})})
    not_json = client.xadd(key, {"json": "not json"})
    client.xadd(prefix + "events:def", {"test_id": "def"})

    result = fetch(source, make_stage(kind="stream", key=prefix + "events:{test_id}"))

    assert result.records == [
        # field values stay strings, even those that look like numbers or JSON
        {
            "test_id": "abc",
            "event": "purchase",
            "amount": "25.50",
            "props": '{"a": 1}',
            "_id": plain.decode(),
        },
        # a single data/json/payload field holding a JSON object is the record
        {"test_id": "abc", "event": "refund", "amount": 3, "_id": payload.decode()},
        {"json": "not json", "_id": not_json.decode()},
    ]
    assert result.unparsed == 0


def test_stream_count_reads_the_newest_entries_oldest_first(
    client: redis.Redis, prefix: str, source: RedisSource
) -> None:
    key = prefix + "events:abc"
    for n in range(5):
        client.xadd(key, {"n": str(n)})

    result = fetch(source, make_stage(kind="stream", key=key, count=2))

    assert [r["n"] for r in result.records] == ["3", "4"]
    assert any("newest 2 entries" in note for note in result.notes)


def test_list_elements_are_json_records_and_others_are_counted_unparsed(
    client: redis.Redis, prefix: str, source: RedisSource
) -> None:
    key = prefix + "queue:abc"
    client.rpush(key, json.dumps({"test_id": "abc", "event": "purchase"}), "garbage", "[1, 2]")
    client.rpush(key, json.dumps({"test_id": "abc", "event": "page_view"}))

    result = fetch(source, make_stage(kind="list", key=prefix + "queue:{test_id}"))

    assert result.records == [
        {"test_id": "abc", "event": "purchase"},
        {"test_id": "abc", "event": "page_view"},
    ]
    assert result.unparsed == 2
    assert len(result.notes) == 1
    assert "2 elements are not JSON objects" in result.notes[0] and "garbage" in result.notes[0]


def test_list_count_reads_the_first_elements(client: redis.Redis, prefix: str, source: RedisSource) -> None:
    key = prefix + "queue"
    client.rpush(key, *(json.dumps({"n": n}) for n in range(4)))

    result = fetch(source, make_stage(kind="list", key=key, count=3))

    assert result.records == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert any("first 3 elements" in note for note in result.notes)


def test_hash_of_json_values_is_one_record_per_field(client: redis.Redis, prefix: str, source: RedisSource) -> None:
    key = prefix + "orders:abc"
    client.hset(key, mapping={"o1": json.dumps({"total": 25.5}), "o2": json.dumps({"total": 10})})

    result = fetch(source, make_stage(kind="hash", key=prefix + "orders:{test_id}"))

    assert sorted(result.records, key=lambda r: r["_field"]) == [
        {"total": 25.5, "_field": "o1"},
        {"total": 10, "_field": "o2"},
    ]


def test_hash_of_plain_values_is_one_record(client: redis.Redis, prefix: str, source: RedisSource) -> None:
    client.hset(prefix + "flat", mapping={"test_id": "abc", "event": "purchase", "amount": "25.50"})
    client.hset(prefix + "mixed", mapping={"test_id": "abc", "props": json.dumps({"a": 1})})

    flat = fetch(source, make_stage(kind="hash", key=prefix + "flat"))
    mixed = fetch(source, make_stage(kind="hash", key=prefix + "mixed"))

    assert flat.records == [{"test_id": "abc", "event": "purchase", "amount": "25.50"}]
    assert mixed.records == [{"test_id": "abc", "props": '{"a": 1}'}]
    assert "mixes JSON objects and other values" in mixed.notes[0]


def test_keys_are_scanned_and_read_by_type(client: redis.Redis, prefix: str, source: RedisSource) -> None:
    client.set(prefix + "ev:abc:1", json.dumps({"event": "purchase", "amount": 25.5}))
    client.hset(prefix + "ev:abc:2", mapping={"event": "refund", "amount": "3"})
    client.set(prefix + "ev:abc:3", "not json")
    client.rpush(prefix + "ev:abc:4", "a list")
    client.set(prefix + "ev:def:1", json.dumps({"event": "other run"}))

    result = fetch(source, make_stage(kind="keys", key=prefix + "ev:{test_id}:*", field="redis_key"))

    assert sorted(result.records, key=lambda r: r["redis_key"]) == [
        {"event": "purchase", "amount": 25.5, "redis_key": prefix + "ev:abc:1"},
        {"event": "refund", "amount": "3", "redis_key": prefix + "ev:abc:2"},
    ]
    assert result.unparsed == 2
    assert "2 keys are neither a JSON object nor a hash" in result.notes[0]


def test_glob_characters_in_a_parameter_do_not_widen_the_key_pattern(
    client: redis.Redis, prefix: str, source: RedisSource
) -> None:
    client.set(prefix + "ev:abc:1", json.dumps({"event": "purchase"}))
    stage = make_stage(kind="keys", key=prefix + "ev:{test_id}:*")

    assert fetch(source, stage, params={"test_id": "a*"}).records == []
    assert fetch(source, stage, params={"test_id": "abc"}).records == [{"event": "purchase"}]


def test_where_and_select_apply_to_the_records(client: redis.Redis, prefix: str, source: RedisSource) -> None:
    key = prefix + "queue"
    rows = [{"run": {"id": run}, "props": {"total": total}} for run, total in [("abc", 1), ("def", 2), ("abc", 3)]]
    client.rpush(key, *(json.dumps(row) for row in rows))
    stage = StageSpec.model_validate(
        {
            "name": "cache",
            "source": "cache",
            "redis": {"kind": "list", "key": key},
            "select": {"test_id": "run.id", "total": "props.total"},
            "compare": {"with": "expect"},
        }
    )

    abc = fetch(source, stage, filters={"test_id": ["abc"]})

    assert abc.records == [{"test_id": "abc", "total": 1}, {"test_id": "abc", "total": 3}]


def test_a_missing_key_is_no_records_yet(prefix: str, source: RedisSource) -> None:
    for kind in ("stream", "list", "hash", "keys"):
        result = fetch(source, make_stage(kind=kind, key=prefix + "nothing-here"))
        assert (result.records, result.unparsed) == ([], 0), kind


def test_a_key_of_the_wrong_type_is_a_query_error(client: redis.Redis, prefix: str, source: RedisSource) -> None:
    client.set(prefix + "events:abc", "a string")

    with pytest.raises(SourceQueryError) as caught:
        fetch(source, make_stage(kind="stream", key=prefix + "events:{test_id}"))

    message = str(caught.value)
    assert "WRONGTYPE" in message
    assert "source 'cache'" in message and "stage 'cache'" in message
    assert prefix + "events:abc" in message


def test_an_unreachable_server_is_a_connect_error_without_the_password() -> None:
    options = RedisSource.options_model.model_validate({"url": "redis://user:s3cr3t-pw@127.0.0.1:1/0"})
    with RedisSource("cache", options) as source, pytest.raises(SourceConnectError) as caught:
        fetch(source, make_stage(kind="list", key="x"))

    assert "could not connect" in str(caught.value)
    assert "s3cr3t-pw" not in error_texts(caught.value)


def test_a_server_that_does_not_answer_is_a_timeout_error() -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # connections complete in the backlog, nothing ever answers
    url = f"redis://:s3cr3t-pw@127.0.0.1:{silent.getsockname()[1]}/0"
    options = RedisSource.options_model.model_validate({"url": url, "timeout": "300ms"})
    started = time.monotonic()
    try:
        with RedisSource("cache", options) as source, pytest.raises(SourceTimeoutError) as caught:
            fetch(source, make_stage(kind="list", key="x"))
    finally:
        silent.close()

    assert time.monotonic() - started < 2
    assert "no answer within 0.3s" in str(caught.value)
    assert "s3cr3t-pw" not in error_texts(caught.value)


def test_a_stage_needs_a_redis_block() -> None:
    stage = StageSpec.model_validate({"name": "cache", "source": "cache", "compare": {"with": "expect"}})
    assert "needs 'redis: {kind, key}'" in str(RedisSource.check_stage(stage))
    assert RedisSource.check_stage(make_stage(kind="list", key="x")) is None


def error_texts(error: BaseException) -> str:
    """The text of an error and of every error chained to it (what a traceback would print)."""
    texts = []
    current: BaseException | None = error
    while current is not None:
        texts.append(f"{type(current).__name__}: {current}")
        current = current.__cause__ or current.__context__
    return "\n".join(texts)
