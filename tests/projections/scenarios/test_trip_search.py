"""Trip search projection against moto's server: the seed's saga, interleavings, guards."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.config import Config
from structlog.testing import capture_logs

from consumer.errors import ConfigError
from consumer.record import ChangeRecord
from projections.scenarios.trip_search import GUARD_ATTRIBUTES, STATUS_INDEX, TripSearchProjection
from tests.fixtures.aws import REGION
from tests.support.trip_search import EXPECTED

SAGA_START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC).timestamp()
STREAM = "arn:aws:dynamodb:us-east-1:123456789012:table/TripTable/stream/2026-03-01T00:00:00.000"

# The seed's expected document for the successful saga, as its `jq` shows it (numbers as text).
SEED_DOCUMENT = {**EXPECTED["trip-streams-001"], "total_amount": "80000"}


class Stream:
    """Builds ChangeRecords as the DynamoDB Streams decoder does, with rising positions."""

    def __init__(self, first_sequence: int = 4_000_000_000_000_000_000_000) -> None:
        self.sequence = first_sequence
        self.clock = SAGA_START

    def change(
        self,
        event: str,
        trip: str,
        sk: str,
        image: Mapping[str, Any] | None = None,
        old: Mapping[str, Any] | None = None,
        **extra: Any,
    ) -> ChangeRecord:
        self.sequence += 100
        self.clock += 1
        keys = {"PK": f"TRIP#{trip}", "SK": sk}
        return ChangeRecord(
            source="dynamodb",
            stream=STREAM,
            shard_id="shardId-00000001700000000000-aaaaaaaa",
            sequence_number=str(self.sequence),
            event_name=event,  # type: ignore[arg-type]
            keys=keys,
            new_image={**keys, **image} if image is not None else None,
            old_image={**keys, **old} if old is not None else None,
            approximate_creation_time=self.clock,
            event_id=f"event-{self.sequence}",
            table="TripTable",
            view_type="NEW_AND_OLD_IMAGES",
            **extra,
        )


def flight(number: str, departure: str, arrival: str, status: str) -> dict[str, Any]:
    return {
        "flight_number": number,
        "departure_time": departure,
        "arrival_time": arrival,
        "status": status,
        "price": {"amount": 50000, "currency": "JPY"},
    }


def hotel(name: str, check_in: str, check_out: str, status: str) -> dict[str, Any]:
    return {
        "hotel_name": name,
        "check_in_date": check_in,
        "check_out_date": check_out,
        "status": status,
    }


def payment(amount: int, currency: str, status: str) -> dict[str, Any]:
    return {"amount": amount, "currency": currency, "status": status}


def successful_saga(stream: Stream, trip: str = "trip-streams-001") -> list[ChangeRecord]:
    """The seed's first Step Functions run: flight, hotel, then payment all succeed."""
    f = flight("NH001", "2026-03-15T10:00:00", "2026-03-15T14:00:00", "CONFIRMED")
    h = hotel("Grand Hotel Tokyo", "2026-03-15", "2026-03-17", "CONFIRMED")
    return [
        stream.change("INSERT", trip, f"FLIGHT#flight_for_{trip}", f),
        stream.change("INSERT", trip, f"HOTEL#hotel_for_{trip}", h),
        stream.change(
            "INSERT", trip, f"PAYMENT#payment_for_{trip}", payment(80000, "JPY", "PENDING")
        ),
        stream.change(
            "MODIFY",
            trip,
            f"PAYMENT#payment_for_{trip}",
            payment(80000, "JPY", "COMPLETED"),
            old=payment(80000, "JPY", "PENDING"),
        ),
    ]


