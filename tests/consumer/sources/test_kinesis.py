"""KinesisSource against kinesis-local (kinesis-mock: realistic sequence numbers, resharding)."""

from __future__ import annotations

import base64
import itertools
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

from consumer.aws import Pacer, make_client
from consumer.errors import ConfigError, TrimmedDataError
from consumer.record import RawRecord
from consumer.sources.kinesis import KinesisShardReader, KinesisSource
from consumer.sources.position import LATEST, TRIM_HORIZON, StartPosition
from consumer.sources.shard import ShardInfo
from tests.fixtures.aws import REGION
from tests.fixtures.servers import wait_until
from tests.support.canned import inject_response
from tests.support.clock import ManualClock
from tests.support.streams import kinesis_stream, stream_active

pytestmark = pytest.mark.integration


@pytest.fixture
def kinesis(kinesis_local_endpoint: str) -> Any:
    """A client of kinesis-local built the way the daemon builds its clients."""
    return make_client("kinesis", REGION, kinesis_local_endpoint)


def put(kinesis: Any, stream: str, *payloads: str, key: str = "k") -> list[str]:
    """Put records one by one (so their order is known); returns their sequence numbers."""
    return [
        str(
            kinesis.put_record(StreamName=stream, Data=p.encode(), PartitionKey=key)[
                "SequenceNumber"
            ]
        )
        for p in payloads
    ]


def drain(reader: Any) -> list[RawRecord]:
    """Pages until an empty one or the shard's end."""
    records: list[RawRecord] = []
    while True:
        batch = reader.next_batch()
        records.extend(batch.records)
        if not batch.records or batch.shard_end:
            return records


def data(records: list[RawRecord]) -> list[str]:
    """The base64 Data of each record, as the wire carried it."""
    return [r.payload["Data"] for r in records]


def b64(*texts: str) -> list[str]:
    """Base64 of each text, to compare with wire Data."""
    return [base64.b64encode(t.encode()).decode() for t in texts]


def shard_of(source: KinesisSource) -> str:
    """The id of the only shard."""
    (shard,) = source.list_shards()
    return shard.shard_id


