"""The shop projection on a real PostgreSQL: each event's effect, the seed scenario, the guard."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from consumer.errors import ConfigError
from consumer.record import ChangeRecord
from projections.results import Counts
from projections.scenarios.shop import (
    ConcurrentUpdateError,
    InvalidEventError,
    InvalidTransitionError,
    ShopProjection,
    VersionGapError,
)
from tests.fixtures.servers import wait_until
from tests.projections.scenarios.shop.scenario import (
    T0,
    EventStore,
    dump,
    in_batches,
    records,
    redelivered,
    shop_scenario,
    truncate,
)

pytestmark = pytest.mark.integration


def query(pool: ConnectionPool, statement: str) -> list[tuple[Any, ...]]:
    with pool.connection() as conn:
        return conn.execute(statement).fetchall()


def snapshot(pool: ConnectionPool) -> dict[str, list[tuple[Any, ...]]]:
    with pool.connection() as conn:
        return dump(conn)


def apply_all(shop: ShopProjection, recs: list[ChangeRecord], size: int = 7) -> Counts:
    total = Counts()
    for batch in in_batches(recs, size):
        total += shop.apply(batch).counts()
    return total


def test_the_seed_scenario_builds_the_expected_read_models(
    shop: ShopProjection, pool: ConnectionPool
) -> None:
    recs = records(shop_scenario().events)
    outcome = apply_all(shop, recs)
    assert outcome == Counts(applied=len(recs))
    assert query(pool, "SELECT product_id, name, description, price FROM read_products") == [
        ("p1", "Tシャツ", "綿100% 日本製", 1800),
        ("p2", "マグカップ", "", 1200),
    ]
    assert query(pool, "SELECT * FROM read_inventory ORDER BY product_id") == [
        ("p1", 97, 1, 96, T0 + timedelta(seconds=28)),
        ("p2", 48, 0, 48, T0 + timedelta(seconds=25)),
    ]
    assert query(pool, "SELECT cart_id, user_id, items, total FROM read_carts ORDER BY 1") == [
        ("cart-u1", "u1", [], 0),
        ("cart-u2", "u2", [{"product_id": "p1", "quantity": 1, "price": 1800}], 1800),
    ]
    orders = query(
        pool, "SELECT order_id, status, total, cancel_reason, items FROM read_orders ORDER BY 1"
    )
    assert [o[:4] for o in orders] == [
        ("o1", "shipped", 7800, None),
        ("o2", "cancelled", 6000, "changed my mind"),
        ("o3", "paid", 1800, None),
    ]
    assert orders[0][4][0] == {
        "product_id": "p1",
        "product_name": "Tシャツ",
        "quantity": 3,
        "price": 1800,
    }
    assert dict(query(pool, "SELECT aggregate_id, version FROM shop_aggregate_versions")) == {
        "product-p1": 2,
        "product-p2": 1,
        "product-p3": 2,
        "inventory-p1": 4,
        "inventory-p2": 5,
        "cart-u1": 8,
        "cart-u2": 1,
        "order-o1": 3,
        "order-o2": 2,
        "order-o3": 2,
    }


def test_replaying_the_stream_twice_leaves_the_read_model_identical(
    shop: ShopProjection, pool: ConnectionPool
) -> None:
    recs = records(shop_scenario().events)
    apply_all(shop, recs, size=7)
    once = snapshot(pool)
    # A replay from TRIM_HORIZON after losing the checkpoint, in differently sized batches.
    assert apply_all(shop, recs, size=5) == Counts(stale=len(recs))
    assert snapshot(pool) == once


def test_injected_duplicates_leave_the_read_model_identical(
    shop: ShopProjection, pool: ConnectionPool, pg_dsn: str
) -> None:
    recs = records(shop_scenario().events)
    apply_all(shop, recs)
    clean = snapshot(pool)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        truncate(conn)
    # Every third record is delivered again a few records later (and once in the same batch).
    noisy: list[ChangeRecord] = []
    for n, record in enumerate(recs):
        noisy.append(record)
        if n % 3 == 0 and n >= 2:
            noisy.append(redelivered(recs[n - 2], 1000 + n))
        if n % 3 == 1:
            noisy.append(redelivered(record, 2000 + n))
    outcome = apply_all(shop, noisy)
    assert outcome == Counts(applied=len(recs), stale=len(noisy) - len(recs))
    assert snapshot(pool) == clean


def apply_events(shop: ShopProjection, store: EventStore, start: int) -> Counts:
    """Apply the events appended to `store` since `start`, as one batch."""
    return shop.apply(records(store.events[start:], start=start)).counts()


def test_stock_events_move_total_reserved_and_available(
    shop: ShopProjection, pool: ConnectionPool
) -> None:
    s = EventStore()
    steps = [
        ("StockAdded", 100, (100, 0, 100)),
        ("StockReserved", 30, (100, 30, 70)),
        ("StockReleased", 10, (100, 20, 80)),
        ("StockDeducted", 20, (80, 0, 80)),
        ("StockAdded", 5, (85, 0, 85)),
    ]
    for n, (event_type, quantity, expected) in enumerate(steps):
        s.append("inventory-p1", event_type, product_id="p1", order_id="o1", quantity=quantity)
        assert apply_events(shop, s, n) == Counts(applied=1)
        got = query(pool, "SELECT total, reserved, available FROM read_inventory")
        assert got == [expected], event_type


def test_product_events_create_update_and_delete_the_row(
    shop: ShopProjection, pool: ConnectionPool
) -> None:
    s = EventStore()
    s.append("product-p1", "ProductCreated", product_id="p1", name="a", description="d",
             price=100, stock=3)  # fmt: skip
    apply_events(shop, s, 0)
    assert query(pool, "SELECT name, description, price, created_at FROM read_products") == [
        ("a", "d", 100, T0)
    ]
    s.append("product-p1", "ProductUpdated", product_id="p1", name="b", price=90)
    apply_events(shop, s, 1)
    columns = "name, description, price, created_at, updated_at"
    assert query(pool, f"SELECT {columns} FROM read_products") == [
        ("b", "", 90, T0, T0 + timedelta(seconds=1))
    ]
    s.append("product-p1", "ProductDeleted", product_id="p1")
    apply_events(shop, s, 2)
    assert query(pool, "SELECT * FROM read_products") == []


def test_cart_events_add_merge_remove_and_clear_items(
    shop: ShopProjection, pool: ConnectionPool
) -> None:
    s = EventStore()
    cart = {"cart_id": "c1", "user_id": "u1"}

    def items() -> list[tuple[Any, ...]]:
        return query(pool, "SELECT items, total FROM read_carts")

    s.append("cart-c1", "ItemAddedToCart", **cart, product_id="p1", quantity=2, price=100)
    s.append("cart-c1", "ItemAddedToCart", **cart, product_id="p2", quantity=1, price=50)
    apply_events(shop, s, 0)
    assert items() == [
        (
            [
                {"product_id": "p1", "quantity": 2, "price": 100},
                {"product_id": "p2", "quantity": 1, "price": 50},
            ],
            250,
        )
    ]
    s.append("cart-c1", "ItemAddedToCart", **cart, product_id="p1", quantity=3, price=90)
    apply_events(shop, s, 2)
    assert items()[0][0][0] == {"product_id": "p1", "quantity": 5, "price": 90}
    s.append("cart-c1", "ItemRemovedFromCart", **cart, product_id="p1")
    apply_events(shop, s, 3)
    assert items() == [([{"product_id": "p2", "quantity": 1, "price": 50}], 50)]
    s.append("cart-c1", "CartCleared", **cart)
    apply_events(shop, s, 4)
    assert items() == [([], 0)]


def test_orders_go_pending_paid_shipped_or_cancelled(
    shop: ShopProjection, pool: ConnectionPool
) -> None:
    s = EventStore()
    item = [{"product_id": "p1", "quantity": 1, "price": 10}]
    for order in ("o1", "o2", "o3"):
        s.append(f"order-{order}", "OrderPlaced", order_id=order, user_id="u", items=item,
                 total=10)  # fmt: skip
    apply_events(shop, s, 0)

    def statuses() -> dict[str, str]:
        return dict(query(pool, "SELECT order_id, status FROM read_orders"))

    assert statuses() == {"o1": "pending", "o2": "pending", "o3": "pending"}
    s.append("order-o1", "OrderPaid", order_id="o1")
    s.append("order-o2", "OrderCancelled", order_id="o2", reason="r")
    s.append("order-o3", "OrderPaid", order_id="o3")
    apply_events(shop, s, 3)
    assert statuses() == {"o1": "paid", "o2": "cancelled", "o3": "paid"}
    s.append("order-o1", "OrderShipped", order_id="o1")
    s.append("order-o3", "OrderCancelled", order_id="o3", reason="late")
    apply_events(shop, s, 6)
    assert statuses() == {"o1": "shipped", "o2": "cancelled", "o3": "cancelled"}
    assert query(pool, "SELECT placed_at, paid_at, shipped_at FROM read_orders "
                 "WHERE order_id = 'o1'") == [(T0, T0 + timedelta(seconds=3),
                                               T0 + timedelta(seconds=6))]  # fmt: skip


@pytest.mark.parametrize(
    ("event_type", "after"),
    [("OrderShipped", "placed"), ("OrderPaid", "cancelled"), ("OrderCancelled", "shipped")],
)
def test_an_order_step_its_lifecycle_forbids_is_poison(
    shop: ShopProjection, event_type: str, after: str
) -> None:
    s = EventStore()
    s.append("order-o1", "OrderPlaced", order_id="o1", items=[], total=0)
    if after == "cancelled":
        s.append("order-o1", "OrderCancelled", order_id="o1")
    if after == "shipped":
        s.append("order-o1", "OrderPaid", order_id="o1")
        s.append("order-o1", "OrderShipped", order_id="o1")
    apply_events(shop, s, 0)
    s.append("order-o1", event_type, order_id="o1")
    with pytest.raises(InvalidTransitionError, match=event_type):
        apply_events(shop, s, len(s.events) - 1)


def test_a_version_gap_raises_and_rolls_the_whole_batch_back(
    shop: ShopProjection, pool: ConnectionPool
) -> None:
    s = EventStore()
    s.append("inventory-p1", "StockAdded", product_id="p1", quantity=10)
    apply_events(shop, s, 0)
    before = snapshot(pool)
    s.append("inventory-p2", "StockAdded", product_id="p2", quantity=5)  # fine on its own
    s.append("inventory-p1", "StockReserved", product_id="p1", quantity=1)  # v2: lost
    s.append("inventory-p1", "StockReserved", product_id="p1", quantity=2)  # v3
    batch = records(s.events)
    with pytest.raises(VersionGapError) as raised:
        shop.apply([batch[1], batch[3]])
    assert (raised.value.aggregate_id, raised.value.stored_version) == ("inventory-p1", 1)
    assert raised.value.event_version == 3
    assert "inventory-p1" in str(raised.value)
    assert snapshot(pool) == before


def test_a_first_event_that_is_not_version_1_is_a_gap(shop: ShopProjection) -> None:
    s = EventStore()
    s.append("inventory-p1", "StockAdded", product_id="p1", quantity=10)
    s.append("inventory-p1", "StockAdded", product_id="p1", quantity=10)
    with pytest.raises(VersionGapError):
        shop.apply(records(s.events)[1:])


def test_records_that_are_not_shop_events_are_filtered(
    shop: ShopProjection, pool: ConnectionPool
) -> None:
    s = EventStore()
    s.append("inventory-p1", "StockAdded", product_id="p1", quantity=10)
    event = records(s.events)[0]
    others = [
        replace(event, event_name="MODIFY"),
        replace(event, event_name="REMOVE", new_image=None, old_image=event.new_image),
        replace(event, table="snapshots"),
        replace(event, new_image={"PK": "PRODUCT#1", "SK": "METADATA", "Stock": 3}),
    ]
    scoped = ShopProjection("scoped", pool, events_table="events")
    assert scoped.apply(others).counts() == Counts(filtered=4)
    assert snapshot(pool)["read_inventory"] == []


def test_an_unknown_event_type_advances_the_version_without_a_gap(
    shop: ShopProjection, pool: ConnectionPool
) -> None:
    s = EventStore()
    s.append("inventory-p1", "StockAdded", product_id="p1", quantity=10)
    s.append("inventory-p1", "StockAudited", product_id="p1")
    s.append("inventory-p1", "StockReserved", product_id="p1", quantity=4)
    assert shop.apply(records(s.events)).counts() == Counts(applied=2, filtered=1)
    assert query(pool, "SELECT total, reserved FROM read_inventory") == [(10, 4)]


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"product_id": "p1"}, "quantity"),
        ({"product_id": "p1", "quantity": "3"}, "quantity"),
        ({"product_id": 7, "quantity": 3}, "product_id"),
        ("not json", "data"),
        (None, "data"),
    ],
)
def test_a_malformed_payload_is_poison_naming_the_field(
    shop: ShopProjection, pool: ConnectionPool, data: Any, field: str
) -> None:
    record = records([replace(EventStore().append("inventory-p1", "StockAdded"))])[0]
    bad = replace(record, new_image={**record.new_image, "data": data})  # type: ignore[dict-item]
    with pytest.raises(InvalidEventError, match=repr(field)) as raised:
        shop.apply([bad])
    assert raised.value.field == field


def test_a_payload_stored_as_a_json_string_is_accepted(
    shop: ShopProjection, pool: ConnectionPool
) -> None:
    record = records([EventStore().append("inventory-p1", "StockAdded")])[0]
    as_json = replace(
        record,
        new_image={**record.new_image, "data": '{"product_id": "p1", "quantity": 7}'},  # type: ignore[dict-item]
    )
    assert shop.apply([as_json]).counts() == Counts(applied=1)
    assert query(pool, "SELECT total FROM read_inventory") == [(7,)]


def test_the_version_guard_stops_two_writers_applying_one_reservation_twice(
    shop: ShopProjection, pool: ConnectionPool, pg_dsn: str
) -> None:
    """Two workers apply the same batch at once (a lease changing hands): one must lose.

    Both load version 1 before either writes: a table lock held by a third connection keeps
    their writes waiting until both are blocked. Without the compare-and-set in the WHERE of
    ON CONFLICT DO UPDATE both commit and the reservation counts twice (60).
    """
    s = EventStore()
    s.append("inventory-p1", "StockAdded", product_id="p1", quantity=100)
    s.append("inventory-p1", "StockReserved", product_id="p1", order_id="o1", quantity=30)
    recs = records(s.events)
    shop.apply(recs[:1])
    other = ShopProjection("shop-b", pool)
    results: dict[str, Any] = {}

    def run(projection: ShopProjection) -> None:
        try:
            results[projection.name] = projection.apply(recs[1:]).counts()
        except ConcurrentUpdateError as exc:
            results[projection.name] = exc

    with psycopg.connect(pg_dsn) as locker:
        locker.execute("LOCK TABLE shop_aggregate_versions IN SHARE ROW EXCLUSIVE MODE")
        threads = [threading.Thread(target=run, args=(p,), daemon=True) for p in (shop, other)]
        for thread in threads:
            thread.start()
        wait_until(
            lambda: (
                locker.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock'"
                ).fetchone()
                == (2,)
            ),
            timeout=10,
            what="both writers blocked after loading version 1",
        )
        locker.commit()
    for thread in threads:
        thread.join(timeout=10)
    assert query(pool, "SELECT total, reserved, available FROM read_inventory") == [(100, 30, 70)]
    outcomes = sorted(results.values(), key=lambda r: isinstance(r, Counts))
    assert isinstance(outcomes[0], ConcurrentUpdateError)
    assert outcomes[1] == Counts(applied=1)
    # The loser's retry sees the event as already applied.
    assert other.apply(recs[1:]).counts() == Counts(stale=1)


def test_migrate_twice_changes_nothing(shop: ShopProjection, pool: ConnectionPool) -> None:
    shop.apply(records(shop_scenario().events))
    before = snapshot(pool)
    shop.migrate()
    assert snapshot(pool) == before


class _Resources:
    """The daemon's resources as far as this projection needs them: the real pool."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool

    def aws_client(self, service: str) -> Any:
        raise AssertionError("the shop projection needs no AWS client")

    def postgres_pool(self) -> ConnectionPool:
        return self.pool


def test_from_config_writes_to_the_configured_schema_and_tables(pool: ConnectionPool) -> None:
    settings = {
        "schema": "shop",
        "tables": {"inventory": "stock_levels"},
        "events_table": "events",
        "pool_timeout": 2,
        "strategy": "executemany",
    }
    projection = ShopProjection.from_config("shop", settings, _Resources(pool))
    projection.migrate()
    s = EventStore()
    s.append("inventory-p1", "StockAdded", product_id="p1", quantity=3)
    assert projection.apply(records(s.events)).counts() == Counts(applied=1)
    assert query(pool, "SELECT product_id, total FROM shop.stock_levels") == [("p1", 3)]


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"tabels": {}}, "tabels"),
        ({"tables": {"cart": "x"}}, "tables.cart"),
        ({"attributes": {"payload": 3}}, "attributes.payload"),
        ({"pool_timeout": "soon"}, "pool_timeout"),
        ({"strategy": "fast"}, "strategy"),
    ],
)
def test_bad_settings_fail_naming_the_setting(
    pool: ConnectionPool, settings: dict[str, Any], named: str
) -> None:
    with pytest.raises(ConfigError, match=rf"^{named}:"):
        ShopProjection.from_config("shop", settings, _Resources(pool))
