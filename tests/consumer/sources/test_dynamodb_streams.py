"""DynamoDBStreamsSource against moto's server (real HTTP, real boto3 clients)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import boto3
import pytest
from botocore.config import Config

from consumer.aws import Pacer, make_client
from consumer.errors import ConfigError, ThrottledError, TransientError, TrimmedDataError
from consumer.record import RawRecord
from consumer.sources.dynamodb_streams import DynamoDBStreamsSource, table_of_stream_arn
from consumer.sources.position import LATEST, TRIM_HORIZON, StartPosition
from consumer.sources.reader import Batch
from tests.fixtures.aws import REGION
from tests.fixtures.servers import free_port
from tests.support.canned import inject_response, inject_responses
from tests.support.clock import ManualClock
from tests.support.streams import dynamodb_table_with_stream

pytestmark = pytest.mark.integration

VIEW_TYPES = ["KEYS_ONLY", "NEW_IMAGE", "OLD_IMAGE", "NEW_AND_OLD_IMAGES"]


def write_history(dynamodb: Any, table: str) -> None:
    """INSERT a, MODIFY a, INSERT b, REMOVE a, in that order."""
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "a"}, "v": {"N": "1"}})
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "a"}, "v": {"N": "2"}})
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "b"}, "v": {"N": "3"}})
    dynamodb.delete_item(TableName=table, Key={"pk": {"S": "a"}})


def read_all(reader: Any) -> list[RawRecord]:
    """Pages until an empty one (moto's shards never end)."""
    records: list[RawRecord] = []
    while batch := reader.next_batch().records:
        records.extend(batch)
    return records


def source_for(aws_client: Callable[..., Any], arn: str, **options: Any) -> DynamoDBStreamsSource:
    """A source with a fast client-side interval, so tests do not wait on pacing."""
    options.setdefault("min_interval_seconds", 0.01)
    return DynamoDBStreamsSource(aws_client("dynamodbstreams"), stream_arn=arn, **options)


def test_table_name_resolves_to_latest_stream_arn(
    aws_client: Callable[..., Any], unique_name: Callable[[str], str]
) -> None:
    table = unique_name("ddbs")
    arn = dynamodb_table_with_stream(aws_client, table, "NEW_IMAGE")

    source = DynamoDBStreamsSource(
        aws_client("dynamodbstreams"), aws_client("dynamodb"), table_name=table
    )

    assert source.stream_id == arn


def test_missing_table_is_a_config_error_naming_the_setting(
    aws_client: Callable[..., Any], unique_name: Callable[[str], str]
) -> None:
    with pytest.raises(ConfigError, match=r"source\.table.*does not exist"):
        DynamoDBStreamsSource(
            aws_client("dynamodbstreams"), aws_client("dynamodb"), table_name=unique_name("no")
        )


def test_table_without_stream_is_a_config_error_naming_the_setting(
    aws_client: Callable[..., Any], unique_name: Callable[[str], str]
) -> None:
    table = unique_name("nostream")
    aws_client("dynamodb").create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )

    with pytest.raises(ConfigError, match=r"source\.table.*no stream"):
        DynamoDBStreamsSource(
            aws_client("dynamodbstreams"), aws_client("dynamodb"), table_name=table
        )


@pytest.mark.parametrize("view", VIEW_TYPES)
def test_records_of_every_view_type_arrive_in_order(
    view: str, aws_client: Callable[..., Any], unique_name: Callable[[str], str]
) -> None:
    table = unique_name("ddbs")
    arn = dynamodb_table_with_stream(aws_client, table, view)
    write_history(aws_client("dynamodb"), table)
    source = source_for(aws_client, arn)
    (shard,) = source.list_shards()

    records = read_all(source.open_reader(shard.shard_id, TRIM_HORIZON))

    assert [r.payload["eventName"] for r in records] == ["INSERT", "MODIFY", "INSERT", "REMOVE"]
    numbers = [int(r.sequence_number) for r in records]
    assert numbers == sorted(numbers) and len(set(numbers)) == 4
    assert all(r.payload["dynamodb"]["StreamViewType"] == view for r in records)
    assert all(isinstance(r.approximate_arrival, float) for r in records)
    assert all(r.size_bytes > 0 for r in records)
    modify = records[1].payload["dynamodb"]
    assert modify["Keys"] == {"pk": {"S": "a"}}
    assert ("NewImage" in modify) == (view in ("NEW_IMAGE", "NEW_AND_OLD_IMAGES"))
    assert ("OldImage" in modify) == (view in ("OLD_IMAGE", "NEW_AND_OLD_IMAGES"))


