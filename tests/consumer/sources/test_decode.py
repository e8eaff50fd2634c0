"""Decoders on recorded wire records of every format and view type, live emulators, and poison."""

from __future__ import annotations

import base64
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest

from consumer.errors import ConfigError, DecodeError
from consumer.record import ChangeRecord, RawRecord
from consumer.sources.decode import DynamoDBStreamsDecoder, KinesisDecoder, table_from_stream_arn
from consumer.sources.kpl import MAGIC
from tests.consumer.samples import recorder
from tests.fixtures.aws import REGION

SAMPLES = Path(recorder.__file__).parent
KEYS = {"PK": "TRIP#trip-001", "SK": "FLIGHT#flight_for_trip-001"}
ITEM = {
    "PK": "TRIP#trip-001",
    "SK": "FLIGHT#flight_for_trip-001",
    "flight_number": "NH001",
    "departure_time": "2026-03-01T10:00:00",
    "status": "PENDING",
    "seats": 2,
    "fare": Decimal("80000.50"),
    "refundable": False,
    "note": None,
    "legs": [{"from": "HND", "to": "ITM", "minutes": 70}],
    "tags": frozenset({"business", "window"}),
    "seat_rows": frozenset({12, 14}),
    "ticket": b"\x00\x01ticket",
    "codes": frozenset({b"\x01", b"\x02"}),
}
CONFIRMED = {**ITEM, "status": "CONFIRMED"}


def sample(name: str) -> dict[str, Any]:
    return orjson.loads((SAMPLES / name).read_bytes())


def stream_records(recorded: dict[str, Any]) -> list[ChangeRecord]:
    """Decode a recorded DynamoDB Streams GetRecords body the way the shard loop would."""
    decoder = DynamoDBStreamsDecoder(recorded["StreamArn"])
    out: list[ChangeRecord] = []
    for record in recorded["Body"]["Records"]:
        raw = RawRecord(record["dynamodb"]["SequenceNumber"], None, record)
        out.extend(decoder.decode(raw, recorded["ShardId"]))
    return out


def kinesis_records(recorded: dict[str, Any], decoder: KinesisDecoder) -> list[ChangeRecord]:
    out: list[ChangeRecord] = []
    for record in recorded["Body"]["Records"]:
        raw = RawRecord(record["SequenceNumber"], record["ApproximateArrivalTimestamp"], record)
        out.extend(decoder.decode(raw, recorded["ShardId"]))
    return out


# --- DynamoDB Streams ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("view_type", "expected_images"),
    [
        ("KEYS_ONLY", [(None, None), (None, None), (None, None)]),
        ("NEW_IMAGE", [(ITEM, None), (CONFIRMED, None), (None, None)]),
        ("OLD_IMAGE", [(None, None), (None, ITEM), (None, CONFIRMED)]),
        ("NEW_AND_OLD_IMAGES", [(ITEM, None), (CONFIRMED, ITEM), (None, CONFIRMED)]),
    ],
)
def test_each_view_type_decodes_keys_and_the_images_it_carries(
    view_type: str, expected_images: list[tuple[Any, Any]]
) -> None:
    recorded = sample(f"dynamodb_streams_{view_type.lower()}.json")
    records = stream_records(recorded)
    assert [r.event_name for r in records] == ["INSERT", "MODIFY", "REMOVE"]
    assert [(r.new_image, r.old_image) for r in records] == expected_images
    wire = recorded["Body"]["Records"]
    for record, source in zip(records, wire, strict=True):
        assert record.source == "dynamodb"
        assert record.stream == recorded["StreamArn"]
        assert record.shard_id == recorded["ShardId"]
        assert record.table == f"TripTable-{view_type.lower().replace('_', '-')}"
        assert record.keys == KEYS
        assert record.view_type == view_type
        assert record.sequence_number == source["dynamodb"]["SequenceNumber"]
        assert record.event_id == source["eventID"]
        assert record.approximate_creation_time == source["dynamodb"]["ApproximateCreationDateTime"]
        assert record.size_bytes == source["dynamodb"]["SizeBytes"]
        assert record.raw is source
        assert record.ttl_expiry is False


def test_a_remove_by_the_ttl_service_is_marked_as_expiry() -> None:
    (record,) = stream_records(sample("dynamodb_streams_ttl_remove.json"))
    assert record.event_name == "REMOVE"
    assert record.ttl_expiry is True
    assert record.old_image is not None and record.old_image["expires_at"] == 1795412000


