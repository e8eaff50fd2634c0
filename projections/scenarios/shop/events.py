"""The shop's fourteen event types and how an event-store item becomes a validated ShopEvent.

An event is one item of the DynamoDB `events` table (key aggregate_id + version), written once
and streamed as an INSERT. Its attributes are `aggregate_id`, `version`, `event_type`,
`aggregate_type`, `data` (the payload: a map, or the JSON string some writers store) and
`created_at` (ISO 8601); the names are configurable in `EventAttributes`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

from consumer.record import ChangeRecord
from projections.scenarios.shop.errors import InvalidEventError

_REQUIRED = object()

# Payload fields per event type: (name, kind, default). Kinds: "str", "int", "items".
# Defaults apply where the seed's writer may leave a field out (an empty description).
EVENT_FIELDS: Mapping[str, tuple[tuple[str, str, Any], ...]] = {
    "ProductCreated": (
        ("product_id", "str", _REQUIRED),
        ("name", "str", _REQUIRED),
        ("description", "str", ""),
        ("price", "int", _REQUIRED),
        ("stock", "int", 0),
    ),
    "ProductUpdated": (
        ("product_id", "str", _REQUIRED),
        ("name", "str", _REQUIRED),
        ("description", "str", ""),
        ("price", "int", _REQUIRED),
    ),
    "ProductDeleted": (("product_id", "str", _REQUIRED),),
    "StockAdded": (("product_id", "str", _REQUIRED), ("quantity", "int", _REQUIRED)),
    "StockReserved": (
        ("product_id", "str", _REQUIRED),
        ("order_id", "str", ""),
        ("quantity", "int", _REQUIRED),
    ),
    "StockReleased": (
        ("product_id", "str", _REQUIRED),
        ("order_id", "str", ""),
        ("quantity", "int", _REQUIRED),
    ),
    "StockDeducted": (
        ("product_id", "str", _REQUIRED),
        ("order_id", "str", ""),
        ("quantity", "int", _REQUIRED),
    ),
    "ItemAddedToCart": (
        ("cart_id", "str", _REQUIRED),
        ("user_id", "str", ""),
        ("product_id", "str", _REQUIRED),
        ("quantity", "int", _REQUIRED),
        ("price", "int", _REQUIRED),
    ),
    "ItemRemovedFromCart": (
        ("cart_id", "str", _REQUIRED),
        ("user_id", "str", ""),
        ("product_id", "str", _REQUIRED),
    ),
    "CartCleared": (("cart_id", "str", _REQUIRED), ("user_id", "str", "")),
    "OrderPlaced": (
        ("order_id", "str", _REQUIRED),
        ("user_id", "str", ""),
        ("items", "items", _REQUIRED),
        ("total", "int", _REQUIRED),
    ),
    "OrderPaid": (("order_id", "str", _REQUIRED),),
    "OrderShipped": (("order_id", "str", _REQUIRED),),
    "OrderCancelled": (("order_id", "str", _REQUIRED), ("reason", "str", "")),
}

ORDER_ITEM_FIELDS = (("product_id", "str"), ("quantity", "int"), ("price", "int"))


@dataclass(frozen=True, slots=True)
class EventAttributes:
    """Attribute names of an event item in the event store."""

    aggregate_id: str = "aggregate_id"
    version: str = "version"
    event_type: str = "event_type"
    payload: str = "data"
    created_at: str = "created_at"


@dataclass(frozen=True, slots=True)
class ShopEvent:
    """One event of one aggregate, its payload validated (`known` is False for other types)."""

    aggregate_id: str
    version: int
    event_type: str
    payload: Mapping[str, Any]
    occurred_at: datetime | None
    known: bool = True


def parse_event(record: ChangeRecord, attributes: EventAttributes) -> ShopEvent | None:
    """The event an INSERT record carries, or None when the record is not an event item.

    Raises InvalidEventError (a PoisonError) naming the field when an event is malformed.
    """
    image = record.new_image
    if record.event_name != "INSERT" or image is None:
        return None
    event_type = image.get(attributes.event_type)
    aggregate_id = image.get(attributes.aggregate_id)
    if not isinstance(event_type, str) or aggregate_id is None:
        return None
    if not isinstance(aggregate_id, str) or not aggregate_id:
        raise InvalidEventError(event_type, attributes.aggregate_id, "must be a non-empty string")
    version = _integer(image.get(attributes.version))
    if version is None or version < 1:
        raise InvalidEventError(event_type, attributes.version, "must be an integer >= 1")
    occurred_at = _occurred_at(record, image.get(attributes.created_at), event_type, attributes)
    fields = EVENT_FIELDS.get(event_type)
    if fields is None:
        return ShopEvent(aggregate_id, version, event_type, {}, occurred_at, known=False)
    payload = _payload(image.get(attributes.payload), event_type, attributes.payload)
    return ShopEvent(
        aggregate_id, version, event_type, _validate(event_type, fields, payload), occurred_at
    )


def _payload(value: Any, event_type: str, name: str) -> Mapping[str, Any]:
    if isinstance(value, Mapping):
        return value
    if isinstance(value, str | bytes):
        try:
            decoded = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise InvalidEventError(event_type, name, f"is not valid JSON: {exc}") from exc
        if isinstance(decoded, dict):
            return decoded
    if value is None:
        raise InvalidEventError(event_type, name, "is missing")
    raise InvalidEventError(event_type, name, f"must be a map, not {type(value).__name__}")


def _validate(
    event_type: str, fields: tuple[tuple[str, str, Any], ...], payload: Mapping[str, Any]
) -> dict[str, Any]:
    valid: dict[str, Any] = {}
    for name, kind, default in fields:
        value = payload.get(name)
        if value is None:
            if default is _REQUIRED:
                raise InvalidEventError(event_type, name, "is missing")
            valid[name] = default
        elif kind == "str":
            if not isinstance(value, str):
                raise InvalidEventError(event_type, name, f"must be a string, not {value!r}")
            valid[name] = value
        elif kind == "int":
            number = _integer(value)
            if number is None:
                raise InvalidEventError(event_type, name, f"must be an integer, not {value!r}")
            valid[name] = number
        else:
            valid[name] = _order_items(event_type, name, value)
    return valid


def _order_items(event_type: str, name: str, value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise InvalidEventError(event_type, name, f"must be a list, not {type(value).__name__}")
    items: list[dict[str, Any]] = []
    for index, item in enumerate(value):
        if not isinstance(item, Mapping):
            raise InvalidEventError(event_type, f"{name}[{index}]", "must be a map")
        clean = {key: _json_safe(v) for key, v in item.items()}
        for field, kind in ORDER_ITEM_FIELDS:
            field_value = item.get(field)
            if kind == "str" and not isinstance(field_value, str):
                raise InvalidEventError(event_type, f"{name}[{index}].{field}", "must be a string")
            if kind == "int":
                number = _integer(field_value)
                if number is None:
                    raise InvalidEventError(
                        event_type, f"{name}[{index}].{field}", "must be an integer"
                    )
                clean[field] = number
        items.append(clean)
    return items


def _integer(value: Any) -> int | None:
    """An int, or an integral Decimal; None for anything else (bools included)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, Decimal) and value == value.to_integral_value():
        return int(value)
    return None


def _json_safe(value: Any) -> Any:
    """Plain JSON values for the JSONB columns (Decimals, sets and bytes are not JSON)."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, Mapping):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted(_json_safe(v) for v in value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value


def _occurred_at(
    record: ChangeRecord, value: Any, event_type: str, attributes: EventAttributes
) -> datetime | None:
    """When the event happened: the item's created_at, else the stream's creation time."""
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError as exc:
            raise InvalidEventError(event_type, attributes.created_at, "is not ISO 8601") from exc
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    if record.approximate_creation_time is not None:
        return datetime.fromtimestamp(record.approximate_creation_time, UTC)
    return None