def compensated_saga(stream: Stream, trip: str = "trip-streams-cancel-001") -> list[ChangeRecord]:
    """The seed's second run: payment of -1 fails, the saga refunds and cancels backwards."""
    f = flight("NH999", "2026-04-01T10:00:00", "2026-04-01T14:00:00", "CONFIRMED")
    h = hotel("Test Hotel", "2026-04-01", "2026-04-03", "CONFIRMED")
    p = payment(-1, "JPY", "FAILED")
    return [
        stream.change("INSERT", trip, f"FLIGHT#flight_for_{trip}", f),
        stream.change("INSERT", trip, f"HOTEL#hotel_for_{trip}", h),
        stream.change("INSERT", trip, f"PAYMENT#payment_for_{trip}", p),
        stream.change(
            "MODIFY", trip, f"PAYMENT#payment_for_{trip}", {**p, "status": "REFUNDED"}, old=p
        ),
        stream.change(
            "MODIFY", trip, f"HOTEL#hotel_for_{trip}", {**h, "status": "CANCELED"}, old=h
        ),
        stream.change(
            "MODIFY", trip, f"FLIGHT#flight_for_{trip}", {**f, "status": "CANCELLED"}, old=f
        ),
    ]


@pytest.fixture
def client(moto_endpoint: str) -> Any:
    return boto3.client(
        "dynamodb",
        region_name=REGION,
        endpoint_url=moto_endpoint,
        config=Config(max_pool_connections=16),
    )


@pytest.fixture
def projection(client: Any, unique_name: Callable[[str], str]) -> Iterator[TripSearchProjection]:
    projection = TripSearchProjection(client, table=unique_name("TripSearchTable"))
    projection.migrate()
    yield projection
    projection.close()
    client.delete_table(TableName=projection.table)


def raw_document(projection: TripSearchProjection, trip: str) -> dict[str, Any]:
    response = projection.client.get_item(
        TableName=projection.table, Key={"trip_id": {"S": trip}}, ConsistentRead=True
    )
    return response["Item"]


def as_jq_shows_it(item: Mapping[str, Any]) -> dict[str, Any]:
    """`jq '.Item | with_entries(.value = .value | to_entries[0].value)'` from the seed."""
    return {name: next(iter(value.values())) for name, value in item.items()}


def read_model(projection: TripSearchProjection, trip: str) -> dict[str, Any]:
    """The document without its guards: what a reader of the search table sees."""
    document = as_jq_shows_it(raw_document(projection, trip))
    return {k: v for k, v in document.items() if k not in GUARD_ATTRIBUTES}


def scan(projection: TripSearchProjection) -> list[dict[str, Any]]:
    items = projection.client.scan(TableName=projection.table, ConsistentRead=True)["Items"]
    return sorted(items, key=lambda item: item["trip_id"]["S"])


def count_updates(client: Any) -> list[str]:
    calls: list[str] = []
    client.meta.events.register(
        "before-parameter-build.dynamodb.UpdateItem",
        lambda params, **_: calls.append(params["Key"]["trip_id"]["S"]),
    )
    return calls


def test_successful_saga_builds_the_seed_document(projection: TripSearchProjection) -> None:
    records = successful_saga(Stream())
    outcome = projection.apply(records).counts()

    assert (outcome.applied, outcome.stale, outcome.filtered) == (4, 0, 0)
    document = read_model(projection, "trip-streams-001")
    assert document.pop("updated_at") == "2026-03-01T09:00:04Z"
    assert document == SEED_DOCUMENT
    assert raw_document(projection, "trip-streams-001")["total_amount"] == {"N": "80000"}


def test_compensation_statuses_pass_through(projection: TripSearchProjection) -> None:
    projection.apply(compensated_saga(Stream()))

    document = read_model(projection, "trip-streams-cancel-001")
    assert document["flight_status"] == "CANCELLED"
    assert document["hotel_status"] == "CANCELED"
    assert document["payment_status"] == "REFUNDED"
    assert (document["flight_number"], document["hotel_name"]) == ("NH999", "Test Hotel")
    assert document["total_amount"] == "-1"


def test_every_interleaving_of_components_gives_the_same_document(
    projection: TripSearchProjection,
) -> None:
    components = successful_saga(Stream())[:3]
    documents = []
    for order, permutation in enumerate(itertools.permutations(components)):
        trip = f"trip-perm-{order}"
        stream = Stream()
        # Re-emit in this order, so stream positions and times follow the arrival order.
        for record in permutation:
            image = {k: v for k, v in record.new_image.items() if k not in ("PK", "SK")}
            sk = record.keys["SK"]
            projection.apply([stream.change("INSERT", trip, sk, image)])
        document = read_model(projection, trip)
        document.pop("trip_id")
        documents.append(document)
    assert len(documents) == 6
    assert all(document == documents[0] for document in documents)
    assert documents[0]["flight_number"] == "NH001"
    assert documents[0]["hotel_name"] == "Grand Hotel Tokyo"
    assert documents[0]["payment_status"] == "PENDING"