def test_a_user_remove_with_another_identity_is_not_expiry() -> None:
    recorded = sample("dynamodb_streams_ttl_remove.json")
    wire = recorded["Body"]["Records"][0]
    wire["userIdentity"] = {"PrincipalId": "arn:aws:iam::123456789012:user/ops", "Type": "User"}
    (record,) = stream_records(recorded)
    assert record.ttl_expiry is False


@pytest.mark.parametrize(
    "identity",
    [
        {"Type": "Service", "PrincipalId": "events.amazonaws.com"},
        {"type": "Service", "principalId": "dynamodb.amazonaws.com.example.com"},
        {"Type": "User", "PrincipalId": "dynamodb.amazonaws.com"},
    ],
)
def test_a_remove_by_another_principal_is_not_expiry(identity: dict[str, str]) -> None:
    """Only the TTL service (Type Service AND principal dynamodb.amazonaws.com) expires items:
    a delete by any other service, or a user that happens to carry that name, is a delete."""
    recorded = sample("dynamodb_streams_ttl_remove.json")
    recorded["Body"]["Records"][0]["userIdentity"] = identity
    (record,) = stream_records(recorded)
    assert record.ttl_expiry is False
    change = _integration()
    change["userIdentity"] = identity
    (integration,) = KinesisDecoder("s").decode(_kinesis(orjson.dumps(change)), "shardId-0")
    assert (integration.event_name, integration.ttl_expiry) == ("REMOVE", False)


def test_the_table_name_comes_from_the_stream_arn() -> None:
    arn = "arn:aws:dynamodb:eu-west-1:123456789012:table/TripTable/stream/2026-01-01T00:00:00.000"
    assert table_from_stream_arn(arn) == "TripTable"
    assert DynamoDBStreamsDecoder(arn).table == "TripTable"


@pytest.mark.parametrize(
    "arn", ["", "TripTable", "arn:aws:kinesis:us-east-1:1:stream/x", "arn:aws:dynamodb:r:1:table/T"]
)
def test_a_stream_arn_that_is_not_one_fails_at_construction(arn: str) -> None:
    with pytest.raises(ConfigError, match="stream_arn"):
        DynamoDBStreamsDecoder(arn)


def _stream_record(**changes: Any) -> dict[str, Any]:
    record = sample("dynamodb_streams_new_and_old_images.json")["Body"]["Records"][1]
    for path, value in changes.items():
        target = record
        *parents, leaf = path.split("__")
        for parent in parents:
            target = target[parent]
        if value is _DELETE:
            del target[leaf]
        else:
            target[leaf] = value
    return record


