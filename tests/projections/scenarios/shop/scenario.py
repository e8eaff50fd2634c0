"""The seed's shop scenario as event-store items, and ChangeRecords as the Kinesis decoder
makes them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from consumer.record import ChangeRecord

T0 = datetime(2025, 4, 1, 9, 0, tzinfo=UTC)
# A realistic 56-digit Kinesis sequence number; records of one shard count up from it.
SEQUENCE_BASE = 49_660_000_000_000_000_000_000_000_000_000_000_000_000_000_000_000_000_000
# table -> (columns, key). The guard's base_version says which batch last moved an aggregate,
# so it differs with batching by design; the version itself is part of the state.
READ_TABLES = {
    "read_products": ("*", "product_id"),
    "read_carts": ("*", "cart_id"),
    "read_orders": ("*", "order_id"),
    "read_inventory": ("*", "product_id"),
    "shop_aggregate_versions": ("aggregate_id, version", "aggregate_id"),
}


@dataclass(frozen=True, slots=True)
class Event:
    """One item of the DynamoDB `events` table."""

    aggregate_id: str
    version: int
    event_type: str
    data: dict[str, Any]
    aggregate_type: str = ""

    def item(self, created_at: datetime) -> dict[str, Any]:
        """The item as the event store writes it (and NEW_IMAGE carries it)."""
        return {
            "aggregate_id": self.aggregate_id,
            "version": self.version,
            "aggregate_type": self.aggregate_type,
            "event_type": self.event_type,
            "data": self.data,
            "created_at": created_at.isoformat().replace("+00:00", "Z"),
            "gsi1pk": "EVENTS",
        }


class EventStore:
    """Appends events with per-aggregate versions, the way the seed's event store does."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._versions: dict[str, int] = {}

    def append(self, aggregate_id: str, event_type: str, **data: Any) -> Event:
        """Add the aggregate's next event."""
        version = self._versions.get(aggregate_id, 0) + 1
        self._versions[aggregate_id] = version
        event = Event(aggregate_id, version, event_type, data, aggregate_id.split("-")[0])
        self.events.append(event)
        return event


def records(events: Iterable[Event], start: int = 0) -> list[ChangeRecord]:
    """Kinesis records of the DynamoDB->Kinesis integration, one per event, in this order."""
    out = []
    for n, event in enumerate(events, start=start):
        created = T0 + timedelta(seconds=n)
        item = event.item(created)
        out.append(
            ChangeRecord(
                source="kinesis",
                stream="ec-events",
                shard_id="shardId-000000000000",
                sequence_number=str(SEQUENCE_BASE + n),
                event_name="INSERT",
                keys={"aggregate_id": event.aggregate_id, "version": event.version},
                new_image=item,
                old_image=None,
                approximate_creation_time=created.timestamp(),
                event_id=f"evt-{n}",
                table="events",
                view_type="NEW_IMAGE",
                partition_key=event.aggregate_id,
            )
        )
    return out


def redelivered(record: ChangeRecord, sequence_number: int) -> ChangeRecord:
    """The same event delivered again (a retried write or a producer retry)."""
    return replace(record, sequence_number=str(SEQUENCE_BASE + sequence_number))


