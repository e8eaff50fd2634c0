"""Lanes in the running daemon: order per key on Kinesis and DynamoDB Streams, and a crash.

The crash test kills a worker process while a batch is half applied across its lanes, restarts
it, and compares the guarded read model with what a clean run produces: every key's records,
each once, in stream order (docs/design.md, invariants 1 and 4).
"""

from __future__ import annotations

import random
import signal
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from consumer.config import Settings, load_settings
from consumer.demo.trip_saga import create_trip_table
from consumer.leases.store import DynamoDBLeaseStore
from tests.consumer.pipeline.test_lanes import OrderRecording
from tests.fixtures.servers import wait_until
from tests.support.daemon import (
    FAST_LEASES,
    FAST_POLLING,
    daemon_thread,
    start_worker_process,
    write_config,
)
from tests.support.ordering import HOLD_ENV, applied_order, create_schema
from tests.support.streams import kinesis_stream

pytestmark = pytest.mark.integration


def keyed_numbers(count: int, seed: int) -> list[tuple[int, str]]:
    """(n, key): three hot keys with a third of the records, the rest over 300 keys."""
    rng = random.Random(seed)
    hot = ("hot-a", "hot-b", "hot-c")
    return [
        (n, rng.choice(hot) if rng.random() < 0.33 else f"key-{rng.randrange(300)}")
        for n in range(count)
    ]


def put_keyed(
    kinesis: Any, stream: str, items: list[tuple[int, str]]
) -> tuple[dict[str, list[int]], dict[int, int]]:
    """Put the records in order: per key the numbers in stream order, and each one's sequence."""
    sequence_of: dict[int, int] = {}
    for start in range(0, len(items), 500):
        chunk = items[start : start + 500]
        response = kinesis.put_records(
            StreamName=stream,
            Records=[
                {"Data": orjson.dumps({"key": key, "n": n}), "PartitionKey": key}
                for n, key in chunk
            ],
        )
        assert response.get("FailedRecordCount", 0) == 0
        for (n, _), result in zip(chunk, response["Records"], strict=True):
            sequence_of[n] = int(result["SequenceNumber"])
    key_of = dict(items)
    order: dict[str, list[int]] = defaultdict(list)
    for n in sorted(sequence_of, key=sequence_of.__getitem__):
        order[key_of[n]].append(n)
    return dict(order), sequence_of


def lanes_settings(app: str, source: dict[str, str], page: int, lanes: int) -> Settings:
    polling = {**FAST_POLLING, "max_records": page, "parallelization_factor": lanes}
    return load_settings(None, application=app, source=source, leases=FAST_LEASES, polling=polling)


def run_until_applied(settings: Settings, projection: OrderRecording, count: int) -> None:
    with daemon_thread(settings, projections=[projection]):
        wait_until(lambda: projection.applied == count, timeout=60, what="every record applied")


def test_lanes_keep_order_per_kinesis_partition_key_with_hot_keys(
    kinesis_local_endpoint: str,
    aws_client: Callable[..., Any],
    unique_name: Callable[[str], str],
    kinesis_env: None,
) -> None:
    kinesis = aws_client("kinesis", kinesis_local_endpoint)
    stream = unique_name("lanes")
    kinesis_stream(kinesis, stream)
    expected, _ = put_keyed(kinesis, stream, keyed_numbers(1500, seed=3))
    projection = OrderRecording(together=4, work_seconds=0.0002)
    source = {"kind": "kinesis", "stream_name": stream}
    run_until_applied(lanes_settings(unique_name("app"), source, 100, 4), projection, 1500)
    assert projection.most_active == 4  # the lanes of the first batch ran at the same time
    assert projection.seen == expected


