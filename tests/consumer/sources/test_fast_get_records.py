"""GetRecords through orjson: wire JSON on success, botocore's own handling on errors."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError

from consumer.aws import make_client
from consumer.sources import fast_get_records
from tests.fixtures.aws import REGION
from tests.support.streams import kinesis_stream

pytestmark = pytest.mark.integration


class _Body:
    """The minimal raw stream AWSResponse reads its content from."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._body


def inject_responses(
    client: Any, operation: str, responses: list[tuple[int, dict[str, Any]]]
) -> list[dict[str, Any]]:
    """FAKE, for faults no emulator produces on demand (an iterator expiring after 5-15 min,
    trimmed data, throttling, a DynamoDB Streams shard that ends or pages): the next calls of
    `operation` get these (status, JSON body) HTTP responses, in order, instead of reaching
    the server. Everything else about a call is real: serialization, botocore's parsers and
    retries. Returns the intercepted request bodies."""
    seen: list[dict[str, Any]] = []
    service_id = client.meta.service_model.service_id.hyphenize()

    def respond(request: Any, **_: Any) -> AWSResponse | None:
        if len(seen) >= len(responses):
            return None
        status, body = responses[len(seen)]
        seen.append(orjson.loads(request.body))
        headers = {"Content-Type": "application/x-amz-json-1.0"}
        return AWSResponse(request.url, status, headers, _Body(orjson.dumps(body)))

    client.meta.events.register_first(f"before-send.{service_id}.{operation}", respond)
    return seen


def inject_response(
    client: Any, operation: str, status: int, body: dict[str, Any]
) -> list[dict[str, Any]]:
    """FAKE: the next call of `operation` gets this response (see inject_responses)."""
    return inject_responses(client, operation, [(status, body)])


def dynamodb_table_with_stream(aws_client: Callable[..., Any], name: str, view: str) -> str:
    """Create a table keyed by pk with a stream of `view`; returns its stream ARN."""
    table = aws_client("dynamodb").create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": view},
    )
    return str(table["TableDescription"]["LatestStreamArn"])


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
    started = time.monotonic()

    # moto answers an unknown iterator with a 500, which botocore retries.
    with pytest.raises(ClientError) as raised:
        streams.get_records(ShardIterator="unknown-iterator" * 4)

    assert raised.value.response["ResponseMetadata"]["RetryAttempts"] > 0
    assert time.monotonic() - started < 30
