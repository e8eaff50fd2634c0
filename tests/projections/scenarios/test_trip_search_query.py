"""Trip search against moto's server: status, departure range, hotel prefix, pagination."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from projections.scenarios import trip_search_query
from projections.scenarios.trip_search import TripSearchProjection
from projections.scenarios.trip_search_query import decode_token, encode_token, search_trips
from tests.fixtures.aws import REGION
from tests.projections.scenarios.test_trip_search import Stream, flight, hotel, payment

# trip id → (flight status, departure, hotel name)
TRIPS = {
    "t-early": ("CONFIRMED", "2026-02-28T23:00:00", "Grand Hyatt"),
    "trip-streams-001": ("CONFIRMED", "2026-03-15T10:00:00", "Grand Hotel Tokyo"),
    "t-osaka": ("CONFIRMED", "2026-03-20T08:00:00", "Grand Palace Osaka"),
    "t-month-end": ("CONFIRMED", "2026-03-31T23:59:59", "Hilton"),
    "t-april": ("CONFIRMED", "2026-04-02T09:00:00", "Test Hotel"),
    "trip-streams-cancel-001": ("CANCELLED", "2026-04-01T10:00:00", "Test Hotel"),
    "t-pending": ("PENDING", "2026-03-10T07:00:00", "Grand Inn"),
}


@pytest.fixture(scope="module")
def table(moto_endpoint: str) -> Iterator[tuple[Any, str]]:
    """A search table filled by the projection itself, shared by this module's reads."""
    client = boto3.client("dynamodb", region_name=REGION, endpoint_url=moto_endpoint)
    projection = TripSearchProjection(client, table=f"TripSearch-{uuid.uuid4().hex[:8]}")
    projection.migrate()
    stream = Stream()
    records = []
    for trip, (status, departure, hotel_name) in TRIPS.items():
        f = flight("NH" + trip[-3:], departure, departure.replace("T", "T1"), status)
        records += [
            stream.change("INSERT", trip, "FLIGHT#f", f),
            stream.change("INSERT", trip, "HOTEL#h", hotel(hotel_name, "d1", "d2", "CONFIRMED")),
            stream.change("INSERT", trip, "PAYMENT#p", payment(80000, "JPY", "COMPLETED")),
        ]
    assert projection.apply(records).counts().applied == len(records)
    projection.close()
    yield client, projection.table
    client.delete_table(TableName=projection.table)


def ids(items: list[dict[str, Any]]) -> list[str]:
    return [item["trip_id"] for item in items]


def all_pages(client: Any, table: str, **search: Any) -> tuple[list[list[str]], list[str]]:
    """Follow next_token to the end; the ids per page and every id in order."""
    pages, token = [], None
    while True:
        items, token = search_trips(client, table, next_token=token, **search)
        pages.append(ids(items))
        if token is None:
            return pages, [trip for page in pages for trip in page]


def test_by_status_queries_the_index_in_departure_order(table: tuple[Any, str]) -> None:
    client, name = table
    items, token = search_trips(client, name, status="CONFIRMED")

    assert ids(items) == ["t-early", "trip-streams-001", "t-osaka", "t-month-end", "t-april"]
    assert token is None
    first = items[1]
    assert first["flight_number"] == "NH001"
    assert first["total_amount"] == 80000 and isinstance(first["total_amount"], int)
    assert not {"flight_position", "hotel_position", "payment_position"} & set(first)


def test_status_and_departure_range(table: tuple[Any, str]) -> None:
    client, name = table
    march = search_trips(
        client,
        name,
        status="CONFIRMED",
        departure_from="2026-03-01T00:00:00",
        departure_to="2026-03-31T23:59:59",
    )[0]
    since = search_trips(client, name, status="CONFIRMED", departure_from="2026-03-20T08:00:00")[0]
    until = search_trips(client, name, status="CONFIRMED", departure_to="2026-03-15T10:00:00")[0]
    cancelled = search_trips(client, name, status="CANCELLED", departure_from="2026-03-01")[0]

    assert ids(march) == ["trip-streams-001", "t-osaka", "t-month-end"]
    assert ids(since) == ["t-osaka", "t-month-end", "t-april"]
    assert ids(until) == ["t-early", "trip-streams-001"]
    assert ids(cancelled) == ["trip-streams-cancel-001"]


