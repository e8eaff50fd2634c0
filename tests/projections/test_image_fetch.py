"""KEYS_ONLY image fetching against moto's DynamoDB: consistent batched reads, deletes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest

from consumer.errors import TransientError
from consumer.record import ChangeRecord
from projections.image_fetch import ImageFetcher, ImageFetchingProjection
from projections.projection import BaseProjection
from projections.results import Counts, Outcome, Results


def create_table(client: Any, table: str) -> None:
    client.create_table(
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
    )


def keys_only(n: int, pk: str, table: str, event: str = "MODIFY") -> ChangeRecord:
    return ChangeRecord(
        source="dynamodb",
        stream="s",
        shard_id="shardId-1",
        sequence_number=str(1000 + n),
        event_name=event,  # type: ignore[arg-type]
        keys={"PK": pk, "SK": "METADATA"},
        new_image=None,
        old_image=None,
        approximate_creation_time=1.0,
        table=table,
        view_type="KEYS_ONLY",
    )


def put(client: Any, table: str, pk: str, stock: int) -> None:
    client.put_item(
        TableName=table,
        Item={"PK": {"S": pk}, "SK": {"S": "METADATA"}, "Stock": {"N": str(stock)}},
    )


@pytest.fixture
def table(aws_client: Callable[..., Any], unique_name: Callable[[str], str]) -> str:
    name = unique_name("single")
    create_table(aws_client("dynamodb"), name)
    return name


def test_fetch_fills_in_the_current_item_and_turns_a_missing_item_into_a_remove(
    aws_client: Callable[..., Any], table: str
) -> None:
    dynamodb = aws_client("dynamodb")
    put(dynamodb, table, "PRODUCT#a", 3)
    fetcher = ImageFetcher(dynamodb)
    records = [
        keys_only(1, "PRODUCT#a", table),
        keys_only(2, "PRODUCT#gone", table),
        keys_only(3, "PRODUCT#a", table, event="REMOVE"),
    ]
    fetched = fetcher.fetch(records)
    assert fetched[0].new_image == {"PK": "PRODUCT#a", "SK": "METADATA", "Stock": 3}
    assert fetched[0].event_name == "MODIFY" and fetched[0].position == records[0].position
    assert fetched[1].event_name == "REMOVE" and fetched[1].new_image is None
    # REMOVE records are passed on unread: one read in all.
    assert fetched[2] is records[2]
    assert fetcher.reads == 2


def test_the_image_is_the_current_item_not_the_one_at_the_time_of_the_change(
    aws_client: Callable[..., Any], table: str
) -> None:
    dynamodb = aws_client("dynamodb")
    put(dynamodb, table, "PRODUCT#a", 20)
    older = keys_only(1, "PRODUCT#a", table)
    put(dynamodb, table, "PRODUCT#a", 7)  # a later change, not yet read from the stream
    assert ImageFetcher(dynamodb).fetch([older])[0].new_image["Stock"] == 7


def test_distinct_keys_are_read_once_and_batches_over_100_keys_are_split(
    aws_client: Callable[..., Any], table: str
) -> None:
    dynamodb = aws_client("dynamodb")
    for n in range(130):
        put(dynamodb, table, f"PRODUCT#{n}", n)
    records = [keys_only(n, f"PRODUCT#{n % 130}", table) for n in range(260)]
    fetcher = ImageFetcher(dynamodb)
    fetched = fetcher.fetch(records)
    assert [r.new_image["Stock"] for r in fetched] == [n % 130 for n in range(260)]
    assert fetcher.reads == 130


def test_a_missing_source_table_is_transient(aws_client: Callable[..., Any]) -> None:
    with pytest.raises(TransientError, match="ResourceNotFoundException"):
        ImageFetcher(aws_client("dynamodb")).fetch([keys_only(1, "PRODUCT#a", "no-such-table")])


class Stocks(BaseProjection):
    """A projection that needs new images: it remembers stock per key, or None when deleted."""

    name = "stocks"

    def __init__(self) -> None:
        self.state: dict[str, int | None] = {}

    def apply(self, records: Sequence[ChangeRecord]) -> Results:
        for record in records:
            assert record.event_name == "REMOVE" or record.new_image is not None
            image = record.new_image
            self.state[record.keys["PK"]] = None if image is None else image["Stock"]
        return Results.of(records, Outcome.APPLIED)


def test_the_wrapper_gives_the_inner_projection_images_it_could_not_have_otherwise(
    aws_client: Callable[..., Any], table: str
) -> None:
    dynamodb = aws_client("dynamodb")
    put(dynamodb, table, "PRODUCT#a", 4)
    inner = Stocks()
    wrapped = ImageFetchingProjection(inner, ImageFetcher(dynamodb))
    outcome = wrapped.apply(
        [keys_only(1, "PRODUCT#a", table), keys_only(2, "PRODUCT#b", table)]
    ).counts()
    assert outcome == Counts(applied=2)
    assert inner.state == {"PRODUCT#a": 4, "PRODUCT#b": None}
