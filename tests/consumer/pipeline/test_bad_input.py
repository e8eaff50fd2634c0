"""Bad input on a real stream (kinesis-local) with moto's SQS and S3: each kind of malformed
record is dead-lettered whole with a clear reason, and the daemon keeps running."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import boto3
import orjson
import pytest
from aws_kinesis_agg.aggregator import RecordAggregator

from consumer.config import load_settings
from consumer.leases.store import DynamoDBLeaseStore
from consumer.record import ChangeRecord
from consumer.runtimes.daemon import Daemon
from projections.projection import BaseProjection
from projections.results import Outcome, Results
from tests.fixtures.aws import REGION
from tests.fixtures.servers import wait_until
from tests.support.daemon import FAST_LEASES, FAST_POLLING, daemon_thread
from tests.support.streams import kinesis_stream

FAST_RETRY = {"base_seconds": 0.01, "cap_seconds": 0.5}


def change(event_name: str = "INSERT", **dynamodb: Any) -> dict[str, Any]:
    """A DynamoDB change record as the Kinesis integration writes it."""
    body = {"Keys": {"id": {"S": "x"}}, "NewImage": {"id": {"S": "x"}}, **dynamodb}
    return {
        "eventID": uuid.uuid4().hex,
        "eventName": event_name,
        "tableName": "Items",
        "recordFormat": "application/json",
        "eventSource": "aws:dynamodb",
        "dynamodb": {k: v for k, v in body.items() if v is not None},
    }


def good(key: str) -> bytes:
    return orjson.dumps(change(Keys={"id": {"S": key}}, NewImage={"id": {"S": key}}))


def kpl_with_bad_checksum() -> bytes:
    aggregator = RecordAggregator()
    aggregator.add_user_record("pk", good("in-kpl"))
    data = bytearray(aggregator.clear_and_get().get_contents()[2])
    data[-1] ^= 0xFF
    return bytes(data)


OVERSIZED = "o" * 450_000  # under Kinesis' 1 MiB, over DynamoDB's 400 KB item limit

# name -> (the record's bytes, expected reason, text the error message must contain)
BAD_INPUT: dict[str, tuple[bytes, str, str]] = {
    "malformed_json": (b'{"eventName": "INSERT", "dynamodb": {', "decode_error", "not valid JSON"),
    "invalid_base64": (
        orjson.dumps(change(NewImage={"id": {"S": "x"}, "blob": {"B": "@@not-base64@@"}})),
        "decode_error",
        "not valid base64",
    ),
    "non_utf8_bytes": (b"\xff\xfe\x00binary", "decode_error", "not UTF-8"),
    "unknown_event_name": (orjson.dumps(change("UPSERT")), "decode_error", "unknown eventName"),
    "missing_keys": (orjson.dumps(change(Keys=None)), "decode_error", "'Keys'"),
    "missing_image": (orjson.dumps(change("MODIFY", NewImage=None)), "decode_error", "NewImage"),
    "wrong_attribute_type": (
        orjson.dumps(change(NewImage={"id": {"S": "x"}, "n": {"N": 5}})),
        "decode_error",
        "number must be a string",
    ),
    "number_beyond_dynamodb_range": (
        orjson.dumps(change(NewImage={"id": {"S": "x"}, "n": {"N": "1E+126"}})),
        "decode_error",
        "out of DynamoDB's range",
    ),
    "oversized_record": (
        orjson.dumps(change(NewImage={"id": {"S": "x"}, "doc": {"S": OVERSIZED}})),
        "projection_error",
        "Item size has exceeded the maximum allowed size",
    ),
    "kpl_bad_checksum": (kpl_with_bad_checksum(), "decode_error", "MD5 checksum"),
}


class CopyProjection(BaseProjection):
    """Copies each new image into a DynamoDB table; DynamoDB refuses items over 400 KB."""

    name = "copy"

    def __init__(self, client: Any, table: str) -> None:
        self._client = client
        self._table = table

    def apply(self, records: Sequence[ChangeRecord]) -> Results:
        for record in records:
            image = dict(record.new_image or {})
            item = {k: {"S": str(v)} for k, v in image.items()}
            self._client.put_item(TableName=self._table, Item=item)
        return Results.of(records, Outcome.APPLIED)


@dataclass
class Line:
    """One stream, queue, bucket and read table, with the daemon running on them."""

    kinesis: Any
    dynamodb: Any
    sqs: Any
    s3: Any
    stream: str
    queue_url: str
    table: str
    daemon: Daemon
    letters: dict[str, dict[str, Any]] = field(default_factory=dict)

    def put(self, records: list[bytes]) -> list[str]:
        response = self.kinesis.put_records(
            StreamName=self.stream,
            Records=[{"Data": data, "PartitionKey": "one-shard"} for data in records],
        )
        assert response["FailedRecordCount"] == 0
        return [r["SequenceNumber"] for r in response["Records"]]

    def letter(self, sequence_number: str) -> dict[str, Any] | None:
        """The envelope dead-lettered for this record, once it arrived (loaded from S3)."""
        got = self.sqs.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
        ).get("Messages", [])
        for message in got:
            body = orjson.loads(message["Body"])
            if "s3" in body:
                pointer = body["s3"]
                stored = self.s3.get_object(Bucket=pointer["bucket"], Key=pointer["key"])
                body = {**orjson.loads(stored["Body"].read()), "pointer": pointer}
            body["attributes"] = {
                k: v["StringValue"] for k, v in message["MessageAttributes"].items()
            }
            self.letters[body["sequence_number"]] = body
            self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
        return self.letters.get(sequence_number)

    def applied(self, key: str) -> bool:
        item = self.dynamodb.get_item(TableName=self.table, Key={"id": {"S": key}})
        return "Item" in item


@pytest.fixture(scope="module")
def line(moto_endpoint: str, kinesis_local_endpoint: str) -> Iterator[Line]:
    name = f"bad-{uuid.uuid4().hex[:8]}"

    def client(service: str, url: str = moto_endpoint) -> Any:
        return boto3.client(service, region_name=REGION, endpoint_url=url)

    kinesis, dynamodb = client("kinesis", kinesis_local_endpoint), client("dynamodb")
    sqs, s3 = client("sqs"), client("s3")
    kinesis_stream(kinesis, name, 1)
    dynamodb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    s3.create_bucket(Bucket=name)
    queue_url = sqs.create_queue(QueueName=name)["QueueUrl"]
    settings = load_settings(
        None,
        application=name,
        source={"kind": "kinesis", "stream_name": name},
        leases=FAST_LEASES,
        polling=FAST_POLLING,
        retry=FAST_RETRY,
        dead_letter={"queue_url": queue_url, "bucket": name},
    )
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ENDPOINT_URL", moto_endpoint)
        env.setenv("AWS_ENDPOINT_URL_KINESIS", kinesis_local_endpoint)
        with daemon_thread(settings, projections=[CopyProjection(dynamodb, name)]) as daemon:
            yield Line(kinesis, dynamodb, sqs, s3, name, queue_url, name, daemon)


@pytest.mark.parametrize("kind", list(BAD_INPUT))
def test_bad_input_is_dead_lettered_whole_with_its_reason_and_the_daemon_goes_on(
    line: Line, kind: str
) -> None:
    data, reason, message = BAD_INPUT[kind]
    _, bad_seq, last_seq = line.put([good(f"{kind}-before"), data, good(f"{kind}-after")])

    envelope = wait_until(lambda: line.letter(bad_seq), timeout=30, what=f"{kind} dead letter")
    assert isinstance(envelope, dict)
    assert envelope["reason"] == reason
    assert message in envelope["error_message"]
    assert envelope["attributes"]["reason"] == reason
    assert (envelope["stream"], envelope["source"]) == (line.stream, "kinesis")
    # The whole record, byte for byte, so it can be redriven once the cause is fixed.
    assert base64.b64decode(envelope["record"]["Data"]) == data
    if kind == "oversized_record":
        assert envelope["pointer"]["bucket"] == line.stream  # too big for SQS: kept in S3

    # The records around it were applied, and the checkpoint moved past it.
    wait_until(lambda: line.applied(f"{kind}-after"), timeout=30, what="the next record")
    assert line.applied(f"{kind}-before")
    (shard_id,) = line.daemon.worker.running_shards()
    store = DynamoDBLeaseStore(line.dynamodb, line.daemon.settings.lease_table)

    def checkpointed() -> bool:
        lease = store.get(shard_id)
        return lease is not None and int(lease.checkpoint) >= int(last_seq)

    wait_until(checkpointed, timeout=30, what="checkpoint past the bad record")
    assert line.letter(bad_seq) is envelope  # dead-lettered once
