"""The prefetcher against moto's DynamoDB Streams: data lost upstream is reported, not hidden."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from consumer.aws import make_client
from consumer.observability.metrics import Metrics
from consumer.pipeline.paging import PageSizer
from consumer.pipeline.prefetch import FetchedBatch, Prefetcher
from consumer.pipeline.retry import Backoff
from consumer.sources.decode import DynamoDBStreamsDecoder
from consumer.sources.dynamodb_streams import DynamoDBStreamsSource
from consumer.sources.position import TRIM_HORIZON, StartPosition
from tests.support.canned import inject_response
from tests.support.streams import dynamodb_table_with_stream

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("operation", "code"),
    [
        # The checkpoint's records expired while the shard had no reader.
        ("GetRecords", "TrimmedDataAccessException"),
        # The shard itself was deleted with its records, past the retention period.
        ("GetShardIterator", "ResourceNotFoundException"),
    ],
)
def test_data_lost_upstream_is_counted_and_reading_goes_on_from_the_trim_horizon(
    aws_client: Callable[..., Any],
    unique_name: Callable[[str], str],
    moto_endpoint: str,
    operation: str,
    code: str,
) -> None:
    """docs/design.md, invariant 5: a loss the daemon cannot prevent is never silent. The
    errors are canned responses (moto cannot expire records); the shard and reads are real."""
    table = unique_name("trimmed")
    arn = dynamodb_table_with_stream(aws_client, table, "NEW_IMAGE")
    dynamodb = aws_client("dynamodb")
    for n in range(3):
        dynamodb.put_item(TableName=table, Item={"pk": {"S": f"k{n}"}})
    streams = make_client("dynamodbstreams", "us-east-1", moto_endpoint)
    source = DynamoDBStreamsSource(streams, stream_arn=arn)
    (shard,) = source.list_shards()
    first = source.open_reader(shard.shard_id, TRIM_HORIZON).next_batch().records[0]
    inject_response(streams, operation, 400, {"__type": code, "message": "canned: trimmed"})
    metrics = Metrics()
    prefetcher = Prefetcher(
        stream=arn,
        shard_id=shard.shard_id,
        open_reader=lambda start: source.open_reader(shard.shard_id, start),
        # As if checkpointed after the first record: the re-read from TRIM_HORIZON shows in it.
        start=StartPosition.after(first.sequence_number),
        decoder=DynamoDBStreamsDecoder(arn),
        metrics=metrics,
        prefetch_batches=2,
        prefetch_records=1000,
        page_sizer=PageSizer(floor=1000, ceiling=1000),
        idle_backoff_seconds=0.05,
        backoff=Backoff(0.01, 0.05),
    )
    prefetcher.start()
    try:
        batch: FetchedBatch | None = prefetcher.buffer.get(timeout=30)
    finally:
        prefetcher.stop()
        prefetcher.join(10)
    assert batch is not None
    assert [r.keys["pk"] for r in batch.records] == ["k0", "k1", "k2"]
    lost = metrics.registry.get_sample_value(
        "stream_projector_data_lost_total", {"stream": arn, "shard": shard.shard_id}
    )
    assert lost == 1
