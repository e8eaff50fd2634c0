"""Outages are waited out, never dead-lettered (docs/design.md, invariant 5): PostgreSQL stopped for
20 s mid-run, and the dead-letter queue unreachable while a poison record waits."""

from __future__ import annotations

import base64
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from psycopg_pool import ConnectionPool

from consumer.config import load_settings
from consumer.leases.store import DynamoDBLeaseStore
from consumer.record import ChangeRecord
from consumer.runtimes.daemon import Daemon
from consumer.sources.attribute_values import to_image
from projections.scenarios.shop import ShopProjection
from tests.fixtures.aws import CREDENTIALS
from tests.fixtures.postgres import create_database, drop_database
from tests.fixtures.servers import ServerProcess, free_port, wait_until
from tests.projections.scenarios.shop.scenario import EventStore, dump, records, shop_scenario
from tests.support.daemon import FAST_LEASES, FAST_POLLING, daemon_thread
from tests.support.recording import RecordingProjection, create_recording_table, recorded
from tests.support.streams import kinesis_stream

OUTAGE_SECONDS = 20
FAST_RETRY = {"base_seconds": 0.05, "cap_seconds": 1.0}


def put(kinesis: Any, stream: str, items: list[tuple[bytes, str]]) -> list[str]:
    """PutRecords (data, partition key); the sequence numbers, in order."""
    response = kinesis.put_records(
        StreamName=stream, Records=[{"Data": d, "PartitionKey": pk} for d, pk in items]
    )
    assert response["FailedRecordCount"] == 0
    return [r["SequenceNumber"] for r in response["Records"]]


def integration_json(record: ChangeRecord) -> bytes:
    """What the DynamoDB->Kinesis integration writes for an event-store INSERT."""
    assert record.new_image is not None and record.approximate_creation_time is not None
    return orjson.dumps(
        {
            "eventID": record.event_id,
            "eventName": "INSERT",
            "tableName": "events",
            "recordFormat": "application/json",
            "eventSource": "aws:dynamodb",
            "dynamodb": {
                "ApproximateCreationDateTime": int(record.approximate_creation_time * 1000),
                "Keys": to_image(record.keys),
                "NewImage": to_image(record.new_image),
                "SizeBytes": 200,
            },
        }
    )


def checkpoint_of(store: DynamoDBLeaseStore, daemon: Daemon) -> str | None:
    shards = daemon.worker.running_shards()
    lease = store.get(shards[0]) if shards else None
    return lease.checkpoint if lease is not None else None


def sample(daemon: Daemon, name: str, labels: dict[str, str]) -> float:
    return daemon.metrics.registry.get_sample_value(name, labels) or 0.0


def shop_events() -> EventStore:
    """The seed's shop flows plus stock movements of 40 more products."""
    store = shop_scenario()
    for n in range(40):
        store.append(f"inventory-x{n}", "StockAdded", product_id=f"x{n}", quantity=10 + n)
        store.append(
            f"inventory-x{n}", "StockReserved", product_id=f"x{n}", order_id="o", quantity=n
        )
    return store


@pytest.fixture
def clean_dsn(postgres_server: Any) -> Iterator[str]:
    """A second database for the clean run to compare with."""
    name = f"clean_{uuid.uuid4().hex[:12]}"
    create_database(postgres_server.dsn, name)
    yield postgres_server.dsn_for(name)
    drop_database(postgres_server.dsn, name)


@pytest.mark.usefixtures("kinesis_env")
def test_postgres_down_for_20_s_mid_run_loses_nothing_and_dead_letters_nothing(
    aws_client: Callable[..., Any],
    kinesis_local_endpoint: str,
    unique_name: Callable[[str], str],
    postgres_server: Any,
    pg_dsn: str,
    clean_dsn: str,
) -> None:
    events = records(shop_events().events)
    payloads = [(integration_json(r), str(r.partition_key)) for r in events]
    third = len(payloads) // 3
    kinesis, sqs, dynamodb = (
        aws_client("kinesis", kinesis_local_endpoint),
        aws_client("sqs"),
        aws_client("dynamodb"),
    )
    name = unique_name("pg-outage")
    kinesis_stream(kinesis, name)
    queue_url = sqs.create_queue(QueueName=name)["QueueUrl"]
    settings = load_settings(
        None,
        application=name,
        source={"kind": "kinesis", "stream_name": name},
        leases=FAST_LEASES,
        polling=FAST_POLLING,
        retry=FAST_RETRY,
        dead_letter={"queue_url": queue_url},
    )
    store = DynamoDBLeaseStore(dynamodb, settings.lease_table)
    with ConnectionPool(pg_dsn, min_size=1, max_size=4, open=True) as pool:
        shop = ShopProjection("shop", pool, pool_timeout=2.0)
        shop.migrate()
        with daemon_thread(settings, projections=[shop]) as daemon:
            first = put(kinesis, name, payloads[:third])
            wait_until(lambda: checkpoint_of(store, daemon) == first[-1], what="first third")

            postgres_server.stop()
            try:
                down_since = time.monotonic()
                during = put(kinesis, name, payloads[third : 2 * third])
                stalled = {"state": "stalled"}
                wait_until(
                    lambda: sample(daemon, "stream_projector_shards", stalled) == 1,
                    what="the shard shown as stalled",
                )
                # The outage lasts 20 s: all along, nothing moves and nothing is dead-lettered.
                while time.monotonic() - down_since < OUTAGE_SECONDS:
                    assert checkpoint_of(store, daemon) == first[-1]
                    assert (
                        sample(
                            daemon,
                            "stream_projector_dead_letters_total",
                            {"reason": "projection_error"},
                        )
                        == 0
                    )
                    time.sleep(0.5)  # observing for the outage's length, not synchronizing
            finally:
                postgres_server.start()
            transient = sample(daemon, "stream_projector_retries_total", {"kind": "transient"})
            assert transient >= 3
            last = put(kinesis, name, payloads[2 * third :])
            assert int(last[-1]) > int(during[-1])
            wait_until(
                lambda: checkpoint_of(store, daemon) == last[-1], timeout=60, what="caught up"
            )
        with pool.connection() as conn:
            after_outage = dump(conn)

    assert sqs.receive_message(QueueUrl=queue_url).get("Messages", []) == []
    with ConnectionPool(clean_dsn, min_size=1, max_size=2, open=True) as clean_pool:
        clean = ShopProjection("shop", clean_pool)
        clean.migrate()
        clean.apply(events)
        with clean_pool.connection() as conn:
            assert after_outage == dump(conn)
    assert sum(len(rows) for rows in after_outage.values()) > 90