_DELETE = object()
_ARN = "arn:aws:dynamodb:us-east-1:123456789012:table/TripTable/stream/label"


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ("not an object", "lacks the expected JSON object shape"),
        (_stream_record(dynamodb=_DELETE), "lacks the field 'dynamodb'"),
        (_stream_record(eventName=_DELETE), "lacks the field 'eventName'"),
        (_stream_record(dynamodb__Keys=_DELETE), "lacks the field 'Keys'"),
        (_stream_record(eventName="UPSERT"), "unknown eventName 'UPSERT'"),
        (_stream_record(dynamodb__StreamViewType="ALL"), "unknown view type 'ALL'"),
        (_stream_record(dynamodb__NewImage__seats={"N": "two"}), "NewImage: seats: not a Dyn"),
        (_stream_record(dynamodb__OldImage__x={"Z": "1"}), "OldImage: x: unknown AttributeValue"),
        (_stream_record(dynamodb__Keys__PK={"S": 1}), "Keys: PK: AttributeValue S holds"),
        (_stream_record(dynamodb__ApproximateCreationDateTime="soon"), "epoch seconds"),
    ],
)
def test_malformed_stream_records_are_decode_errors(payload: Any, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        DynamoDBStreamsDecoder(_ARN).decode(RawRecord("1", None, payload), "shardId-1")


# --- Kinesis ------------------------------------------------------------------------------


def test_dynamodb_integration_records_decode_with_kinesis_positions() -> None:
    recorded = sample("kinesis_integration.json")
    records = kinesis_records(recorded, KinesisDecoder("ec-events-cdc"))
    assert [r.event_name for r in records] == ["INSERT", "MODIFY", "REMOVE"]
    assert [(r.new_image, r.old_image) for r in records] == [
        (ITEM, None),
        (CONFIRMED, ITEM),
        (None, CONFIRMED),
    ]
    wire = recorded["Body"]["Records"]
    for record, source in zip(records, wire, strict=True):
        change = orjson.loads(base64.b64decode(source["Data"]))
        assert record.source == "kinesis"
        assert record.stream == "ec-events-cdc"
        assert record.keys == KEYS
        # The guard orders by the Kinesis sequence number, not any DynamoDB one.
        assert record.sequence_number == source["SequenceNumber"]
        assert record.sub_sequence_number == 0
        assert record.table == "TripTable-new-and-old-images"
        assert record.event_id == change["eventID"]
        assert record.partition_key == "TRIP#trip-001"
        ms = change["dynamodb"]["ApproximateCreationDateTime"]
        assert record.approximate_creation_time == pytest.approx(ms / 1000)
        assert record.raw is source
    assert records[0].position < records[1].position < records[2].position


def _integration(**dynamodb: Any) -> dict[str, Any]:
    data = orjson.loads(
        base64.b64decode(sample("kinesis_integration.json")["Body"]["Records"][2]["Data"])
    )
    data["dynamodb"].update(dynamodb)
    return data


def _kinesis(data: bytes | str, partition_key: str = "pk", seq: str = "4960") -> RawRecord:
    payload = {"SequenceNumber": seq, "ApproximateArrivalTimestamp": 1.5, "Data": data}
    payload["PartitionKey"] = partition_key
    return RawRecord(seq, 1.5, payload)


def test_integration_timestamps_in_microseconds_are_read_as_such() -> None:
    change = _integration(
        ApproximateCreationDateTime=1721011165891550,
        ApproximateCreationDateTimePrecision="MICROSECOND",
    )
    (record,) = KinesisDecoder("s").decode(_kinesis(orjson.dumps(change)), "shardId-0")
    assert record.approximate_creation_time == pytest.approx(1721011165.891550)


@pytest.mark.parametrize(
    "identity",
    [
        {"type": "Service", "principalId": "dynamodb.amazonaws.com"},
        {"Type": "Service", "PrincipalId": "dynamodb.amazonaws.com"},
    ],
)
def test_integration_ttl_removes_are_marked_as_expiry(identity: dict[str, str]) -> None:
    change = _integration()
    change["userIdentity"] = identity
    (record,) = KinesisDecoder("s").decode(_kinesis(orjson.dumps(change)), "shardId-0")
    assert (record.event_name, record.ttl_expiry) == ("REMOVE", True)


def test_plain_json_events_are_inserts_keyed_by_partition_key() -> None:
    recorded = sample("kinesis_plain.json")
    records = kinesis_records(recorded, KinesisDecoder("app-events"))
    assert [r.new_image for r in records] == recorder.EC_EVENTS
    assert [r.keys for r in records] == [
        {"partition_key": e["aggregate_id"]} for e in recorder.EC_EVENTS
    ]
    wire = recorded["Body"]["Records"]
    for record, source in zip(records, wire, strict=True):
        assert record.event_name == "INSERT"
        assert record.old_image is None
        assert record.table is None
        assert record.sequence_number == source["SequenceNumber"]
        assert record.approximate_creation_time == source["ApproximateArrivalTimestamp"]


def test_plain_json_events_can_be_keyed_by_their_own_fields() -> None:
    recorded = sample("kinesis_plain.json")
    decoder = KinesisDecoder("app-events", fmt="json", key_fields=["aggregate_id", "version"])
    records = kinesis_records(recorded, decoder)
    assert [r.keys for r in records] == [
        {"aggregate_id": e["aggregate_id"], "version": e["version"]} for e in recorder.EC_EVENTS
    ]


def test_a_json_event_without_a_configured_key_field_is_a_decode_error() -> None:
    decoder = KinesisDecoder("s", key_fields=["order_id"])
    with pytest.raises(DecodeError, match="key field 'order_id'"):
        decoder.decode(_kinesis(orjson.dumps({"x": 1})), "shardId-0")


def test_kpl_aggregates_decode_to_sub_records_of_both_formats() -> None:
    recorded = sample("kinesis_kpl.json")
    (wire,) = recorded["Body"]["Records"]
    assert base64.b64decode(wire["Data"])[:4] == MAGIC
    records = kinesis_records(recorded, KinesisDecoder("kpl-events"))
    assert [r.sub_sequence_number for r in records] == [0, 1, 2, 3]
    assert {r.sequence_number for r in records} == {wire["SequenceNumber"]}
    assert [r.new_image for r in records[:3]] == recorder.EC_EVENTS
    assert [r.partition_key for r in records] == [
        "product-1",
        "product-1",
        "order-7",
        "TRIP#trip-001",
    ]
    integration = records[3]
    assert (integration.event_name, integration.keys, integration.new_image) == (
        "INSERT",
        KEYS,
        ITEM,
    )
    positions = [r.position for r in records]
    assert positions == sorted(positions) and len(set(positions)) == 4


def test_data_already_decoded_to_bytes_is_accepted() -> None:
    (record,) = KinesisDecoder("s").decode(_kinesis(b'{"a": 1}'), "shardId-0")
    assert record.new_image == {"a": 1}


def test_forced_formats_override_detection() -> None:
    change = orjson.dumps(_integration())
    (plain,) = KinesisDecoder("s", fmt="json").decode(_kinesis(change), "shardId-0")
    assert plain.new_image is not None and "dynamodb" in plain.new_image
    with pytest.raises(DecodeError, match="lacks the field 'dynamodb'"):
        KinesisDecoder("s", fmt="dynamodb").decode(_kinesis(b'{"a": 1}'), "shardId-0")


def test_an_unknown_format_fails_at_construction() -> None:
    with pytest.raises(ConfigError, match="format"):
        KinesisDecoder("s", fmt="avro")  # type: ignore[arg-type]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (RawRecord("1", None, "text"), "lacks the expected JSON object shape"),
        (RawRecord("1", None, {"PartitionKey": "p"}), "lacks the field 'Data'"),
        (_kinesis("***not base64***"), "not valid base64"),
        (_kinesis(_b64(b'{"a": ')), "not valid JSON"),
        (_kinesis(_b64(b"\xff\xfe{}")), "not UTF-8"),
        (_kinesis(_b64(b"[1, 2]")), "JSON but not an object: a list"),
        (_kinesis(_b64(b'"text"')), "JSON but not an object: a str"),
        (_kinesis(_b64(MAGIC + b"\x00" * 20)), "MD5 checksum"),
        (_kinesis(_b64(orjson.dumps(_integration(Keys={"PK": {"X": "1"}})))), "Keys: PK: unknown"),
        (_kinesis(_b64(orjson.dumps({**_integration(), "eventName": "X"}))), "unknown eventName"),
        (_kinesis(_b64(orjson.dumps(_integration(ApproximateCreationDateTime="x")))), "a number"),
    ],
)
def test_malformed_kinesis_records_are_decode_errors(raw: RawRecord, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        KinesisDecoder("s").decode(raw, "shardId-0")


def test_data_of_the_wrong_type_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="Data is a int"):
        KinesisDecoder("s").decode(_kinesis(12), "shardId-0")  # type: ignore[arg-type]


