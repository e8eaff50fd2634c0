"""Poison records interleaved in a 10,000-record stream (kinesis-local, moto's SQS and
DynamoDB): exactly those are dead-lettered whole, everything else is projected, and each
shard's checkpoint reaches its last record.

Four shards, because kinesis-local's PutRecords slows down linearly with a shard's length
(measured: 500 records take 0.4 s into an empty shard, 3 s into one holding 10,000)."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from consumer.config import load_settings
from consumer.leases.store import DynamoDBLeaseStore
from consumer.record import ChangeRecord
from projections.projection import BaseProjection
from projections.results import Outcome, Results
from tests.fixtures.servers import wait_until
from tests.support.daemon import FAST_LEASES, FAST_POLLING, daemon_thread
from tests.support.streams import kinesis_stream

TOTAL = 10_000
# Alone, adjacent pairs, the first and the very last record of the stream.
POISON = frozenset({0, 1, 517, 518, 519, 2048, 4999, 5000, 7777, 9998, 9999})
PUT_BATCH = 500
SHARDS = 4
WRITE_BATCH = 25


class BulkProjection(BaseProjection):
    """Writes with BatchWriteItem, 25 items per call; refuses a batch holding a poison record.

    It checks the whole batch before writing anything, like a transactional sink would.
    """

    name = "bulk"

    def __init__(self, client: Any, table: str) -> None:
        self._client = client
        self._table = table

    def apply(self, records: Sequence[ChangeRecord]) -> Results:
        for record in records:
            if record.new_image and record.new_image.get("poison"):
                raise ValueError(f"cannot project record {record.new_image['n']}")
        for start in range(0, len(records), WRITE_BATCH):
            requests: list[dict[str, Any]] = [
                {
                    "PutRequest": {
                        "Item": {
                            "n": {"N": str(r.new_image["n"])},
                            "position": {"S": r.position},
                        }
                    }
                }
                for r in records[start : start + WRITE_BATCH]
                if r.new_image
            ]
            while requests:
                response = self._client.batch_write_item(RequestItems={self._table: requests})
                requests = response.get("UnprocessedItems", {}).get(self._table, [])
        return Results.of(records, Outcome.APPLIED)


def count_items(dynamodb: Any, table: str) -> set[int]:
    found: set[int] = set()
    kwargs: dict[str, Any] = {"TableName": table, "ProjectionExpression": "n"}
    while True:
        page = dynamodb.scan(**kwargs)
        found.update(int(item["n"]["N"]) for item in page["Items"])
        if "LastEvaluatedKey" not in page:
            return found
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def drain(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    bodies: list[dict[str, Any]] = []
    while True:
        got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
        if not got:
            return bodies
        bodies.extend(orjson.loads(m["Body"]) for m in got)
        sqs.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(got)
            ],
        )


def payload(n: int) -> bytes:
    return orjson.dumps({"n": n, "poison": n in POISON, "pad": "p" * 40})


def test_poison_in_ten_thousand_records_only_those_are_dead_lettered(
    aws_client: Callable[..., Any],
    kinesis_local_endpoint: str,
    unique_name: Callable[[str], str],
    kinesis_env: None,
) -> None:
    kinesis, dynamodb, sqs = (
        aws_client("kinesis", kinesis_local_endpoint),
        aws_client("dynamodb"),
        aws_client("sqs"),
    )
    name = unique_name("poison")
    kinesis_stream(kinesis, name, SHARDS)
    dynamodb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "n", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "n", "AttributeType": "N"}],
        BillingMode="PAY_PER_REQUEST",
    )
    queue_url = sqs.create_queue(QueueName=name)["QueueUrl"]
    sequence: dict[int, str] = {}
    last_of_shard: dict[str, str] = {}
    for start in range(0, TOTAL, PUT_BATCH):
        numbers = range(start, min(TOTAL, start + PUT_BATCH))
        response = kinesis.put_records(
            StreamName=name,
            Records=[{"Data": payload(n), "PartitionKey": f"pk{n}"} for n in numbers],
        )
        assert response["FailedRecordCount"] == 0
        for n, put in zip(numbers, response["Records"], strict=True):
            sequence[n] = put["SequenceNumber"]
            last_of_shard[put["ShardId"]] = put["SequenceNumber"]
    assert len(last_of_shard) == SHARDS
    settings = load_settings(
        None,
        application=name,
        source={"kind": "kinesis", "stream_name": name},
        leases=FAST_LEASES,
        polling=FAST_POLLING,
        retry={"base_seconds": 0.01, "cap_seconds": 0.2, "max_attempts": 3},
        dead_letter={"queue_url": queue_url},
    )
    store = DynamoDBLeaseStore(dynamodb, settings.lease_table)
    began = time.monotonic()
    with daemon_thread(settings, projections=[BulkProjection(dynamodb, name)]) as daemon:

        def at_last_records() -> bool:
            leases = {shard: store.get(shard) for shard in last_of_shard}
            return all(
                lease is not None and lease.checkpoint == last_of_shard[shard]
                for shard, lease in leases.items()
            )

        wait_until(at_last_records, timeout=120, interval=0.2, what="checkpoints at the ends")
        elapsed = time.monotonic() - began
        dead = daemon.metrics.registry.get_sample_value(
            "stream_projector_dead_letters_total", {"reason": "projection_error"}
        )

    print(f"\n{TOTAL} records with {len(POISON)} poison: checkpoints at the ends in {elapsed:.1f}s")
    assert dead == len(POISON)
    letters = drain(sqs, queue_url)
    by_number = {orjson.loads(base64.b64decode(b["record"]["Data"]))["n"]: b for b in letters}
    assert len(letters) == len(POISON) and set(by_number) == POISON
    for n, letter in by_number.items():
        # The full record as it was in the stream, with where it came from and why it failed.
        assert base64.b64decode(letter["record"]["Data"]) == payload(n)
        assert letter["sequence_number"] == sequence[n]
        assert letter["record"]["PartitionKey"] == f"pk{n}"
        assert (letter["projection"], letter["reason"]) == ("bulk", "projection_error")
        assert letter["error_message"] == f"cannot project record {n}"
        assert letter["attempts"] == 3
    assert count_items(dynamodb, name) == set(range(TOTAL)) - POISON
