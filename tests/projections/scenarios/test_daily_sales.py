"""Daily sales on a real PostgreSQL: OrderPlaced/OrderCancelled counted exactly once."""

from __future__ import annotations

import threading
from collections import defaultdict, deque
from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg_pool import ConnectionPool

from consumer.record import ChangeRecord
from projections.results import Counts
from projections.scenarios.daily_sales import DailySalesProjection
from tests.projections.scenarios.shop.scenario import (
    in_batches,
    records,
    redelivered,
    shop_scenario,
)

pytestmark = pytest.mark.integration

DAY = 86_400


def scenario() -> list[ChangeRecord]:
    """The shop scenario (day 1: o1 and o3 placed, o2 placed and cancelled), then day 2:
    o4 placed, o3 (placed on day 1) cancelled, o5 placed and cancelled the same day."""
    store = shop_scenario()
    day_one = len(store.events)
    o4_items = [{"product_id": "p1", "quantity": 2, "price": 2500}]
    store.append("order-o4", "OrderPlaced", order_id="o4", user_id="u3", items=o4_items, total=5000)
    store.append("order-o3", "OrderCancelled", order_id="o3", reason="late")
    o5_items = [{"product_id": "p2", "quantity": 1, "price": 1200}]
    store.append("order-o5", "OrderPlaced", order_id="o5", user_id="u3", items=o5_items, total=1200)
    store.append("order-o5", "OrderCancelled", order_id="o5")
    return records(store.events[:day_one]) + records(store.events[day_one:], start=DAY)


IN_ORDER = scenario()
EXPECTED = [
    # day, placed, placed total, cancelled, cancelled total, net
    (date(2025, 4, 1), 3, 7800 + 6000 + 1800, 2, 6000 + 1800, 7800),
    (date(2025, 4, 2), 2, 5000 + 1200, 1, 1200, 5000),
]


@pytest.fixture
def pool(pg_dsn: str) -> Iterator[ConnectionPool]:
    with ConnectionPool(pg_dsn, min_size=1, max_size=4) as p:
        yield p


@pytest.fixture
def sales(pool: ConnectionPool) -> DailySalesProjection:
    projection = DailySalesProjection("daily_sales", pool)
    projection.migrate()
    projection.migrate()
    return projection


def totals(pool: ConnectionPool) -> list[tuple[Any, ...]]:
    with pool.connection() as conn:
        return conn.execute(
            "SELECT day, orders_placed, placed_total, orders_cancelled, cancelled_total, "
            "net_total FROM daily_sales ORDER BY day"
        ).fetchall()


def dump(pool: ConnectionPool) -> dict[str, list[tuple[Any, ...]]]:
    """The whole read model (applied_at is when, not what, so it is left out)."""
    with pool.connection() as conn:
        return {
            "totals": totals(pool),
            "orders": conn.execute("SELECT * FROM daily_sales_orders ORDER BY 1").fetchall(),
            "applied": conn.execute(
                "SELECT aggregate_id, version FROM daily_sales_applied ORDER BY 1, 2"
            ).fetchall(),
        }


def truncate(pool: ConnectionPool) -> None:
    with pool.connection() as conn:
        conn.execute("TRUNCATE daily_sales, daily_sales_orders, daily_sales_applied")


def test_totals_per_day_with_cancellations_against_the_day_of_the_order(
    sales: DailySalesProjection, pool: ConnectionPool
) -> None:
    outcome = sales.apply(IN_ORDER)
    assert outcome.counts() == Counts(applied=8, filtered=len(IN_ORDER) - 8)
    assert totals(pool) == EXPECTED


def test_replay_twice_and_duplicate_injection_leave_the_read_model_identical(
    sales: DailySalesProjection, pool: ConnectionPool
) -> None:
    for batch in in_batches(IN_ORDER, 7):
        sales.apply(batch)
    first = dump(pool)
    assert first["totals"] == EXPECTED
    for _ in range(2):
        assert sales.apply(IN_ORDER).counts().applied == 0
    # The same events delivered again at new positions, inside one batch and across batches.
    orders = [r for r in IN_ORDER if r.new_image["event_type"].startswith("Order")]
    dupes = [redelivered(r, 50_000 + n) for n, r in enumerate(orders)]
    assert sales.apply(dupes + dupes).counts().applied == 0
    assert dump(pool) == first


def test_a_batch_applied_by_two_workers_at_once_counts_once(
    sales: DailySalesProjection, pool: ConnectionPool, pg_dsn: str
) -> None:
    # A lease changing hands: the old owner and the new one apply the same batch concurrently.
    with ConnectionPool(pg_dsn, min_size=1, max_size=2) as other_pool:
        other = DailySalesProjection("daily_sales", other_pool)
        start = threading.Barrier(2)
        outcomes: list[Counts] = []

        def run(projection: DailySalesProjection) -> None:
            start.wait()
            outcomes.append(projection.apply(IN_ORDER).counts())

        threads = [threading.Thread(target=run, args=(p,), daemon=True) for p in (sales, other)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert sorted(o.applied for o in outcomes) == [0, 8]
    assert totals(pool) == EXPECTED


def test_other_events_and_records_are_filtered(sales: DailySalesProjection) -> None:
    not_orders = [r for r in IN_ORDER if not r.new_image["event_type"].startswith("Order")]
    assert sales.apply(not_orders).counts() == Counts(filtered=len(not_orders))


@st.composite
def deliveries(draw: st.DrawFn) -> list[list[ChangeRecord]]:
    """Aggregates interleaved (each in its order), records redelivered later, any batching."""
    per_aggregate: dict[str, deque[ChangeRecord]] = defaultdict(deque)
    for record in IN_ORDER:
        per_aggregate[str(record.partition_key)].append(record)
    order = draw(st.permutations([str(r.partition_key) for r in IN_ORDER]))
    stream = [per_aggregate[tag].popleft() for tag in order]
    repeats = draw(
        st.lists(st.tuples(st.integers(0, len(stream) - 1), st.integers(0, 10)), max_size=10)
    )
    later: dict[int, list[ChangeRecord]] = defaultdict(list)
    for n, (index, delay) in enumerate(repeats):
        later[min(index + delay, len(stream) - 1)].append(redelivered(stream[index], 20_000 + n))
    delivered: list[ChangeRecord] = []
    for index, record in enumerate(stream):
        delivered.append(record)
        delivered.extend(later[index])
    return in_batches(delivered, draw(st.integers(1, 12)))


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=deliveries())
def test_any_interleaving_and_duplication_gives_the_in_order_read_model(
    sales: DailySalesProjection, pool: ConnectionPool, batches: list[list[ChangeRecord]]
) -> None:
    truncate(pool)
    sales.apply(IN_ORDER)
    expected = dump(pool)
    truncate(pool)
    for batch in batches:
        sales.apply(batch)
    assert dump(pool) == expected