def test_hotel_prefix_with_and_without_status(table: tuple[Any, str]) -> None:
    client, name = table
    with_status = search_trips(client, name, status="CONFIRMED", hotel_prefix="Grand")[0]
    scanned = search_trips(client, name, hotel_prefix="Grand")[0]
    test_hotels = search_trips(client, name, hotel_prefix="Test Hotel")[0]

    assert ids(with_status) == ["t-early", "trip-streams-001", "t-osaka"]
    assert sorted(ids(scanned)) == ["t-early", "t-osaka", "t-pending", "trip-streams-001"]
    assert sorted(ids(test_hotels)) == ["t-april", "trip-streams-cancel-001"]


def test_departure_range_without_status_scans_with_a_filter(table: tuple[Any, str]) -> None:
    client, name = table
    items = search_trips(client, name, departure_from="2026-04-01T00:00:00")[0]
    assert sorted(ids(items)) == ["t-april", "trip-streams-cancel-001"]


def test_pagination_on_the_index_visits_every_match_once(table: tuple[Any, str]) -> None:
    client, name = table
    pages, every = all_pages(client, name, status="CONFIRMED", limit=2)

    assert [len(page) for page in pages] == [2, 2, 1]
    assert every == ["t-early", "trip-streams-001", "t-osaka", "t-month-end", "t-april"]


def test_pagination_of_a_scan_visits_every_item_once(table: tuple[Any, str]) -> None:
    client, name = table
    pages, every = all_pages(client, name, limit=3)

    assert [len(page) for page in pages[:2]] == [3, 3]
    assert sorted(every) == sorted(TRIPS)


def test_filtered_pages_keep_reading_until_the_limit(
    table: tuple[Any, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # One item read per request: most requests find no match, yet every page must be full.
    monkeypatch.setattr(trip_search_query, "FILTERED_PAGE_SIZE", 1)
    client, name = table
    pages, every = all_pages(client, name, hotel_prefix="Grand", limit=2)

    assert [len(page) for page in pages] in ([2, 2], [2, 2, 0])
    assert sorted(every) == ["t-early", "t-osaka", "t-pending", "trip-streams-001"]


def test_surplus_matches_resume_after_the_last_one_returned(table: tuple[Any, str]) -> None:
    # One request reads the whole index and matches three: the page holds one, and the token
    # must lead to the other two rather than past them.
    client, name = table
    pages, every = all_pages(client, name, status="CONFIRMED", hotel_prefix="Grand", limit=1)

    assert [len(page) for page in pages] in ([1, 1, 1], [1, 1, 1, 0])
    assert every == ["t-early", "trip-streams-001", "t-osaka"]


def test_tokens_are_opaque_url_safe_and_checked(table: tuple[Any, str]) -> None:
    client, name = table
    key = {"trip_id": {"S": "t-osaka/?+"}}
    token = encode_token(key)
    assert decode_token(token) == key
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")

    with pytest.raises(ValueError, match="next_token"):
        search_trips(client, name, status="CONFIRMED", next_token="not a token!")
    scan_token = encode_token({"trip_id": {"S": "t-osaka"}})
    with pytest.raises(ValueError):
        search_trips(client, name, status="CONFIRMED", next_token=scan_token)


def test_bad_arguments_are_refused(table: tuple[Any, str]) -> None:
    client, name = table
    with pytest.raises(ValueError, match="limit"):
        search_trips(client, name, limit=0)
    with pytest.raises(ValueError, match="departure_from"):
        search_trips(client, name, status="X", departure_from="2026-05", departure_to="2026-04")
