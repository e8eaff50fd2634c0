"""The one table of AWS error codes (consumer/aws_errors.py), through every caller that uses it.

moto's server cannot throttle or fail with a 5xx on demand, so those errors are canned HTTP
responses (FAKE, tests/support/canned.py) to real boto3 clients pointed at moto: botocore
parses them exactly as it parses AWS's. They come with status 400 so that the code alone
decides (any 5xx is transient whatever its code, tested once below). What moto's server does
produce on demand (a missing table, a refused connection) is real.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from consumer import aws_errors
from consumer.errors import ThrottledError, TransientError
from consumer.leases.store import DynamoDBLeaseStore
from consumer.pipeline.classify import classify
from consumer.record import ChangeRecord, position_of
from consumer.sources.dynamodb_streams import DynamoDBStreamsSource
from consumer.sources.position import TRIM_HORIZON
from projections.idempotency import IdempotencyStore
from projections.image_fetch import ImageFetcher
from projections.sinks.dynamodb import DynamoDBSink, GuardedUpdate
from tests.fixtures.aws import REGION
from tests.fixtures.servers import free_port
from tests.support.canned import inject_error
from tests.support.streams import dynamodb_table_with_stream

pytestmark = pytest.mark.integration

# The contract, written out rather than read from the table: a code dropped from the table
# fails its tests here instead of silently losing them.
THROTTLING = [
    "KMSThrottlingException",
    "LimitExceededException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "SlowDown",
    "ThrottledException",
    "Throttling",
    "ThrottlingException",
    "TooManyRequestsException",
]
SERVER_SIDE = ["InternalError", "InternalFailure", "InternalServerError", "ServiceUnavailable"]
CONFLICTS = ["TransactionConflictException", "TransactionInProgressException"]
TRANSIENT = [
    *((code, ThrottledError) for code in THROTTLING),
    *((code, TransientError) for code in SERVER_SIDE + CONFLICTS),
]
NOT_RETRIED = {"total_max_attempts": 1, "mode": "standard"}


def test_the_table_holds_exactly_the_tested_codes() -> None:
    assert set(THROTTLING) == aws_errors.THROTTLING_CODES
    assert set(THROTTLING + SERVER_SIDE + CONFLICTS) == aws_errors.TRANSIENT_CODES


def client(service: str, endpoint: str) -> Any:
    """A real client without botocore's retries, so each canned error is seen once."""
    config = Config(retries=NOT_RETRIED, connect_timeout=1, read_timeout=5)
    return boto3.client(service, region_name=REGION, endpoint_url=endpoint, config=config)


def keys_only_record(table: str) -> ChangeRecord:
    return ChangeRecord(
        source="dynamodb",
        stream="s",
        shard_id="shardId-1",
        sequence_number="100",
        event_name="MODIFY",
        keys={"pk": "a"},
        new_image=None,
        old_image=None,
        approximate_creation_time=1.0,
        table=table,
        view_type="KEYS_ONLY",
    )


@dataclass(frozen=True)
class Caller:
    """A module that calls AWS and classifies what fails, with the operation it calls."""

    name: str
    service: str
    operation: str
    call: Callable[[Any, str], object]

    def __str__(self) -> str:
        return self.name


def read_stream(streams: Any, stream_arn: str) -> object:
    source = DynamoDBStreamsSource(streams, stream_arn=stream_arn)
    (shard,) = source.list_shards()
    return source.open_reader(shard.shard_id, TRIM_HORIZON).next_batch()


def sink_write(client: Any, table: str) -> None:
    """One sink write; its failure, which the sink reports as the record's outcome, raised."""
    record, update = keys_only_record(table), GuardedUpdate({"pk": "a"}, "g", position_of("1"))
    results = DynamoDBSink(client, table, max_workers=1).write([(record, update)])
    for error in results.errors_for([record], "sink"):
        raise error


TABLE_CALLERS = [
    Caller("lease table", "dynamodb", "GetItem", lambda c, t: DynamoDBLeaseStore(c, t).get("k")),
    Caller(
        "dynamodb sink",
        "dynamodb",
        "UpdateItem",
        lambda c, t: sink_write(c, t),
    ),
    Caller("idempotency", "dynamodb", "PutItem", lambda c, t: IdempotencyStore(c, t).claim("k")),
    Caller(
        "image fetch",
        "dynamodb",
        "BatchGetItem",
        lambda c, t: ImageFetcher(c, t).fetch([keys_only_record(t)]),
    ),
]
CALLERS = [*TABLE_CALLERS, Caller("stream reader", "dynamodbstreams", "GetRecords", read_stream)]


