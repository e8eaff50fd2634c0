"""The real Prometheus server scrapes the daemon during an end-to-end run on kinesis-local."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from consumer.config import load_settings
from tests.fixtures.servers import wait_until
from tests.support.daemon import FAST_LEASES, FAST_POLLING, daemon_thread, wait_caught_up
from tests.support.recording import create_recording_table, recorded

SHARDS = 3
RECORDS = 90


def test_prometheus_sees_every_shard_lag_then_zero_and_every_record_applied(
    aws_client: Callable[..., Any],
    kinesis_local_endpoint: str,
    unique_name: Callable[[str], str],
    prometheus: Callable[..., Any],
    kinesis_env: None,
) -> None:
    kinesis = aws_client("kinesis", kinesis_local_endpoint)
    dynamodb = aws_client("dynamodb")
    stream, table = unique_name("metrics"), unique_name("recorded")
    kinesis.create_stream(StreamName=stream, ShardCount=SHARDS)
    kinesis.get_waiter("stream_exists").wait(
        StreamName=stream, WaiterConfig={"Delay": 0.2, "MaxAttempts": 100}
    )
    create_recording_table(dynamodb, table)
    entries = [
        {"Data": orjson.dumps({"key": f"k{n}", "n": n}), "PartitionKey": f"pk{n}"}
        for n in range(RECORDS)
    ]
    kinesis.put_records(StreamName=stream, Records=entries)
    shard_ids = {s["ShardId"] for s in kinesis.list_shards(StreamName=stream)["Shards"]}
    settings = load_settings(
        None,
        application=unique_name("app"),
        source={"kind": "kinesis", "stream_name": stream},
        leases=FAST_LEASES,
        polling=FAST_POLLING,
        http={"host": "127.0.0.1", "port": 0},
        projections=[
            {
                "name": "recording",
                "class": "tests.support.recording:RecordingProjection",
                "settings": {"table": table},
            }
        ],
    )
    with daemon_thread(settings, serve_http=True) as daemon:
        wait_until(lambda: daemon.health is not None and daemon.health.port, what="http")
        assert daemon.health is not None
        server = prometheus([f"127.0.0.1:{daemon.health.port}"])
        wait_until(server.targets_up, timeout=30, what="target up")
        wait_caught_up(daemon)

        def ages() -> dict[str, float]:
            return {
                s.labels["shard"]: s.value
                for s in server.query(f'stream_projector_iterator_age_seconds{{stream="{stream}"}}')
            }

        wait_until(lambda: set(ages()) == shard_ids, timeout=30, what="a series per shard")
        wait_until(lambda: all(v == 0 for v in ages().values()), timeout=30, what="ages at 0")
        # The records were written before the daemon started: some scrape saw them lag.
        peak = server.query(
            f'max_over_time(stream_projector_iterator_age_seconds{{stream="{stream}"}}[5m])'
        )
        assert {s.labels["shard"] for s in peak} == shard_ids

        def applied() -> float:
            found = server.query(
                'sum(stream_projector_records_total{projection="recording",outcome="applied"})'
            )
            return found[0].value if found else -1

        wait_until(lambda: applied() == RECORDS, timeout=30, what="applied == written")
    assert len(recorded(dynamodb, table)) == RECORDS
