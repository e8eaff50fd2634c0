"""Search TripSearchTable: by flight status (+ departure range) on the GSI, by hotel prefix.

Cost, because DynamoDB bills what it reads, not what it returns:
- `status` (with or without a departure range) is a Query on `flight_status-departure_time-
  index`: it reads only that status's items in the range, in departure order.
- `hotel_prefix` is a `begins_with` filter. With a status it filters the Query, so every item
  of that status/range is still read and billed. Without a status there is no key to use and
  the search is a Scan: it reads (and bills) the whole table, in no particular order. A
  departure range without a status is a Scan filter for the same reason.

A filtered request can return fewer items than it read, even none, so pages are read until
`limit` matches were found or the data ends; the token resumes right after the last match
returned, so no match is skipped or repeated.
"""

from __future__ import annotations

import base64
import binascii
import json
from decimal import Decimal
from typing import Any

import botocore.exceptions
from boto3.dynamodb.types import TypeDeserializer

from consumer.aws_errors import VALIDATION, error_code
from projections.scenarios.trip_search import GUARD_ATTRIBUTES, STATUS_INDEX

# How many items a filtered request may evaluate at once: more means fewer round trips but
# more items read past the last match that is returned.
FILTERED_PAGE_SIZE = 100

_deserializer = TypeDeserializer()


def search_trips(
    client: Any,
    table: str,
    status: str | None = None,
    departure_from: str | None = None,
    departure_to: str | None = None,
    hotel_prefix: str | None = None,
    limit: int = 20,
    next_token: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """Up to `limit` trip documents and an opaque token for the next page (None at the end).

    Raises ValueError for a bad argument or a token that does not belong to this search.
    """
    if limit < 1:
        raise ValueError("limit must be at least 1")
    if departure_from and departure_to and departure_from > departure_to:
        raise ValueError("departure_from must not be later than departure_to")
    request, key_attributes = _request(table, status, departure_from, departure_to, hotel_prefix)
    filtered = "FilterExpression" in request
    read = client.query if status else client.scan
    start_key = decode_token(next_token) if next_token else None
    if start_key is not None and set(start_key) != set(key_attributes):
        # A token from another kind of search (scan vs index) would resume nowhere sensible.
        raise ValueError("next_token does not belong to this search")

    items: list[dict[str, Any]] = []
    while True:
        remaining = limit - len(items)
        page_request = dict(
            request, Limit=max(remaining, FILTERED_PAGE_SIZE) if filtered else remaining
        )
        if start_key is not None:
            page_request["ExclusiveStartKey"] = start_key
        try:
            page = read(**page_request)
        except botocore.exceptions.ClientError as error:
            if error_code(error) == VALIDATION:
                raise ValueError(f"invalid search: {error}") from error
            raise
        matches = page.get("Items", [])
        if len(matches) > remaining:
            # More matches than wanted: resume after the last one returned, not after the page.
            kept = matches[:remaining]
            items.extend(plain_document(item) for item in kept)
            return items, encode_token({name: kept[-1][name] for name in key_attributes})
        items.extend(plain_document(item) for item in matches)
        start_key = page.get("LastEvaluatedKey")
        if start_key is None:
            return items, None
        if len(items) == limit:
            return items, encode_token(start_key)


def _request(
    table: str,
    status: str | None,
    departure_from: str | None,
    departure_to: str | None,
    hotel_prefix: str | None,
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The Query or Scan arguments, and the attributes that make up its LastEvaluatedKey."""
    names: dict[str, str] = {}
    values: dict[str, Any] = {}
    request: dict[str, Any] = {"TableName": table}
    range_condition = None
    if departure_from or departure_to:
        names["#d"] = "departure_time"
        if departure_from and departure_to:
            values[":from"], values[":to"] = {"S": departure_from}, {"S": departure_to}
            range_condition = "#d BETWEEN :from AND :to"
        elif departure_from:
            values[":from"] = {"S": departure_from}
            range_condition = "#d >= :from"
        else:
            values[":to"] = {"S": departure_to}
            range_condition = "#d <= :to"
    filters: list[str] = []
    if status:
        names["#s"] = "flight_status"
        values[":s"] = {"S": status}
        key_condition = "#s = :s"
        if range_condition:
            key_condition += " AND " + range_condition
        request.update(IndexName=STATUS_INDEX, KeyConditionExpression=key_condition)
        key_attributes: tuple[str, ...] = ("trip_id", "flight_status", "departure_time")
    else:
        if range_condition:
            filters.append(range_condition)
        key_attributes = ("trip_id",)
    if hotel_prefix:
        names["#h"] = "hotel_name"
        values[":h"] = {"S": hotel_prefix}
        filters.append("begins_with(#h, :h)")
    if filters:
        request["FilterExpression"] = " AND ".join(filters)
    if names:
        request["ExpressionAttributeNames"] = names
        request["ExpressionAttributeValues"] = values
    return request, key_attributes


def plain_document(item: dict[str, Any]) -> dict[str, Any]:
    """An item as plain Python values (int for whole numbers), without the guard attributes."""
    return {
        name: _plain(_deserializer.deserialize(value))
        for name, value in item.items()
        if name not in GUARD_ATTRIBUTES
    }


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else value
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def encode_token(last_evaluated_key: dict[str, Any]) -> str:
    """An opaque, URL-safe token for a LastEvaluatedKey (base64 of its JSON, no padding)."""
    raw = json.dumps(last_evaluated_key, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_token(token: str) -> dict[str, Any]:
    """The LastEvaluatedKey inside a token; ValueError when it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        key = json.loads(raw)
    except (binascii.Error, ValueError) as error:
        raise ValueError("invalid next_token") from error
    if not isinstance(key, dict) or not all(
        isinstance(v, dict) and len(v) == 1 for v in key.values()
    ):
        raise ValueError("invalid next_token")
    return key