def split_first_shard(kinesis: Any, stream: str) -> tuple[str, str]:
    """Split the stream's first shard in the middle of its hash range; returns (parent, key)."""
    shard = kinesis.list_shards(StreamName=stream)["Shards"][0]
    low = int(shard["HashKeyRange"]["StartingHashKey"])
    high = int(shard["HashKeyRange"]["EndingHashKey"])
    kinesis.split_shard(
        StreamName=stream, ShardToSplit=shard["ShardId"], NewStartingHashKey=str((low + high) // 2)
    )
    wait_until(lambda: stream_active(kinesis, stream), timeout=20, what="split")
    return str(shard["ShardId"]), str(low)


def test_list_shards_follows_next_token(kinesis: Any, unique_name: Callable[[str], str]) -> None:
    stream = unique_name("kin")
    kinesis_stream(kinesis, stream, shards=3)
    requests: list[dict[str, Any]] = []
    kinesis.meta.events.register(
        "provide-client-params.kinesis.ListShards", lambda params, **_: requests.append(params)
    )

    shards = KinesisSource(kinesis, stream, list_page_size=1).list_shards()

    assert [s.shard_id for s in shards] == [f"shardId-00000000000{n}" for n in range(3)]
    assert len(requests) >= 3
    assert requests[0] == {"StreamName": stream, "MaxResults": 1}
    assert all("StreamName" not in r and "NextToken" in r for r in requests[1:])


def test_split_and_merge_report_their_parents(
    kinesis: Any, unique_name: Callable[[str], str]
) -> None:
    stream = unique_name("kin")
    kinesis_stream(kinesis, stream, shards=2)
    parent, _ = split_first_shard(kinesis, stream)
    kinesis.merge_shards(
        StreamName=stream,
        ShardToMerge="shardId-000000000003",
        AdjacentShardToMerge="shardId-000000000001",
    )
    wait_until(lambda: stream_active(kinesis, stream), timeout=20, what="merge")

    shards = {s.shard_id: s for s in KinesisSource(kinesis, stream).list_shards()}

    assert shards[parent].closed
    assert shards["shardId-000000000002"].parent_shard_ids == (parent,)
    assert shards["shardId-000000000003"].parent_shard_ids == (parent,)
    assert shards["shardId-000000000004"].parent_shard_ids == (
        "shardId-000000000003",
        "shardId-000000000001",
    )
    assert not shards["shardId-000000000004"].closed


def test_reading_a_split_parent_to_its_end_yields_shard_end_and_children(
    kinesis: Any, unique_name: Callable[[str], str]
) -> None:
    stream = unique_name("kin")
    kinesis_stream(kinesis, stream)
    source = KinesisSource(kinesis, stream, min_interval_seconds=0.01)
    parent = shard_of(source)
    put(kinesis, stream, "before-split-1", "before-split-2")
    split_first_shard(kinesis, stream)
    reader = source.open_reader(parent, TRIM_HORIZON)

    batches = []
    while not (batches and batches[-1].shard_end):
        batches.append(reader.next_batch())

    records = [r for b in batches for r in b.records]
    assert data(records) == b64("before-split-1", "before-split-2")
    assert batches[-1].child_shards == (
        ShardInfo("shardId-000000000001", (parent,)),
        ShardInfo("shardId-000000000002", (parent,)),
    )
    assert all(not b.shard_end for b in batches[:-1])
    assert reader.next_batch().shard_end


def test_positions_at_and_after_sequence_number_and_at_timestamp(
    kinesis: Any, unique_name: Callable[[str], str]
) -> None:
    stream = unique_name("kin")
    kinesis_stream(kinesis, stream)
    source = KinesisSource(kinesis, stream, min_interval_seconds=0.01)
    shard = shard_of(source)
    numbers = put(kinesis, stream, "a", "b", "c", "d")
    everything = drain(source.open_reader(shard, TRIM_HORIZON))
    assert [r.sequence_number for r in everything] == numbers
    # AT_TIMESTAMP is inclusive: start at c's arrival, provided it differs from b's.
    assert everything[2].approximate_arrival > everything[1].approximate_arrival

    after = drain(source.open_reader(shard, StartPosition.after(numbers[1])))
    at = drain(source.open_reader(shard, StartPosition("AT_SEQUENCE_NUMBER", numbers[1])))
    since = drain(
        source.open_reader(
            shard, StartPosition("AT_TIMESTAMP", timestamp=everything[2].approximate_arrival)
        )
    )

    assert data(after) == b64("c", "d")
    assert data(at) == b64("b", "c", "d")
    assert data(since) == b64("c", "d")


def test_latest_sees_only_new_records(kinesis: Any, unique_name: Callable[[str], str]) -> None:
    stream = unique_name("kin")
    kinesis_stream(kinesis, stream)
    source = KinesisSource(kinesis, stream, min_interval_seconds=0.01)
    put(kinesis, stream, "old")
    reader = source.open_reader(shard_of(source), LATEST)

    put(kinesis, stream, "new")

    assert data(drain(reader)) == b64("new")


def test_batches_carry_millis_behind_latest_and_record_sizes(
    kinesis: Any, unique_name: Callable[[str], str]
) -> None:
    stream = unique_name("kin")
    kinesis_stream(kinesis, stream)
    source = KinesisSource(kinesis, stream)
    put(kinesis, stream, "12345", key="pk")

    batch = source.open_reader(shard_of(source), TRIM_HORIZON).next_batch()

    assert isinstance(batch.millis_behind_latest, int)
    (record,) = batch.records
    assert record.size_bytes == len("12345") + len("pk")
    assert isinstance(record.approximate_arrival, float)


def test_get_records_is_spaced_by_the_min_interval(
    kinesis: Any, unique_name: Callable[[str], str]
) -> None:
    """The reader waits on its Pacer before each GetRecords. The Pacer runs on a clock that
    moves only when it sleeps, so the spacing is exact whatever the machine's load (measured
    on the wall clock, scheduling jitter made it flaky)."""
    stream = unique_name("kin")
    kinesis_stream(kinesis, stream)
    source = KinesisSource(kinesis, stream, min_interval_seconds=0.15)
    clock = ManualClock()
    reader = KinesisShardReader(
        kinesis,
        {"StreamName": stream},
        shard_of(source),
        TRIM_HORIZON,
        max_records=100,
        pacer=Pacer(0.15, clock=clock.now, sleep=clock.sleep),
    )
    calls: list[float] = []
    kinesis.meta.events.register(
        "before-call.kinesis.GetRecords", lambda **_: calls.append(clock.now())
    )

    for _ in range(4):
        reader.next_batch()

    gaps = [later - earlier for earlier, later in itertools.pairwise(calls)]
    assert gaps == pytest.approx([0.15, 0.15, 0.15])
    assert clock.sleeps == pytest.approx([0.15, 0.15, 0.15])


def test_a_large_page_spaces_the_next_get_records_by_its_bytes(
    kinesis: Any, unique_name: Callable[[str], str]
) -> None:
    """A shard serves 2 MB/s: after a page of B bytes the next call waits B / that rate."""
    stream = unique_name("kin")
    kinesis_stream(kinesis, stream)
    kinesis.put_records(
        StreamName=stream, Records=[{"Data": b"x" * 999, "PartitionKey": "k"} for _ in range(20)]
    )
    sleeps: list[float] = []
    pacer = Pacer(0.01, clock=lambda: 0.0, sleep=sleeps.append)  # time stands still
    source = KinesisSource(kinesis, stream, read_bytes_per_second=10_000)
    reader = KinesisShardReader(
        kinesis,
        {"StreamName": stream},
        shard_of(source),
        TRIM_HORIZON,
        max_records=100,
        pacer=pacer,
        read_bytes_per_second=10_000,
    )
    assert len(reader.next_batch().records) == 20  # 20 x (999 data + 1 key) = 20,000 bytes
    assert len(reader.next_batch().records) == 0
    reader.next_batch()
    # 2 s for the 20,000 bytes; after the empty page, the call interval again.
    assert sleeps == [pytest.approx(2.0), pytest.approx(0.01)]


def test_expired_iterator_is_renewed_after_the_last_record(
    kinesis: Any, unique_name: Callable[[str], str]
) -> None:
    """The expiry (after 5 minutes) is a recorded error response; the renewal is real."""
    stream = unique_name("kin")
    kinesis_stream(kinesis, stream)
    source = KinesisSource(kinesis, stream, max_records=2, min_interval_seconds=0.01)
    shard = shard_of(source)
    numbers = put(kinesis, stream, "a", "b", "c")
    reader = source.open_reader(shard, TRIM_HORIZON)
    first = reader.next_batch().records
    inject_response(
        kinesis, "GetRecords", 400, {"__type": "ExpiredIteratorException", "message": "expired"}
    )
    renewals: list[dict[str, Any]] = []
    kinesis.meta.events.register(
        "provide-client-params.kinesis.GetShardIterator",
        lambda params, **_: renewals.append(dict(params)),
    )

    second = reader.next_batch().records

    assert data(list(first)) == b64("a", "b")
    assert data(list(second)) == b64("c")
    assert renewals == [
        {
            "StreamName": stream,
            "ShardId": shard,
            "ShardIteratorType": "AFTER_SEQUENCE_NUMBER",
            "StartingSequenceNumber": numbers[1],
        }
    ]


def test_a_shard_that_no_longer_exists(kinesis: Any, unique_name: Callable[[str], str]) -> None:
    stream = unique_name("kin")
    kinesis_stream(kinesis, stream)
    source = KinesisSource(kinesis, stream)
    gone = "shardId-000000000042"

    # Past retention a closed shard is deleted: nothing is left to read from its start...
    assert source.open_reader(gone, TRIM_HORIZON).next_batch().shard_end
    # ...and from a checkpoint, the records after it were lost upstream.
    with pytest.raises(TrimmedDataError):
        source.open_reader(gone, StartPosition.after("49000000000000000000000000000000000"))
    # A missing stream is not an ended shard.
    with pytest.raises(ClientError, match="ResourceNotFoundException"):
        KinesisSource(kinesis, unique_name("missing")).open_reader(gone, TRIM_HORIZON)


def test_a_source_needs_a_stream(kinesis: Any) -> None:
    with pytest.raises(ConfigError, match=r"source\.stream"):
        KinesisSource(kinesis)


def test_make_client_honours_the_service_endpoint_variable(
    kinesis_local_endpoint: str, unique_name: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_KINESIS", kinesis_local_endpoint)
    client = make_client("kinesis", REGION)
    stream = unique_name("kin")

    kinesis_stream(client, stream)

    assert client.meta.endpoint_url == kinesis_local_endpoint
    assert client.meta.config.retries["mode"] == "standard"
