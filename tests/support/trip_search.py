"""The trip saga's read model: the documents seed 001 ends with, and what a table holds."""

from __future__ import annotations

from typing import Any

from projections.scenarios.trip_search_query import plain_document

# TripSearchTable after the whole saga (consumer.demo.trip_saga.SAGA), without `updated_at`.
EXPECTED = {
    "trip-streams-001": {
        "trip_id": "trip-streams-001",
        "flight_number": "NH001",
        "departure_time": "2026-03-15T10:00:00",
        "arrival_time": "2026-03-15T14:00:00",
        "flight_status": "CONFIRMED",
        "hotel_name": "Grand Hotel Tokyo",
        "check_in_date": "2026-03-15",
        "check_out_date": "2026-03-17",
        "hotel_status": "CONFIRMED",
        "total_amount": 80000,
        "currency": "JPY",
        "payment_status": "COMPLETED",
    },
    "trip-streams-cancel-001": {
        "trip_id": "trip-streams-cancel-001",
        "flight_number": "NH999",
        "departure_time": "2026-04-01T10:00:00",
        "arrival_time": "2026-04-01T14:00:00",
        "flight_status": "CANCELLED",
        "hotel_name": "Test Hotel",
        "check_in_date": "2026-04-01",
        "check_out_date": "2026-04-03",
        "hotel_status": "CANCELED",
        "total_amount": -1,
        "currency": "JPY",
        "payment_status": "REFUNDED",
    },
}


def scan(client: Any, table: str) -> dict[str, dict[str, Any]]:
    """TripSearchTable's items by trip id, as DynamoDB returns them."""
    items = client.scan(TableName=table, ConsistentRead=True)["Items"]
    return {item["trip_id"]["S"]: item for item in items}


def documents(client: Any, table: str) -> dict[str, dict[str, Any]]:
    """The documents by trip id as plain values, without `updated_at` (a change's time)."""
    found = {}
    for trip_id, item in scan(client, table).items():
        doc = plain_document(item)
        doc.pop("updated_at")
        found[trip_id] = doc
    return found