def test_each_component_has_its_own_guard(projection: TripSearchProjection) -> None:
    # A hotel change at a higher position must not make an older flight change look stale.
    stream = Stream()
    early_flight, *_ = successful_saga(stream)
    late_hotel = successful_saga(stream)[1]
    projection.apply([late_hotel])

    outcome = projection.apply([early_flight]).counts()

    assert outcome.applied == 1
    assert read_model(projection, "trip-streams-001")["flight_number"] == "NH001"


def test_stale_change_after_a_newer_one_does_not_overwrite(
    projection: TripSearchProjection,
) -> None:
    stream = Stream()
    trip = "trip-streams-cancel-001"
    records = compensated_saga(stream, trip)
    projection.apply(records)
    insert_flight = records[0]  # CONFIRMED, older than the CANCELLED modify already applied

    outcome = projection.apply([insert_flight]).counts()

    assert (outcome.applied, outcome.stale) == (0, 1)
    assert read_model(projection, trip)["flight_status"] == "CANCELLED"


def test_replaying_everything_twice_changes_nothing(projection: TripSearchProjection) -> None:
    stream = Stream()
    records = successful_saga(stream) + compensated_saga(stream)
    projection.apply(records)
    before = scan(projection)

    for _ in range(2):
        outcome = projection.apply(records).counts()
        assert (outcome.applied, outcome.stale) == (0, len(records))
        # One record at a time, as a redelivery after a crash would come.
        for record in records:
            assert projection.apply([record]).counts().stale == 1

    assert scan(projection) == before


def test_changes_to_one_component_in_a_batch_coalesce_into_one_write(
    projection: TripSearchProjection,
) -> None:
    calls = count_updates(projection.client)
    records = compensated_saga(Stream())  # 6 changes: 2 flight, 2 hotel, 2 payment

    outcome = projection.apply(records).counts()

    assert outcome.applied == 6
    assert len(calls) == 3
    assert read_model(projection, "trip-streams-cancel-001")["flight_status"] == "CANCELLED"


def test_a_field_missing_from_the_new_image_is_removed(projection: TripSearchProjection) -> None:
    stream = Stream()
    f = flight("NH001", "2026-03-15T10:00:00", "2026-03-15T14:00:00", "CONFIRMED")
    projection.apply([stream.change("INSERT", "t1", "FLIGHT#f", f)])
    without_arrival = {k: v for k, v in f.items() if k != "arrival_time"}

    projection.apply([stream.change("MODIFY", "t1", "FLIGHT#f", without_arrival, old=f)])

    assert "arrival_time" not in read_model(projection, "t1")


def test_remove_clears_the_component_and_keeps_a_tombstone(
    projection: TripSearchProjection,
) -> None:
    stream = Stream()
    trip = "trip-streams-001"
    saga = successful_saga(stream, trip)
    projection.apply(saga)
    hotel_insert = saga[1]
    remove = stream.change("REMOVE", trip, hotel_insert.keys["SK"], old=hotel_insert.new_image)

    assert projection.apply([remove]).counts().applied == 1
    document = read_model(projection, trip)
    assert not {"hotel_name", "check_in_date", "check_out_date", "hotel_status"} & set(document)
    assert document["flight_number"] == "NH001"
    assert document["updated_at"] == "2026-03-01T09:00:05Z"
    assert raw_document(projection, trip)["hotel_position"] == {"S": remove.position}

    # A replay of the older INSERT cannot resurrect the hotel...
    assert projection.apply([hotel_insert]).counts().stale == 1
    assert "hotel_name" not in read_model(projection, trip)
    # ...but a genuinely newer re-creation can.
    again = stream.change("INSERT", trip, hotel_insert.keys["SK"], hotel_insert.new_image)
    assert projection.apply([again]).counts().applied == 1
    assert read_model(projection, trip)["hotel_name"] == "Grand Hotel Tokyo"