def test_after_sequence_number_resumes_exactly_after(
    aws_client: Callable[..., Any], unique_name: Callable[[str], str]
) -> None:
    table = unique_name("ddbs")
    arn = dynamodb_table_with_stream(aws_client, table, "KEYS_ONLY")
    write_history(aws_client("dynamodb"), table)
    source = source_for(aws_client, arn)
    (shard,) = source.list_shards()
    everything = read_all(source.open_reader(shard.shard_id, TRIM_HORIZON))

    resumed = read_all(
        source.open_reader(shard.shard_id, StartPosition.after(everything[1].sequence_number))
    )

    assert [r.sequence_number for r in resumed] == [r.sequence_number for r in everything[2:]]


def test_latest_sees_only_new_records(
    aws_client: Callable[..., Any], unique_name: Callable[[str], str]
) -> None:
    table = unique_name("ddbs")
    arn = dynamodb_table_with_stream(aws_client, table, "KEYS_ONLY")
    dynamodb = aws_client("dynamodb")
    write_history(dynamodb, table)
    source = source_for(aws_client, arn)
    (shard,) = source.list_shards()
    reader = source.open_reader(shard.shard_id, LATEST)

    dynamodb.put_item(TableName=table, Item={"pk": {"S": "new"}})

    assert [r.payload["dynamodb"]["Keys"] for r in read_all(reader)] == [{"pk": {"S": "new"}}]


def _recorded_page(shards: list[dict[str, Any]], last: str | None, arn: str) -> dict[str, Any]:
    description: dict[str, Any] = {"StreamArn": arn, "StreamStatus": "ENABLED", "Shards": shards}
    if last:
        description["LastEvaluatedShardId"] = last
    return {"StreamDescription": description}


def test_list_shards_follows_pages_with_lineage_at_a_bounded_rate(
    aws_client: Callable[..., Any], unique_name: Callable[[str], str]
) -> None:
    """moto ignores Limit and never rolls shards over, so DescribeStream pages are recorded
    responses (see inject_response); the client, its requests and the parsing are real."""
    arn = dynamodb_table_with_stream(aws_client, unique_name("ddbs"), "KEYS_ONLY")
    source = source_for(aws_client, arn, describe_page_size=2, describe_interval_seconds=0.1)
    closed = {"StartingSequenceNumber": "100", "EndingSequenceNumber": "199"}
    a, b, c = (f"shardId-00000001700000000000-0000000{n}" for n in "abc")
    pages = [
        _recorded_page(
            [
                {"ShardId": a, "SequenceNumberRange": closed},
                {"ShardId": b, "ParentShardId": a, "SequenceNumberRange": closed},
            ],
            b,
            arn,
        ),
        _recorded_page(
            [{"ShardId": c, "ParentShardId": b, "SequenceNumberRange": {}}],
            None,
            arn,
        ),
    ]
    client = source._client
    requests = inject_responses(client, "DescribeStream", [(200, page) for page in pages])
    # The source's DescribeStream pacer, on a clock that moves only when it sleeps: the
    # spacing is exact whatever the machine's load.
    clock = ManualClock()
    source._describe_pacer = Pacer(0.1, clock=clock.now, sleep=clock.sleep)
    call_times: list[float] = []
    client.meta.events.register(
        "before-call.dynamodb-streams.DescribeStream",
        lambda **_: call_times.append(clock.now()),
    )

    shards = source.list_shards()

    assert [(s.shard_id, s.parent_shard_ids, s.closed) for s in shards] == [
        (a, (), True),
        (b, (a,), True),
        (c, (b,), False),
    ]
    first, second = requests
    assert first == {"StreamArn": arn, "Limit": 2}
    assert second == {"StreamArn": arn, "Limit": 2, "ExclusiveStartShardId": b}
    assert call_times[1] - call_times[0] == pytest.approx(0.1)


def test_shard_end_when_get_records_returns_no_next_iterator(
    aws_client: Callable[..., Any], unique_name: Callable[[str], str]
) -> None:
    """moto's DynamoDB Streams never closes a shard, so the last page is a recorded response."""
    arn = dynamodb_table_with_stream(aws_client, unique_name("ddbs"), "KEYS_ONLY")
    source = source_for(aws_client, arn)
    (shard,) = source.list_shards()
    reader = source.open_reader(shard.shard_id, TRIM_HORIZON)
    inject_response(source._client, "GetRecords", 200, {"Records": []})

    assert reader.next_batch() == Batch(records=[], shard_end=True)
    assert reader.next_batch().shard_end