def shop_scenario() -> EventStore:
    """The seed's flows: register products, fill a cart, order, pay, ship; order and cancel."""
    s = EventStore()
    # Product registration: ProductCreated then StockAdded (ProductService + InventoryService).
    s.append("product-p1", "ProductCreated", product_id="p1", name="Tシャツ",
             description="綿100%", price=2000, stock=100)  # fmt: skip
    s.append("inventory-p1", "StockAdded", product_id="p1", quantity=100)
    s.append("product-p2", "ProductCreated", product_id="p2", name="マグカップ",
             description="", price=1200, stock=50)  # fmt: skip
    s.append("inventory-p2", "StockAdded", product_id="p2", quantity=50)
    s.append("product-p1", "ProductUpdated", product_id="p1", name="Tシャツ",
             description="綿100% 日本製", price=1800)  # fmt: skip
    s.append("product-p3", "ProductCreated", product_id="p3", name="限定品",
             description="", price=9999, stock=1)  # fmt: skip
    s.append("product-p3", "ProductDeleted", product_id="p3")
    # Cart: add, add, add more of p1, remove p2, add p2 again.
    cart = {"cart_id": "cart-u1", "user_id": "u1"}
    s.append("cart-u1", "ItemAddedToCart", **cart, product_id="p1", quantity=2, price=1800)
    s.append("cart-u1", "ItemAddedToCart", **cart, product_id="p2", quantity=1, price=1200)
    s.append("cart-u1", "ItemAddedToCart", **cart, product_id="p1", quantity=1, price=1800)
    s.append("cart-u1", "ItemRemovedFromCart", **cart, product_id="p2")
    s.append("cart-u1", "ItemAddedToCart", **cart, product_id="p2", quantity=2, price=1200)
    # Order flow: OrderPlaced, StockReserved per item, CartCleared; then paid and shipped.
    items = [
        {"product_id": "p1", "product_name": "Tシャツ", "quantity": 3, "price": 1800},
        {"product_id": "p2", "product_name": "マグカップ", "quantity": 2, "price": 1200},
    ]
    s.append("order-o1", "OrderPlaced", order_id="o1", user_id="u1", items=items, total=7800)
    s.append("inventory-p1", "StockReserved", product_id="p1", order_id="o1", quantity=3)
    s.append("inventory-p2", "StockReserved", product_id="p2", order_id="o1", quantity=2)
    s.append("cart-u1", "CartCleared", **cart)
    s.append("order-o1", "OrderPaid", order_id="o1")
    s.append("order-o1", "OrderShipped", order_id="o1")
    s.append("inventory-p1", "StockDeducted", product_id="p1", order_id="o1", quantity=3)
    s.append("inventory-p2", "StockDeducted", product_id="p2", order_id="o1", quantity=2)
    # A second order, cancelled: its reservation is released.
    s.append("cart-u1", "ItemAddedToCart", **cart, product_id="p2", quantity=5, price=1200)
    o2_items = [{"product_id": "p2", "quantity": 5, "price": 1200}]
    s.append("order-o2", "OrderPlaced", order_id="o2", user_id="u1", items=o2_items, total=6000)
    s.append("inventory-p2", "StockReserved", product_id="p2", order_id="o2", quantity=5)
    s.append("cart-u1", "CartCleared", **cart)
    s.append("order-o2", "OrderCancelled", order_id="o2", reason="changed my mind")
    s.append("inventory-p2", "StockReleased", product_id="p2", order_id="o2", quantity=5)
    # A cart left with something in it, and a paid order that is not shipped yet.
    s.append("cart-u2", "ItemAddedToCart", cart_id="cart-u2", user_id="u2", product_id="p1",
             quantity=1, price=1800)  # fmt: skip
    s.append("order-o3", "OrderPlaced", order_id="o3", user_id="u2", items=[
        {"product_id": "p1", "quantity": 1, "price": 1800}], total=1800)  # fmt: skip
    s.append("inventory-p1", "StockReserved", product_id="p1", order_id="o3", quantity=1)
    s.append("order-o3", "OrderPaid", order_id="o3")
    return s


def dump(conn: psycopg.Connection[Any]) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every shop table, in key order: two equal dumps mean equal read models."""
    return {
        table: conn.execute(f"SELECT {columns} FROM {table} ORDER BY {key}").fetchall()
        for table, (columns, key) in READ_TABLES.items()
    }


def truncate(conn: psycopg.Connection[Any]) -> None:
    """Empty every shop table."""
    conn.execute(f"TRUNCATE {', '.join(READ_TABLES)}")


def in_batches(items: Sequence[ChangeRecord], size: int) -> list[list[ChangeRecord]]:
    """Split records into consecutive batches of at most `size`."""
    return [list(items[i : i + size]) for i in range(0, len(items), size)]