@pytest.fixture(scope="module")
def stream_arn(moto_endpoint: str) -> str:
    """One table with a stream for every reader test (its shard is real, GetRecords canned)."""
    dynamodb = client("dynamodb", moto_endpoint)
    return dynamodb_table_with_stream(
        lambda _: dynamodb, f"errors-{uuid.uuid4().hex[:8]}", "KEYS_ONLY"
    )


def call_with_canned_error(
    caller: Caller, moto_endpoint: str, stream_arn: str, code: str, status: int
) -> BaseException:
    aws = client(caller.service, moto_endpoint)
    inject_error(aws, caller.operation, code, status)
    with pytest.raises(Exception) as raised:
        caller.call(aws, stream_arn if caller.service == "dynamodbstreams" else "some-table")
    return raised.value


@pytest.mark.parametrize(("code", "error"), TRANSIENT)
def test_each_transient_code_is_transient_to_the_pipeline(
    moto_endpoint: str, code: str, error: type[Exception]
) -> None:
    """A projection's own boto3 call failing with the code is waited out, not dead-lettered."""
    dynamodb = client("dynamodb", moto_endpoint)
    inject_error(dynamodb, "GetItem", code)
    with pytest.raises(ClientError) as raised:
        dynamodb.get_item(TableName="some-table", Key={"pk": {"S": "a"}})
    assert aws_errors.error_code(raised.value) == code
    assert classify(raised.value) == "transient"
    assert type(aws_errors.transient_error(raised.value, "GetItem")) is error


@pytest.mark.parametrize("caller", CALLERS, ids=str)
@pytest.mark.parametrize(("code", "error"), TRANSIENT)
def test_each_transient_code_is_transient_in_every_caller(
    moto_endpoint: str, stream_arn: str, caller: Caller, code: str, error: type[Exception]
) -> None:
    raised = call_with_canned_error(caller, moto_endpoint, stream_arn, code, 400)
    assert type(raised) is error and code in str(raised)
    assert isinstance(raised.__cause__, ClientError)


@pytest.mark.parametrize("caller", CALLERS, ids=str)
def test_any_5xx_is_transient_and_a_validation_error_is_not(
    moto_endpoint: str, stream_arn: str, caller: Caller
) -> None:
    unknown = call_with_canned_error(caller, moto_endpoint, stream_arn, "NewKindOfOutage", 503)
    assert type(unknown) is TransientError and "NewKindOfOutage" in str(unknown)
    invalid = call_with_canned_error(caller, moto_endpoint, stream_arn, "ValidationException", 400)
    assert not isinstance(invalid, TransientError)
    assert classify(invalid) == "poison"


@pytest.mark.parametrize("caller", TABLE_CALLERS, ids=str)
def test_a_missing_table_is_an_outage_of_a_sink_but_not_of_the_lease_table(
    moto_endpoint: str, caller: Caller
) -> None:
    """Real: moto's server answers ResourceNotFoundException for a table that does not exist.

    A sink's table missing stalls the shard until `migrate` runs; the lease table missing is
    the operator's to fix (the worker's loop reports it in /readyz and keeps trying).
    """
    aws = client("dynamodb", moto_endpoint)
    with pytest.raises(Exception) as raised:
        caller.call(aws, f"missing-{uuid.uuid4().hex[:8]}")
    if caller.name == "lease table":
        assert isinstance(raised.value, ClientError)
        assert aws_errors.error_code(raised.value) == aws_errors.RESOURCE_NOT_FOUND
    else:
        assert type(raised.value) is TransientError
        assert aws_errors.RESOURCE_NOT_FOUND in str(raised.value)


@pytest.mark.parametrize("caller", CALLERS, ids=str)
def test_a_refused_connection_is_transient_in_every_caller(caller: Caller) -> None:
    """Real: nothing listens on the port."""
    aws = client(caller.service, f"http://127.0.0.1:{free_port()}")
    stream_arn = "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/x"
    with pytest.raises(TransientError, match="EndpointConnectionError"):
        caller.call(aws, stream_arn if caller.service == "dynamodbstreams" else "some-table")
