"""GetRecords through orjson: wire JSON on success, botocore's own handling on errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

from consumer.aws import make_client
from consumer.sources import fast_get_records
from tests.fixtures.aws import REGION
from tests.support.canned import inject_response
from tests.support.streams import dynamodb_table_with_stream, kinesis_stream

pytestmark = pytest.mark.integration


def first_iterator(client: Any, **stream: str) -> str:
    """A TRIM_HORIZON iterator on the stream's first shard (DynamoDB Streams or Kinesis)."""
    if "StreamArn" in stream:
        shard = client.describe_stream(**stream)["StreamDescription"]["Shards"][0]
    else:
        shard = client.list_shards(**stream)["Shards"][0]
    return str(
        client.get_shard_iterator(
            **stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
    )


def test_dynamodb_streams_records_are_wire_json(
    aws_client: Callable[..., Any], unique_name: Callable[[str], str]
) -> None:
    table = unique_name("fast")
    arn = dynamodb_table_with_stream(aws_client, table, "NEW_AND_OLD_IMAGES")
    aws_client("dynamodb").put_item(TableName=table, Item={"pk": {"S": "a"}, "n": {"N": "1.50"}})
    streams = aws_client("dynamodbstreams")
    fast_get_records.install(streams)

    page = streams.get_records(ShardIterator=first_iterator(streams, StreamArn=arn))

    (record,) = page["Records"]
    change = record["dynamodb"]
    # botocore's parser would have made a datetime; the wire has epoch seconds.
    assert isinstance(change["ApproximateCreationDateTime"], int | float)
    assert change["NewImage"] == {"pk": {"S": "a"}, "n": {"N": "1.50"}}
    assert isinstance(page["NextShardIterator"], str)
    assert page["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_kinesis_records_keep_base64_data(
    kinesis_local_endpoint: str, unique_name: Callable[[str], str]
) -> None:
    kinesis = make_client("kinesis", REGION, kinesis_local_endpoint)
    name = unique_name("fast")
    kinesis_stream(kinesis, name)
    kinesis.put_record(StreamName=name, Data=b"\x00hello", PartitionKey="p")
    fast_get_records.install(kinesis)
    fast_get_records.install(kinesis)  # idempotent: one handler, not two

    page = kinesis.get_records(ShardIterator=first_iterator(kinesis, StreamName=name))

    (record,) = page["Records"]
    assert record["Data"] == "AGhlbGxv"  # base64 of b"\x00hello": not decoded to bytes
    assert isinstance(record["ApproximateArrivalTimestamp"], int | float)
    assert record["PartitionKey"] == "p"
    assert isinstance(page["MillisBehindLatest"], int)
    assert isinstance(page["NextShardIterator"], str)


def test_kinesis_error_response_still_raises_client_error(
    kinesis_local_endpoint: str, unique_name: Callable[[str], str]
) -> None:
    kinesis = make_client("kinesis", REGION, kinesis_local_endpoint)
    name = unique_name("fast")
    kinesis_stream(kinesis, name)
    iterator = first_iterator(kinesis, StreamName=name)
    fast_get_records.install(kinesis)
    kinesis.delete_stream(StreamName=name)

    with pytest.raises(ClientError) as raised:
        kinesis.get_records(ShardIterator=iterator)

    assert raised.value.response["Error"]["Code"] == "ResourceInUseException"


def test_expired_iterator_error_keeps_its_code(
    aws_client: Callable[..., Any], unique_name: Callable[[str], str]
) -> None:
    arn = dynamodb_table_with_stream(aws_client, unique_name("fast"), "KEYS_ONLY")
    streams = aws_client("dynamodbstreams")
    iterator = first_iterator(streams, StreamArn=arn)
    fast_get_records.install(streams)
    inject_response(
        streams,
        "GetRecords",
        400,
        {"__type": "com.amazonaws.dynamodb.v20120810#ExpiredIteratorException", "message": "x"},
    )

    with pytest.raises(ClientError) as raised:
        streams.get_records(ShardIterator=iterator)

    assert raised.value.response["Error"]["Code"] == "ExpiredIteratorException"


def test_server_errors_are_still_retried_by_botocore(aws_client: Callable[..., Any]) -> None:
    streams = aws_client("dynamodbstreams")
    fast_get_records.install(streams)
    # moto answers an unknown iterator with a 500, which botocore retries.
    with pytest.raises(ClientError) as raised:
        streams.get_records(ShardIterator="unknown-iterator" * 4)

    assert raised.value.response["ResponseMetadata"]["RetryAttempts"] > 0
