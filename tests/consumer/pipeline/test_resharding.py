"""Kinesis split and merge while the daemon runs (kinesis-local): parents before children."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

import orjson

from consumer.config import load_settings
from tests.fixtures.servers import wait_until
from tests.support.daemon import FAST_LEASES, FAST_POLLING, daemon_thread, wait_caught_up
from tests.support.recording import create_recording_table, recorded
from tests.support.streams import stream_active


def wait_active(kinesis: Any, stream: str) -> None:
    wait_until(lambda: stream_active(kinesis, stream), timeout=30, what="stream ACTIVE")


def open_shards(kinesis: Any, stream: str) -> list[dict[str, Any]]:
    shards = kinesis.list_shards(StreamName=stream)["Shards"]
    return [s for s in shards if "EndingSequenceNumber" not in s["SequenceNumberRange"]]


def put(kinesis: Any, stream: str, numbers: range) -> set[str]:
    for n in numbers:
        data = orjson.dumps({"key": f"k{n}", "n": n})
        kinesis.put_record(StreamName=stream, Data=data, PartitionKey=f"pk{n}")
    return {f"k{n}" for n in numbers}


def test_split_and_merge_during_a_run_process_everything_parents_first(
    aws_client: Callable[..., Any],
    kinesis_local_endpoint: str,
    unique_name: Callable[[str], str],
    kinesis_env: None,
) -> None:
    kinesis = aws_client("kinesis", kinesis_local_endpoint)
    dynamodb = aws_client("dynamodb")
    stream, table = unique_name("reshard"), unique_name("recorded")
    kinesis.create_stream(StreamName=stream, ShardCount=1)
    wait_active(kinesis, stream)
    create_recording_table(dynamodb, table)
    settings = load_settings(
        None,
        application=unique_name("app"),
        source={"kind": "kinesis", "stream_name": stream},
        leases=FAST_LEASES,
        # Small pages: the parent takes several batches, so a child started too early would
        # interleave with it and the ordering check below would catch it.
        polling={**FAST_POLLING, "max_records": 10},
        projections=[
            {
                "name": "recording",
                "class": "tests.support.recording:RecordingProjection",
                "settings": {"table": table},
            }
        ],
    )
    # A backlog on the parent, then a split with more records on the children, all before
    # the daemon starts: it must drain the parent before it reads either child.
    keys = put(kinesis, stream, range(0, 60))
    parent = open_shards(kinesis, stream)[0]
    low, high = (int(parent["HashKeyRange"][k]) for k in ("StartingHashKey", "EndingHashKey"))
    kinesis.split_shard(
        StreamName=stream,
        ShardToSplit=parent["ShardId"],
        NewStartingHashKey=str((low + high) // 2),
    )
    wait_active(kinesis, stream)
    keys |= put(kinesis, stream, range(60, 160))
    with daemon_thread(settings) as daemon:
        left, right = sorted(
            open_shards(kinesis, stream), key=lambda s: int(s["HashKeyRange"]["StartingHashKey"])
        )
        kinesis.merge_shards(
            StreamName=stream,
            ShardToMerge=left["ShardId"],
            AdjacentShardToMerge=right["ShardId"],
        )
        wait_active(kinesis, stream)
        keys |= put(kinesis, stream, range(160, 240))
        wait_until(
            lambda: keys <= {i["record_key"] for i in recorded(dynamodb, table)},
            timeout=90,
            what="every record applied",
        )
        wait_caught_up(daemon)

    items = recorded(dynamodb, table)
    assert {i["record_key"] for i in items} == keys
    times: dict[str, list[int]] = defaultdict(list)
    for item in items:
        times[item["shard_id"]].append(int(item["applied_ns"]))
    lineage = {s["ShardId"]: s for s in kinesis.list_shards(StreamName=stream)["Shards"]}
    children = 0
    for shard_id, shard in lineage.items():
        parents = [shard.get("ParentShardId"), shard.get("AdjacentParentShardId")]
        for parent_id in filter(None, parents):
            if times[shard_id] and times[parent_id]:
                children += 1
                assert min(times[shard_id]) > max(times[parent_id]), (parent_id, shard_id)
    assert children == 4  # split: 2 children of 1 parent; merge: 1 child of 2 parents
