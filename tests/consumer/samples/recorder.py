"""Record GetRecords response bodies from real emulators, as the wire carries them.

Used by the live decode tests, and to (re)write the JSON samples beside this file:
    .venv/bin/python -m tests.consumer.samples.recorder
which starts moto's server and kinesis-local, records, and stops them.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

SAMPLES = Path(__file__).parent
VIEW_TYPES = ("KEYS_ONLY", "NEW_IMAGE", "OLD_IMAGE", "NEW_AND_OLD_IMAGES")

# A trip item (seed 001) carrying every AttributeValue type.
TRIP_FLIGHT: dict[str, Any] = {
    "PK": {"S": "TRIP#trip-001"},
    "SK": {"S": "FLIGHT#flight_for_trip-001"},
    "flight_number": {"S": "NH001"},
    "departure_time": {"S": "2026-03-01T10:00:00"},
    "status": {"S": "PENDING"},
    "seats": {"N": "2"},
    "fare": {"N": "80000.50"},
    "refundable": {"BOOL": False},
    "note": {"NULL": True},
    "legs": {"L": [{"M": {"from": {"S": "HND"}, "to": {"S": "ITM"}, "minutes": {"N": "70"}}}]},
    "tags": {"SS": ["business", "window"]},
    "seat_rows": {"NS": ["12", "14"]},
    "ticket": {"B": b"\x00\x01ticket"},
    "codes": {"BS": [b"\x01", b"\x02"]},
}


def capture_bodies(client: Any, operation: str) -> list[bytes]:
    """The raw HTTP bodies of every `operation` response this client receives from now on."""
    bodies: list[bytes] = []
    service = client.meta.service_model.service_id.hyphenize()

    def keep(response_dict: dict[str, Any], **_: Any) -> None:
        bodies.append(response_dict["body"])

    client.meta.events.register(f"before-parse.{service}.{operation}", keep)
    return bodies


def record_dynamodb_streams(
    dynamodb: Any, streams: Any, table: str, view_type: str
) -> dict[str, Any]:
    """Create `table` with a stream, insert/modify/remove one trip item, return GetRecords' body."""
    dynamodb.create_table(
        TableName=table,
        KeySchema=[
            {"AttributeName": "PK", "KeyType": "HASH"},
            {"AttributeName": "SK", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "PK", "AttributeType": "S"},
            {"AttributeName": "SK", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": view_type},
    )
    arn = dynamodb.describe_table(TableName=table)["Table"]["LatestStreamArn"]
    key = {"PK": TRIP_FLIGHT["PK"], "SK": TRIP_FLIGHT["SK"]}
    dynamodb.put_item(TableName=table, Item=TRIP_FLIGHT)
    dynamodb.update_item(
        TableName=table,
        Key=key,
        UpdateExpression="SET #s = :s",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":s": {"S": "CONFIRMED"}},
    )
    dynamodb.delete_item(TableName=table, Key=key)
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = streams.get_shard_iterator(
        StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    bodies = capture_bodies(streams, "GetRecords")
    streams.get_records(ShardIterator=iterator)
    body = orjson.loads(bodies[-1])
    body.pop("NextShardIterator", None)
    return {"StreamArn": arn, "ShardId": shard, "Body": body}


def integration_record(stream_record: dict[str, Any], table: str) -> dict[str, Any]:
    """What the DynamoDB->Kinesis integration writes for a stream record (millisecond clock)."""
    change = stream_record["dynamodb"]
    dynamodb: dict[str, Any] = {
        "ApproximateCreationDateTime": int(change["ApproximateCreationDateTime"] * 1000),
        "Keys": change["Keys"],
    }
    for image in ("NewImage", "OldImage"):
        if image in change:
            dynamodb[image] = change[image]
    dynamodb["SizeBytes"] = change["SizeBytes"]
    dynamodb["ApproximateCreationDateTimePrecision"] = "MILLISECOND"
    return {
        "awsRegion": stream_record["awsRegion"],
        "eventID": stream_record["eventID"],
        "eventName": stream_record["eventName"],
        "userIdentity": None,
        "recordFormat": "application/json",
        "tableName": table,
        "dynamodb": dynamodb,
        "eventSource": "aws:dynamodb",
    }


def record_kinesis(
    kinesis: Any, stream: str, records: Sequence[tuple[str, bytes]]
) -> dict[str, Any]:
    """Create a one-shard stream, put `records` (partition key, data), return GetRecords' body."""
    kinesis.create_stream(StreamName=stream, ShardCount=1)
    kinesis.get_waiter("stream_exists").wait(
        StreamName=stream, WaiterConfig={"Delay": 0.1, "MaxAttempts": 300}
    )
    for partition_key, data in records:
        kinesis.put_record(StreamName=stream, PartitionKey=partition_key, Data=data)
    shard = kinesis.list_shards(StreamName=stream)["Shards"][0]["ShardId"]
    iterator = kinesis.get_shard_iterator(
        StreamName=stream, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    bodies = capture_bodies(kinesis, "GetRecords")
    kinesis.get_records(ShardIterator=iterator, Limit=1000)
    body = orjson.loads(bodies[-1])
    for volatile in ("NextShardIterator", "MillisBehindLatest", "ChildShards"):
        body.pop(volatile, None)
    return {"StreamName": stream, "ShardId": shard, "Body": body}


EC_EVENTS: list[dict[str, Any]] = [
    {"aggregate_id": "product-1", "version": 1, "type": "ProductCreated", "name": "Mug"},
    {"aggregate_id": "product-1", "version": 2, "type": "StockAdded", "quantity": 10},
    {"aggregate_id": "order-7", "version": 1, "type": "OrderPlaced", "total": "12.50"},
]


def kpl_aggregate(user_records: Sequence[tuple[str, bytes]]) -> tuple[str, bytes]:
    """Pack user records into one KPL aggregate with aws-kinesis-agg (a real KPL-format writer)."""
    from aws_kinesis_agg.aggregator import RecordAggregator

    aggregator = RecordAggregator()
    for partition_key, data in user_records:
        if aggregator.add_user_record(partition_key, data) is not None:
            raise ValueError("the sample records do not fit one aggregate")
    partition_key, _, data = aggregator.clear_and_get().get_contents()
    return partition_key, data


def record_all(make_client: Callable[[str], Any], make_kinesis: Callable[[], Any]) -> None:
    """Write every sample file: DynamoDB Streams per view type, and three Kinesis formats."""
    dynamodb, streams = make_client("dynamodb"), make_client("dynamodbstreams")
    by_view = {}
    for view_type in VIEW_TYPES:
        table = f"TripTable-{view_type.lower().replace('_', '-')}"
        by_view[view_type] = record_dynamodb_streams(dynamodb, streams, table, view_type)
        _write(f"dynamodb_streams_{view_type.lower()}.json", by_view[view_type])
    kinesis = make_kinesis()
    full = by_view["NEW_AND_OLD_IMAGES"]
    table = full["StreamArn"].split("/")[1]
    changes = [integration_record(r, table) for r in full["Body"]["Records"]]
    integration = [("TRIP#trip-001", orjson.dumps(c)) for c in changes]
    _write("kinesis_integration.json", record_kinesis(kinesis, "ec-events-cdc", integration))
    plain = [(e["aggregate_id"], orjson.dumps(e)) for e in EC_EVENTS]
    _write("kinesis_plain.json", record_kinesis(kinesis, "app-events", plain))
    mixed = [*plain, integration[0]]
    _write("kinesis_kpl.json", record_kinesis(kinesis, "kpl-events", [kpl_aggregate(mixed)]))


def _write(name: str, sample: dict[str, Any]) -> None:
    (SAMPLES / name).write_bytes(orjson.dumps(sample, option=orjson.OPT_INDENT_2) + b"\n")


def main() -> None:
    """Start moto and kinesis-local, record every sample, stop them."""
    import boto3

    from tests.fixtures import aws

    os.environ.update(aws.CREDENTIALS)
    # The session fixtures' generator functions, driven by hand outside pytest.
    logs = Path(tempfile.mkdtemp(prefix="samples-"))
    moto = aws.moto_endpoint.__wrapped__(logs)  # type: ignore[attr-defined]
    local = aws.kinesis_local_endpoint.__wrapped__(logs)  # type: ignore[attr-defined]
    try:
        moto_url, local_url = next(moto), next(local)

        def client(service: str, url: str = moto_url) -> Any:
            return boto3.client(service, region_name=aws.REGION, endpoint_url=url)

        record_all(client, lambda: client("kinesis", local_url))
    finally:
        for generator in (moto, local):
            generator.close()
    print(f"samples written to {SAMPLES}", file=sys.stderr)


if __name__ == "__main__":
    main()
