"""Daily sales totals (scenario 4) from the shop's OrderPlaced and OrderCancelled events.

`daily_sales` has one row per day (UTC) an order was placed: orders placed and their total,
orders of that day later cancelled and their total, and the net (placed minus cancelled,
computed by PostgreSQL). A cancellation counts against the day the order was placed, so a
day's net is what that day's orders are worth now. `daily_sales_orders` remembers each
order's day and total (OrderCancelled carries only the order id).

Exactly once: these are deltas, so each event must count once however often it is delivered.
In the batch's transaction, the events' (aggregate_id, version) pairs are inserted into
`daily_sales_applied` with `ON CONFLICT DO NOTHING RETURNING`: only the pairs that come back
were new, and only those move a total. A duplicate in the batch, a replay and a concurrent
worker (its insert waits on our uncommitted row, then does nothing) all count zero. An order
is cancelled at most once (its row's `cancelled` flag), and a cancellation of an order this
projection never saw placed (a stream read from LATEST) is recorded but moves no total.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import psycopg
import structlog
from psycopg import sql
from psycopg_pool import ConnectionPool
from pydantic import Field

from projections.api import (
    BaseProjection,
    ChangeRecord,
    ProjectionSettings,
    Resources,
    Results,
    Text,
    batch_transaction,
    translate_errors,
)
from projections.scenarios.shop.events import EventAttributes, ShopEvent, parse_event

log = structlog.get_logger(__name__)

DEFAULT_POOL_TIMEOUT = 5.0
EVENTS = frozenset({"OrderPlaced", "OrderCancelled"})
_MIGRATE_LOCK = 0x5350_4441_4C59  # "SPDALY"
# An event with neither created_at nor a stream time (hand-made records only) counts on 1970-01-01.
_NO_TIME = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class SalesTables:
    """Where daily sales are written."""

    schema: str = "public"
    totals: str = "daily_sales"
    orders: str = "daily_sales_orders"
    applied: str = "daily_sales_applied"


_DDL = (
    """CREATE TABLE IF NOT EXISTS {totals} (
        day date PRIMARY KEY,
        orders_placed bigint NOT NULL,
        placed_total bigint NOT NULL,
        orders_cancelled bigint NOT NULL,
        cancelled_total bigint NOT NULL,
        net_total bigint GENERATED ALWAYS AS (placed_total - cancelled_total) STORED
    )""",
    """CREATE TABLE IF NOT EXISTS {orders} (
        order_id text PRIMARY KEY,
        day date NOT NULL,
        total bigint NOT NULL,
        cancelled boolean NOT NULL DEFAULT false
    )""",
    """CREATE TABLE IF NOT EXISTS {applied} (
        aggregate_id text NOT NULL,
        version bigint NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (aggregate_id, version)
    )""",
)


@dataclass(slots=True)
class _Day:
    placed: int = 0
    placed_total: int = 0
    cancelled: int = 0
    cancelled_total: int = 0


class DailySalesSettings(ProjectionSettings):
    """Where the totals go, and how long to wait for a pooled connection (seconds)."""

    schema_: Text = Field("public", alias="schema")
    totals_table: Text = "daily_sales"
    orders_table: Text = "daily_sales_orders"
    applied_table: Text = "daily_sales_applied"
    pool_timeout: float = Field(DEFAULT_POOL_TIMEOUT, gt=0)


class DailySalesProjection(BaseProjection):
    """Adds each OrderPlaced to its day and takes each OrderCancelled off, exactly once."""

    settings_model = DailySalesSettings

    def __init__(
        self,
        name: str,
        pool: ConnectionPool,
        tables: SalesTables | None = None,
        attributes: EventAttributes | None = None,
        pool_timeout: float = DEFAULT_POOL_TIMEOUT,
    ) -> None:
        super().__init__(name)
        self.pool = pool
        self.tables = tables or SalesTables()
        self.attributes = attributes or EventAttributes()
        self.pool_timeout = pool_timeout
        t = self.tables
        self._names = {
            role: sql.Identifier(t.schema, getattr(t, role))
            for role in ("totals", "orders", "applied")
        }

    @classmethod
    def from_settings(
        cls, name: str, settings: DailySalesSettings, resources: Resources
    ) -> DailySalesProjection:
        """Built on the shared PostgreSQL pool."""
        tables = SalesTables(
            settings.schema_, settings.totals_table, settings.orders_table, settings.applied_table
        )
        return cls(name, resources.postgres_pool(), tables, pool_timeout=settings.pool_timeout)

    def migrate(self) -> None:
        """Create the schema and the three tables if absent (idempotent)."""
        with (
            translate_errors(f"projection {self.name}"),
            self.pool.connection() as conn,
            conn.transaction(),
        ):
            conn.execute("SELECT pg_advisory_xact_lock(%s)", [_MIGRATE_LOCK])
            schema = sql.Identifier(self.tables.schema)
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
            for ddl in _DDL:
                conn.execute(sql.SQL(ddl).format(**self._names))

    def apply(self, records: Sequence[ChangeRecord]) -> Results:
        """Count the batch's new order events in one transaction; see the module docstring.

        Stale: an event counted before (replay, duplicate), an order placed again under another
        version, a second cancellation. Filtered: other events, and the cancellation of an
        order this projection never saw placed.
        """
        results = Results()
        events: list[tuple[ChangeRecord, ShopEvent]] = []
        for record in records:
            event = parse_event(record, self.attributes)
            if event is None or event.event_type not in EVENTS:
                results.filtered(record)
            else:
                events.append((record, event))
        if not events:
            return results
        with batch_transaction(self.pool, self.pool_timeout, f"projection {self.name}") as conn:
            new = self._claim(conn, [event for _, event in events])
            # A pair claimed once stands for its first occurrence only (duplicates in a batch).
            firsts: list[tuple[ChangeRecord, ShopEvent]] = []
            for record, event in events:
                pair = (event.aggregate_id, event.version)
                if pair in new:
                    new.discard(pair)
                    firsts.append((record, event))
                else:
                    results.stale(record)
            self._count(conn, firsts, results)
        return results

    def _claim(
        self, conn: psycopg.Connection[Any], events: list[ShopEvent]
    ) -> set[tuple[str, int]]:
        """Insert the events' (aggregate_id, version); return the pairs that were new."""
        rows = conn.execute(
            sql.SQL(
                "INSERT INTO {} (aggregate_id, version) SELECT * FROM unnest(%s::text[], "
                "%s::bigint[]) ON CONFLICT DO NOTHING RETURNING aggregate_id, version"
            ).format(self._names["applied"]),
            [[e.aggregate_id for e in events], [e.version for e in events]],
        ).fetchall()
        return {(aggregate, int(version)) for aggregate, version in rows}

    def _count(
        self,
        conn: psycopg.Connection[Any],
        events: list[tuple[ChangeRecord, ShopEvent]],
        results: Results,
    ) -> None:
        """Apply new events to the orders and day totals, reporting each record's outcome."""
        if not events:
            return
        order_ids = sorted({e.payload["order_id"] for _, e in events})
        cancelled_ids = sorted(
            {e.payload["order_id"] for _, e in events if e.event_type == "OrderCancelled"}
        )
        # order_id -> [day, total, cancelled, placed in this batch]
        orders: dict[str, list[Any]] = {}
        # Locked: a concurrent cancellation of the same order waits for our commit.
        for order_id, day, total, cancelled in conn.execute(
            sql.SQL(
                "SELECT order_id, day, total, cancelled FROM {} "
                "WHERE order_id = ANY(%s::text[]) FOR UPDATE"
            ).format(self._names["orders"]),
            [order_ids],
        ):
            orders[order_id] = [day, int(total), cancelled, False]
        days: dict[date, _Day] = {}
        placed: list[tuple[str, date, int]] = []
        for record, event in events:
            order_id = event.payload["order_id"]
            if event.event_type == "OrderPlaced":
                if order_id in orders:
                    results.stale(record)  # placed twice under two versions: the first counts
                    continue
                day = (event.occurred_at or _NO_TIME).astimezone(UTC).date()
                total = int(event.payload["total"])
                orders[order_id] = [day, total, False, True]
                placed.append((order_id, day, total))
                bucket = days.setdefault(day, _Day())
                bucket.placed += 1
                bucket.placed_total += total
                results.applied(record)
                continue
            order = orders.get(order_id)
            if order is None or order[2]:
                log.warning(
                    "daily_sales.cancel_without_order" if order is None else "daily_sales.recancel",
                    projection=self.name,
                    order_id=order_id,
                )
                if order is None:
                    results.filtered(record)
                else:
                    results.stale(record)
                continue
            order[2] = True
            bucket = days.setdefault(order[0], _Day())
            bucket.cancelled += 1
            bucket.cancelled_total += order[1]
            results.applied(record)
        self._write(conn, placed, orders, cancelled_ids, days)

    def _write(
        self,
        conn: psycopg.Connection[Any],
        placed: list[tuple[str, date, int]],
        orders: dict[str, list[Any]],
        cancelled_ids: list[str],
        days: dict[date, _Day],
    ) -> None:
        n = self._names
        with conn.pipeline():
            if placed:
                conn.execute(
                    sql.SQL(
                        "INSERT INTO {} (order_id, day, total) SELECT * FROM unnest(%s::text[], "
                        "%s::date[], %s::bigint[]) ON CONFLICT DO NOTHING"
                    ).format(n["orders"]),
                    [list(column) for column in zip(*placed, strict=True)],
                )
            now_cancelled = [oid for oid in cancelled_ids if oid in orders and orders[oid][2]]
            if now_cancelled:
                conn.execute(
                    sql.SQL(
                        "UPDATE {} SET cancelled = true WHERE order_id = ANY(%s::text[])"
                    ).format(n["orders"]),
                    [now_cancelled],
                )
            if days:
                ordered = sorted(days.items())
                conn.execute(
                    sql.SQL(
                        "INSERT INTO {} AS t (day, orders_placed, placed_total, orders_cancelled, "
                        "cancelled_total) SELECT * FROM unnest(%s::date[], %s::bigint[], "
                        "%s::bigint[], %s::bigint[], %s::bigint[]) ON CONFLICT (day) DO UPDATE SET "
                        "orders_placed = t.orders_placed + EXCLUDED.orders_placed, "
                        "placed_total = t.placed_total + EXCLUDED.placed_total, "
                        "orders_cancelled = t.orders_cancelled + EXCLUDED.orders_cancelled, "
                        "cancelled_total = t.cancelled_total + EXCLUDED.cancelled_total"
                    ).format(n["totals"]),
                    [
                        [d for d, _ in ordered],
                        [b.placed for _, b in ordered],
                        [b.placed_total for _, b in ordered],
                        [b.cancelled for _, b in ordered],
                        [b.cancelled_total for _, b in ordered],
                    ],
                )
