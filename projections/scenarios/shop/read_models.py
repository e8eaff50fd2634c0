"""The four shop read models as rows in memory, and what each event type does to them.

A batch loads the rows it touches once, applies its events here in order, and writes the
results back: products, carts and orders as whole rows, inventory as deltas that PostgreSQL
adds to the stored counts (so `available` = total - reserved stays derived by the database).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from projections.scenarios.shop.errors import InvalidTransitionError
from projections.scenarios.shop.events import ShopEvent

PRODUCT_EVENTS = frozenset({"ProductCreated", "ProductUpdated", "ProductDeleted"})
CART_EVENTS = frozenset({"ItemAddedToCart", "ItemRemovedFromCart", "CartCleared"})
ORDER_EVENTS = frozenset({"OrderPlaced", "OrderPaid", "OrderShipped", "OrderCancelled"})
STOCK_EVENTS = frozenset({"StockAdded", "StockReserved", "StockReleased", "StockDeducted"})

# What each stock event does to (total, reserved), per unit of its quantity: a reservation
# holds stock for an order, a release gives it back (cancellation), a deduction ships it.
STOCK_EFFECTS: dict[str, tuple[int, int]] = {
    "StockAdded": (1, 0),
    "StockReserved": (0, 1),
    "StockReleased": (0, -1),
    "StockDeducted": (-1, -1),
}

# Order lifecycle: pending -> paid -> shipped, or cancelled before shipping.
ORDER_TRANSITIONS: dict[str, tuple[frozenset[str], str]] = {
    "OrderPaid": (frozenset({"pending"}), "paid"),
    "OrderShipped": (frozenset({"paid"}), "shipped"),
    "OrderCancelled": (frozenset({"pending", "paid"}), "cancelled"),
}


@dataclass(slots=True)
class ProductRow:
    """A row of read_products."""

    product_id: str
    name: str
    description: str
    price: int
    created_at: datetime | None
    updated_at: datetime | None


@dataclass(slots=True)
class CartRow:
    """A row of read_carts; `items` maps product_id to {product_id, quantity, price}."""

    cart_id: str
    user_id: str
    items: dict[str, dict[str, Any]]
    updated_at: datetime | None

    @property
    def total(self) -> int:
        """What the cart costs: sum of quantity x price."""
        return sum(int(i["quantity"]) * int(i["price"]) for i in self.items.values())


@dataclass(slots=True)
class OrderRow:
    """A row of read_orders."""

    order_id: str
    user_id: str
    items: list[dict[str, Any]]
    total: int
    status: str
    cancel_reason: str | None = None
    placed_at: datetime | None = None
    paid_at: datetime | None = None
    shipped_at: datetime | None = None
    cancelled_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(slots=True)
class InventoryDelta:
    """What a batch adds to one product's read_inventory counts."""

    product_id: str
    total: int = 0
    reserved: int = 0
    updated_at: datetime | None = None


@dataclass(slots=True)
class ReadModelBatch:
    """The rows one batch touches: loaded before, changed by `apply`, written after."""

    products: dict[str, ProductRow] = field(default_factory=dict)
    carts: dict[str, CartRow] = field(default_factory=dict)
    orders: dict[str, OrderRow] = field(default_factory=dict)
    inventory: dict[str, InventoryDelta] = field(default_factory=dict)
    changed_products: set[str] = field(default_factory=set)
    deleted_products: set[str] = field(default_factory=set)
    changed_carts: set[str] = field(default_factory=set)
    changed_orders: set[str] = field(default_factory=set)

    def apply(self, event: ShopEvent) -> None:
        """Change the rows as `event` says; raise InvalidTransitionError for a bad order step."""
        kind = event.event_type
        if kind in PRODUCT_EVENTS:
            self._product(event)
        elif kind in STOCK_EVENTS:
            self._stock(event)
        elif kind in CART_EVENTS:
            self._cart(event)
        elif kind in ORDER_EVENTS:
            self._order(event)

    def _product(self, event: ShopEvent) -> None:
        p = event.payload
        product_id = p["product_id"]
        if event.event_type == "ProductDeleted":
            self.products.pop(product_id, None)
            self.changed_products.discard(product_id)
            self.deleted_products.add(product_id)
            return
        row = self.products.get(product_id)
        if row is None:
            # An update for a product we never saw created (the stream was trimmed before
            # this read model started) still carries every field the row needs.
            row = ProductRow(product_id, "", "", 0, event.occurred_at, None)
            self.products[product_id] = row
        if event.event_type == "ProductCreated":
            row.created_at = event.occurred_at
        row.name, row.description, row.price = p["name"], p["description"], p["price"]
        row.updated_at = event.occurred_at
        self.changed_products.add(product_id)
        self.deleted_products.discard(product_id)

    def _stock(self, event: ShopEvent) -> None:
        product_id = event.payload["product_id"]
        delta = self.inventory.setdefault(product_id, InventoryDelta(product_id))
        total_sign, reserved_sign = STOCK_EFFECTS[event.event_type]
        quantity = event.payload["quantity"]
        delta.total += total_sign * quantity
        delta.reserved += reserved_sign * quantity
        delta.updated_at = _latest(delta.updated_at, event.occurred_at)

    def _cart(self, event: ShopEvent) -> None:
        p = event.payload
        cart = self.carts.get(p["cart_id"])
        if cart is None:
            cart = CartRow(p["cart_id"], p["user_id"], {}, None)
            self.carts[cart.cart_id] = cart
        if p["user_id"]:
            cart.user_id = p["user_id"]
        if event.event_type == "ItemAddedToCart":
            item = cart.items.get(p["product_id"])
            quantity = p["quantity"] + (int(item["quantity"]) if item else 0)
            cart.items[p["product_id"]] = {
                "product_id": p["product_id"],
                "quantity": quantity,
                "price": p["price"],
            }
        elif event.event_type == "ItemRemovedFromCart":
            cart.items.pop(p["product_id"], None)
        else:
            cart.items.clear()
        cart.updated_at = event.occurred_at
        self.changed_carts.add(cart.cart_id)

    def _order(self, event: ShopEvent) -> None:
        p = event.payload
        order_id = p["order_id"]
        order = self.orders.get(order_id)
        if event.event_type == "OrderPlaced":
            if order is not None:
                raise InvalidTransitionError(f"order {order_id!r}: placed twice")
            order = OrderRow(order_id, p["user_id"], p["items"], p["total"], "pending")
            order.placed_at = event.occurred_at
            self.orders[order_id] = order
        else:
            if order is None:
                raise InvalidTransitionError(
                    f"order {order_id!r}: {event.event_type} before OrderPlaced"
                )
            allowed, target = ORDER_TRANSITIONS[event.event_type]
            if order.status not in allowed:
                raise InvalidTransitionError(
                    f"order {order_id!r}: {event.event_type} not allowed in status {order.status}"
                )
            order.status = target
            if target == "paid":
                order.paid_at = event.occurred_at
            elif target == "shipped":
                order.shipped_at = event.occurred_at
            else:
                order.cancelled_at = event.occurred_at
                order.cancel_reason = p["reason"]
        order.updated_at = event.occurred_at
        self.changed_orders.add(order_id)


def _latest(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)
