"""bench/kinesis_replay.py serves a stream that the daemon's Kinesis source reads to the end."""

from __future__ import annotations

import base64
from collections.abc import Callable

import boto3
import orjson
import pytest
from botocore.exceptions import ClientError

from bench import kinesis_replay
from bench.kinesis_postgres_bench import REGION, create_stream, make_events, put_events
from consumer.sources.kinesis import KinesisSource
from consumer.sources.position import TRIM_HORIZON, StartPosition

pytestmark = pytest.mark.integration


def test_the_source_reads_every_record_in_order_and_resumes_after_a_sequence_number(
    replay_url: str, unique_name: Callable[[str], str]
) -> None:
    client = boto3.client("kinesis", region_name=REGION, endpoint_url=replay_url)
    stream = unique_name("replay")
    create_stream(client, stream, 3)
    events = make_events(250, 40)
    put_events(client, stream, events)
    source = KinesisSource(client, stream_name=stream, max_records=30)
    shards = source.list_shards()
    assert len(shards) == 3

    shard_of: dict[str, set[str]] = {}
    versions: dict[str, list[int]] = {}
    for shard in shards:
        reader = source.open_reader(shard.shard_id, TRIM_HORIZON)
        while batch := reader.next_batch():
            if not batch.records:
                assert batch.millis_behind_latest == 0  # the tip: an empty page
                break
            assert len(batch.records) <= 30
            for record in batch.records:
                event = orjson.loads(base64.b64decode(record.payload["Data"]))
                assert record.payload["PartitionKey"] == event["id"]
                shard_of.setdefault(event["id"], set()).add(shard.shard_id)
                versions.setdefault(event["id"], []).append(event["version"])
    # Every event once, each key in one shard (MD5 of the partition key), in order there.
    assert sum(len(v) for v in versions.values()) == 250
    assert all(len(where) == 1 for where in shard_of.values())
    assert set().union(*shard_of.values()) == {s.shard_id for s in shards}
    assert all(v == list(range(1, len(v) + 1)) for v in versions.values())

    shard_id = shards[0].shard_id
    first = source.open_reader(shard_id, TRIM_HORIZON).next_batch(limit=5).records
    after = source.open_reader(shard_id, StartPosition.after(first[2].sequence_number))
    assert [r.sequence_number for r in after.next_batch(limit=2).records] == [
        r.sequence_number for r in first[3:5]
    ]
    assert kinesis_replay.stats(replay_url)["records_served"] >= 250


def test_an_action_it_does_not_serve_is_a_clear_error(replay_url: str) -> None:
    client = boto3.client("kinesis", region_name=REGION, endpoint_url=replay_url)
    with pytest.raises(ClientError) as raised:
        client.list_streams()
    assert raised.value.response["Error"]["Code"] == "UnknownOperationException"
    assert "ListStreams" in raised.value.response["Error"]["Message"]