def test_expired_iterator_is_renewed_after_the_last_record(
    aws_client: Callable[..., Any], unique_name: Callable[[str], str]
) -> None:
    """The expiry (after 15 minutes) is a recorded error response; the renewal is real."""
    table = unique_name("ddbs")
    arn = dynamodb_table_with_stream(aws_client, table, "KEYS_ONLY")
    dynamodb = aws_client("dynamodb")
    write_history(dynamodb, table)
    source = source_for(aws_client, arn, max_records=2)
    (shard,) = source.list_shards()
    reader = source.open_reader(shard.shard_id, TRIM_HORIZON)
    first = reader.next_batch().records
    expired = {"__type": "ExpiredIteratorException", "message": "Iterator expired"}
    inject_response(source._client, "GetRecords", 400, expired)
    renewals: list[dict[str, Any]] = []
    source._client.meta.events.register(
        "provide-client-params.dynamodb-streams.GetShardIterator",
        lambda params, **_: renewals.append(dict(params)),
    )

    second = reader.next_batch().records

    assert renewals == [
        {
            "StreamArn": arn,
            "ShardId": shard.shard_id,
            "ShardIteratorType": "AFTER_SEQUENCE_NUMBER",
            "SequenceNumber": first[-1].sequence_number,
        }
    ]
    assert [r.payload["eventName"] for r in first + list(second)] == [
        "INSERT",
        "MODIFY",
        "INSERT",
        "REMOVE",
    ]


def test_expired_iterator_before_any_record_renews_at_the_start(
    aws_client: Callable[..., Any], unique_name: Callable[[str], str]
) -> None:
    """The expiry is a recorded error response; the renewal and the records are real."""
    table = unique_name("ddbs")
    arn = dynamodb_table_with_stream(aws_client, table, "KEYS_ONLY")
    write_history(aws_client("dynamodb"), table)
    source = source_for(aws_client, arn)
    (shard,) = source.list_shards()
    reader = source.open_reader(shard.shard_id, TRIM_HORIZON)
    inject_response(
        source._client, "GetRecords", 400, {"__type": "ExpiredIteratorException", "message": "x"}
    )

    assert len(reader.next_batch().records) == 4


@pytest.mark.parametrize(
    ("code", "status", "error"),
    [
        ("TrimmedDataAccessException", 400, TrimmedDataError),
        ("LimitExceededException", 400, ThrottledError),
        ("InternalServerError", 500, TransientError),
    ],
)
def test_service_errors_map_to_typed_errors(
    code: str,
    status: int,
    error: type[Exception],
    moto_endpoint: str,
    aws_client: Callable[..., Any],
    unique_name: Callable[[str], str],
) -> None:
    """The errors are recorded responses: moto cannot trim, throttle or fail on demand."""
    arn = dynamodb_table_with_stream(aws_client, unique_name("ddbs"), "KEYS_ONLY")
    streams = boto3.client(
        "dynamodbstreams",
        region_name=REGION,
        endpoint_url=moto_endpoint,
        config=Config(retries={"mode": "standard", "total_max_attempts": 1}),
    )
    source = DynamoDBStreamsSource(streams, stream_arn=arn)
    (shard,) = source.list_shards()
    reader = source.open_reader(shard.shard_id, TRIM_HORIZON)
    inject_response(streams, "GetRecords", status, {"__type": code, "message": "x"})

    with pytest.raises(error, match=code):
        reader.next_batch()


def test_unreachable_endpoint_is_transient() -> None:
    streams = boto3.client(
        "dynamodbstreams",
        region_name=REGION,
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=2),
    )
    source = DynamoDBStreamsSource(
        streams, stream_arn="arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/x"
    )

    with pytest.raises(TransientError, match="EndpointConnectionError"):
        source.list_shards()
    with pytest.raises(TransientError):
        source.open_reader("shardId-00000001700000000000-00000000", TRIM_HORIZON)


def test_make_client_source_reads_through_moto(
    moto_endpoint: str, aws_client: Callable[..., Any], unique_name: Callable[[str], str]
) -> None:
    table = unique_name("ddbs")
    dynamodb_table_with_stream(aws_client, table, "NEW_IMAGE")
    write_history(aws_client("dynamodb"), table)
    streams = make_client("dynamodbstreams", REGION, moto_endpoint)
    source = DynamoDBStreamsSource(
        streams, make_client("dynamodb", REGION, moto_endpoint), table_name=table
    )

    (shard,) = source.list_shards()

    assert len(read_all(source.open_reader(shard.shard_id, TRIM_HORIZON))) == 4
    assert streams.meta.config.retries["mode"] == "standard"


def test_the_table_of_a_stream_arn_is_named_and_a_foreign_arn_is_a_config_error() -> None:
    arn = "arn:aws:dynamodb:us-east-1:123456789012:table/TripTable/stream/2026-01-01T00:00:00.000"
    assert table_of_stream_arn(arn) == "TripTable"
    with pytest.raises(ConfigError, match=r"source\.stream_arn"):
        table_of_stream_arn("arn:aws:kinesis:us-east-1:123456789012:stream/orders")