@pytest.fixture
def sqs_server(server_logs: Path) -> Iterator[Callable[[], tuple[str, Callable[[], None]]]]:
    """A second moto server, for SQS only, that a test can stop and start on the same port."""
    port = free_port()
    running: list[ServerProcess] = []

    def start() -> tuple[str, Callable[[], None]]:
        server = ServerProcess(
            f"moto-sqs-{port}-{len(running)}",
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            CREDENTIALS,
            server_logs,
        )
        running.append(server)
        server.wait_for_port(port)
        return f"http://127.0.0.1:{port}", server.stop

    yield start
    for server in running:
        server.stop()


@pytest.mark.usefixtures("kinesis_env")
def test_sqs_unreachable_holds_the_checkpoint_before_the_poison_record_until_it_is_back(
    aws_client: Callable[..., Any],
    kinesis_local_endpoint: str,
    unique_name: Callable[[str], str],
    sqs_server: Callable[[], tuple[str, Callable[[], None]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sqs_url, stop_sqs = sqs_server()
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", sqs_url)
    kinesis, dynamodb = aws_client("kinesis", kinesis_local_endpoint), aws_client("dynamodb")
    name, table = unique_name("sqs-outage"), unique_name("recorded")
    kinesis_stream(kinesis, name)
    create_recording_table(dynamodb, table)
    queue_url = aws_client("sqs", sqs_url).create_queue(QueueName=name)["QueueUrl"]
    settings = load_settings(
        None,
        application=name,
        source={"kind": "kinesis", "stream_name": name},
        leases=FAST_LEASES,
        polling=FAST_POLLING,
        retry=FAST_RETRY,
        dead_letter={"queue_url": queue_url},
    )
    store = DynamoDBLeaseStore(dynamodb, settings.lease_table)

    def record(n: int, marker: str = "") -> tuple[bytes, str]:
        return orjson.dumps({"key": f"k{n}", "n": n, "marker": marker}), "one"

    projection = RecordingProjection("recording", dynamodb, table, fail_on="poison")
    with daemon_thread(settings, projections=[projection]) as daemon:
        before = put(kinesis, name, [record(n) for n in range(5)])
        wait_until(lambda: checkpoint_of(store, daemon) == before[-1], what="first records")

        stop_sqs()
        poison_and_after = put(
            kinesis, name, [record(5, "poison")] + [record(n) for n in range(6, 10)]
        )
        transient = {"kind": "transient"}
        wait_until(
            lambda: sample(daemon, "stream_projector_retries_total", transient) >= 2,
            timeout=60,
            what="failed dead-letter sends",
        )
        assert sample(daemon, "stream_projector_shards", {"state": "stalled"}) == 1
        assert checkpoint_of(store, daemon) == before[-1]

        sqs_url, stop_sqs = sqs_server()  # back on the same port, its queue recreated empty
        sqs = aws_client("sqs", sqs_url)
        assert sqs.create_queue(QueueName=name)["QueueUrl"] == queue_url
        wait_until(
            lambda: checkpoint_of(store, daemon) == poison_and_after[-1],
            timeout=60,
            what="checkpoint past the poison record once SQS is back",
        )
        (message,) = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)["Messages"]
        envelope = orjson.loads(message["Body"])
        assert envelope["sequence_number"] == poison_and_after[0]
        assert orjson.loads(base64.b64decode(envelope["record"]["Data"]))["n"] == 5

        after = put(kinesis, name, [record(10)])
        wait_until(lambda: checkpoint_of(store, daemon) == after[-1], what="processing goes on")
    keys = {item["record_key"] for item in recorded(dynamodb, table)}
    assert keys == {f"k{n}" for n in range(11)} - {"k5"}