def test_lanes_keep_order_per_item_partition_key_on_dynamodb_streams(
    moto_endpoint: str,
    aws_client: Callable[..., Any],
    unique_name: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    dynamodb = aws_client("dynamodb")
    table = unique_name("events")
    create_trip_table(dynamodb, table)
    # Like an event store: every record is a new item (its own sort key), and the order that
    # matters is per partition key.
    expected: dict[str, list[int]] = defaultdict(list)
    for n, key in keyed_numbers(300, seed=5):
        dynamodb.put_item(
            TableName=table,
            Item={"PK": {"S": key}, "SK": {"S": f"v{n:05d}"}, "n": {"N": str(n)}},
        )
        expected[key].append(n)
    projection = OrderRecording(work_seconds=0.0002)
    source = {"kind": "dynamodb", "table": table}
    run_until_applied(lanes_settings(unique_name("app"), source, 50, 3), projection, 300)
    assert projection.seen == dict(expected)


CRASH_CONFIG = """
application = "{app}"
worker_id = "{worker}"
[source]
kind = "kinesis"
stream_name = "{stream}"
[leases]
failover_seconds = 3
renew_interval_seconds = 0.5
take_interval_seconds = 0.5
[polling]
idle_backoff_seconds = 0.1
min_interval_seconds = 0.05
max_records = 200
parallelization_factor = 4
[postgres]
dsn = "{dsn}"
[http]
host = "127.0.0.1"
port = 0
[[projections]]
name = "lane_order"
class = "tests.support.ordering:GuardedOrderProjection"
"""


def test_a_worker_killed_mid_batch_resumes_and_the_guarded_result_equals_a_clean_run(
    tmp_path: Path,
    moto_endpoint: str,
    kinesis_local_endpoint: str,
    aws_client: Callable[..., Any],
    unique_name: Callable[[str], str],
    pg_dsn: str,
) -> None:
    kinesis = aws_client("kinesis", kinesis_local_endpoint)
    stream, app = unique_name("lanes"), unique_name("app")
    kinesis_stream(kinesis, stream)
    items = keyed_numbers(1000, seed=11)
    # What a clean run leaves: every key's records, each once, in stream order.
    clean, sequence_of = put_keyed(kinesis, stream, items)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        create_schema(conn)
    env = {"AWS_ENDPOINT_URL": moto_endpoint, "AWS_ENDPOINT_URL_KINESIS": kinesis_local_endpoint}
    store = DynamoDBLeaseStore(aws_client("dynamodb"), f"{app}-leases")
    hold_at = 650  # the first worker stops inside the batch holding this record

    def start(worker: str, extra: dict[str, str]) -> Any:
        config = write_config(
            tmp_path / f"{worker}.toml",
            CRASH_CONFIG.format(app=app, worker=worker, stream=stream, dsn=pg_dsn),
        )
        return start_worker_process(config, {**env, **extra}, tmp_path / f"{worker}.log")

    with psycopg.connect(pg_dsn, autocommit=True) as conn:

        def applied() -> set[int]:
            return {n for ns in applied_order(conn).values() for n in ns}

        first = start("w1", {HOLD_ENV: str(hold_at)})
        try:
            # One lane holds before record 650; another lane applies records after it.
            wait_until(
                lambda: max(applied(), default=-1) > hold_at,
                timeout=60,
                what="records after the held one applied by other lanes",
            )
            wait_until(
                lambda: conn.execute("SELECT count(*) FROM lane_holds").fetchone()[0] == 1,
                timeout=60,
                what="the held lane",
            )
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(30)

        # Killed mid-batch: applied past the hold, but the checkpoint is before the batch.
        leases = store.list_leases()
        assert len(leases) == 1
        checkpoint = leases[0].checkpoint
        last = int(checkpoint) if checkpoint.isdigit() else -1  # TRIM_HORIZON: nothing yet
        covered = {n for n, sequence in sequence_of.items() if sequence <= last}
        assert hold_at not in applied() and hold_at not in covered
        assert covered == set(range(len(covered))) and covered <= applied()

        second = start("w2", {})
        try:
            wait_until(lambda: applied() == set(sequence_of), timeout=90, what="every record")
        finally:
            second.send_signal(signal.SIGTERM)
            status = second.wait(30)
        log = (tmp_path / "w2.log").read_text(errors="replace")[-3000:]
        assert status == 0, log
        assert applied_order(conn) == clean