def test_ttl_expiry_from_a_keys_only_stream_removes_like_a_delete(
    projection: TripSearchProjection,
) -> None:
    stream = Stream()
    trip = "trip-streams-001"
    projection.apply(successful_saga(stream, trip))
    expiry = replace(
        stream.change("REMOVE", trip, f"FLIGHT#flight_for_{trip}"),
        ttl_expiry=True,
        view_type="KEYS_ONLY",
    )

    assert projection.apply([expiry]).counts().applied == 1

    document = read_model(projection, trip)
    assert "flight_status" not in document and "departure_time" not in document
    assert document["hotel_name"] == "Grand Hotel Tokyo"
    # Without flight_status the trip leaves the status index, so searches no longer find it.
    found = projection.client.query(
        TableName=projection.table,
        IndexName=STATUS_INDEX,
        KeyConditionExpression="flight_status = :s",
        ExpressionAttributeValues={":s": {"S": "CONFIRMED"}},
    )["Items"]
    assert found == []


def test_other_entities_and_imageless_changes_are_filtered(
    projection: TripSearchProjection,
) -> None:
    stream = Stream()
    calls = count_updates(projection.client)
    keys_only = replace(stream.change("INSERT", "t1", "FLIGHT#f", None), view_type="KEYS_ONLY")
    records: Sequence[ChangeRecord] = [
        stream.change("INSERT", "t1", "TRIP#t1", {"status": "STARTED"}),
        replace(
            stream.change("INSERT", "x", "FLIGHT#f", {"flight_number": "X"}),
            keys={"PK": "USER#x", "SK": "FLIGHT#f"},
        ),
        keys_only,
        replace(keys_only, sequence_number=str(stream.sequence + 1)),
    ]

    with capture_logs() as logs:
        outcome = projection.apply(records).counts()

    assert (outcome.applied, outcome.filtered) == (0, 4)
    assert calls == []
    warnings = [entry for entry in logs if entry["event"] == "trip_search.no_new_image"]
    assert len(warnings) == 1
    assert warnings[0]["view_type"] == "KEYS_ONLY"


def test_migrate_is_idempotent_and_creates_the_status_index(
    projection: TripSearchProjection,
) -> None:
    projection.migrate()  # the fixture already ran it once

    table = projection.client.describe_table(TableName=projection.table)["Table"]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert table["KeySchema"] == [{"AttributeName": "trip_id", "KeyType": "HASH"}]
    [index] = table["GlobalSecondaryIndexes"]
    assert index["IndexName"] == "flight_status-departure_time-index"
    assert [k["AttributeName"] for k in index["KeySchema"]] == ["flight_status", "departure_time"]


class _Resources:
    """The daemon's Resources, reduced to the one client this projection borrows."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def aws_client(self, service: str) -> Any:
        assert service == "dynamodb"
        return self.client

    def postgres_pool(self) -> Any:
        raise ConfigError("no postgres here")


def test_from_config_builds_a_working_projection(
    client: Any, unique_name: Callable[[str], str]
) -> None:
    table = unique_name("TripSearchTable")
    projection = TripSearchProjection.from_config(
        "search", {"table": table, "max_workers": 4}, _Resources(client)
    )
    projection.migrate()
    try:
        assert (projection.name, projection.sink.max_workers) == ("search", 4)
        assert projection.apply(successful_saga(Stream())).counts().applied == 4
        assert read_model(projection, "trip-streams-001")["payment_status"] == "COMPLETED"
    finally:
        projection.close()
        client.delete_table(TableName=table)


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"max_workers": 0}, "max_workers"),
        ({"max_workers": "8"}, "max_workers"),
        ({"table": ""}, "table"),
        ({"tabel": "x"}, "tabel"),
    ],
)
def test_from_config_names_the_bad_setting(
    client: Any, settings: dict[str, Any], named: str
) -> None:
    with pytest.raises(ConfigError, match=named):
        TripSearchProjection.from_config("search", settings, _Resources(client))