# --- Live: records read back from the emulators just now ----------------------------------


@pytest.mark.integration
def test_records_from_moto_dynamodb_streams_decode(
    aws_client: Callable[..., Any], unique_name: Callable[[str], str]
) -> None:
    recorded = recorder.record_dynamodb_streams(
        aws_client("dynamodb"),
        aws_client("dynamodbstreams"),
        unique_name("TripTable"),
        "NEW_AND_OLD_IMAGES",
    )
    records = stream_records(recorded)
    assert [(r.event_name, r.new_image, r.old_image) for r in records] == [
        ("INSERT", ITEM, None),
        ("MODIFY", CONFIRMED, ITEM),
        ("REMOVE", None, CONFIRMED),
    ]


@pytest.mark.integration
def test_integration_json_read_back_from_kinesis_local_decodes(
    kinesis_local_endpoint: str, unique_name: Callable[[str], str]
) -> None:
    kinesis = boto3.client("kinesis", region_name=REGION, endpoint_url=kinesis_local_endpoint)
    stream_sample = sample("dynamodb_streams_new_and_old_images.json")
    changes = [
        recorder.integration_record(r, "TripTable") for r in stream_sample["Body"]["Records"]
    ]
    events = [(e["aggregate_id"], orjson.dumps(e)) for e in recorder.EC_EVENTS]
    put = [("TRIP#trip-001", orjson.dumps(c)) for c in changes]
    put.append(recorder.kpl_aggregate(events))
    recorded = recorder.record_kinesis(kinesis, unique_name("cdc"), put)
    records = kinesis_records(recorded, KinesisDecoder("cdc"))
    assert [(r.event_name, r.table, r.sub_sequence_number) for r in records] == [
        ("INSERT", "TripTable", 0),
        ("MODIFY", "TripTable", 0),
        ("REMOVE", "TripTable", 0),
        ("INSERT", None, 0),
        ("INSERT", None, 1),
        ("INSERT", None, 2),
    ]
    assert records[1].new_image == CONFIRMED
    assert [r.new_image for r in records[3:]] == recorder.EC_EVENTS
    positions = [r.position for r in records]
    assert positions == sorted(positions)
