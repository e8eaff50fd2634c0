"""The shop event store projected into PostgreSQL read models, exactly once per event.

Events are deltas (StockReserved 30), so each must take effect once although the stream
delivers at least once. The guard is the aggregate version, kept per aggregate in the
versions table:

- version <= stored version: already applied (a replay or a duplicate): `stale`.
- version == stored + 1: applied.
- version > stored + 1: a gap. Per-aggregate order is guaranteed within a shard (the
  partition key is the aggregate id), so a gap means events were lost or skipped upstream
  (trimmed by retention, dead-lettered, written around the stream). Nothing of the batch is
  written and `VersionGapError` (a PoisonError) names the aggregate and both versions, so the
  failure-handling layer isolates and dead-letters the record. Later events of that aggregate
  then gap as well until an operator repairs it (backfill or redrive): a read model built
  across a hole would be silently wrong.

A batch is one transaction: one round trip loads the stored versions and the rows the batch
touches, Python applies the events in order, one pipelined round trip writes everything. The
version write is a compare-and-set in the WHERE of ON CONFLICT DO UPDATE (`t.version =
EXCLUDED.base_version`), so two workers applying the same events at once (a lease changing
hands) cannot both succeed: the loser sees fewer rows written and raises
`ConcurrentUpdateError` (transient); its retry finds the events stale.

Records that are not shop events (other tables, MODIFY/REMOVE, items without event_type) are
`filtered`. Unknown event types of an aggregate still advance its version, so they do not look
like gaps, and count as `filtered`.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import orjson
import psycopg
from psycopg_pool import ConnectionPool
from pydantic import Field

from projections.api import (
    BaseProjection,
    ChangeRecord,
    GuardedUpsert,
    ProjectionSettings,
    Resources,
    Results,
    Text,
    batch_transaction,
    translate_errors,
)
from projections.scenarios.shop.errors import ConcurrentUpdateError, VersionGapError
from projections.scenarios.shop.events import EventAttributes, ShopEvent, parse_event
from projections.scenarios.shop.read_models import (
    CART_EVENTS,
    ORDER_EVENTS,
    PRODUCT_EVENTS,
    CartRow,
    OrderRow,
    ProductRow,
    ReadModelBatch,
)
from projections.scenarios.shop.schema import ShopTables, create_tables
from projections.sinks.postgres import DEFAULT_STRATEGY, Strategy, delete_keys, select_keys

DEFAULT_POOL_TIMEOUT = 5.0
_ORDER_COLUMNS = (
    ("order_id", "text"),
    ("user_id", "text"),
    ("items", "jsonb"),
    ("total", "bigint"),
    ("status", "text"),
    ("cancel_reason", "text"),
    ("placed_at", "timestamptz"),
    ("paid_at", "timestamptz"),
    ("shipped_at", "timestamptz"),
    ("cancelled_at", "timestamptz"),
    ("updated_at", "timestamptz"),
)


class ShopTableNames(ProjectionSettings):
    """`[...settings.tables]`: the name of each table, in `schema`."""

    products: Text = "read_products"
    carts: Text = "read_carts"
    orders: Text = "read_orders"
    inventory: Text = "read_inventory"
    versions: Text = "shop_aggregate_versions"


class EventAttributeNames(ProjectionSettings):
    """`[...settings.attributes]`: the attribute names of an event item."""

    aggregate_id: Text = "aggregate_id"
    version: Text = "version"
    event_type: Text = "event_type"
    payload: Text = "data"
    created_at: Text = "created_at"


class ShopSettings(ProjectionSettings):
    """Where the read models go, how events are named, and how rows are shipped."""

    schema_: Text = Field("public", alias="schema")
    tables: ShopTableNames = Field(default_factory=ShopTableNames)
    attributes: EventAttributeNames = Field(default_factory=EventAttributeNames)
    # Only records of this source table are events (default: every record).
    events_table: Text | None = None
    pool_timeout: float = Field(DEFAULT_POOL_TIMEOUT, gt=0)
    strategy: Strategy = Field(DEFAULT_STRATEGY, strict=False)


class ShopProjection(BaseProjection):
    """Projects the shop's events into read_products, read_carts, read_orders, read_inventory."""

    settings_model = ShopSettings

    def __init__(
        self,
        name: str,
        pool: ConnectionPool,
        tables: ShopTables | None = None,
        attributes: EventAttributes | None = None,
        events_table: str | None = None,
        strategy: Strategy = DEFAULT_STRATEGY,
        pool_timeout: float = DEFAULT_POOL_TIMEOUT,
    ) -> None:
        super().__init__(name)
        self.pool = pool
        self.tables = tables or ShopTables()
        self.attributes = attributes or EventAttributes()
        self.events_table = events_table
        self.strategy = strategy
        self.pool_timeout = pool_timeout
        t = self.tables
        self._versions = GuardedUpsert(
            t.versions,
            (("aggregate_id", "text"), ("version", "bigint"), ("base_version", "bigint")),
            ("aggregate_id",),
            schema=t.schema,
            guard="t.version = EXCLUDED.base_version",
            # A compare-and-set: rows of one aggregate are steps, none may be dropped.
            coalesce=False,
        )
        self._products = GuardedUpsert(
            t.products,
            (
                ("product_id", "text"),
                ("name", "text"),
                ("description", "text"),
                ("price", "bigint"),
                ("created_at", "timestamptz"),
                ("updated_at", "timestamptz"),
            ),
            ("product_id",),
            schema=t.schema,
        )
        self._carts = GuardedUpsert(
            t.carts,
            (
                ("cart_id", "text"),
                ("user_id", "text"),
                ("items", "jsonb"),
                ("total", "bigint"),
                ("updated_at", "timestamptz"),
            ),
            ("cart_id",),
            schema=t.schema,
        )
        self._orders = GuardedUpsert(t.orders, _ORDER_COLUMNS, ("order_id",), schema=t.schema)
        # Stock events are deltas added to the stored counts, never absolute values.
        self._inventory = GuardedUpsert(
            t.inventory,
            (
                ("product_id", "text"),
                ("total", "bigint"),
                ("reserved", "bigint"),
                ("updated_at", "timestamptz"),
            ),
            ("product_id",),
            schema=t.schema,
            update={
                "total": "t.total + EXCLUDED.total",
                "reserved": "t.reserved + EXCLUDED.reserved",
                "updated_at": "GREATEST(t.updated_at, EXCLUDED.updated_at)",
            },
            # Deltas: every row counts, none may be coalesced away.
            coalesce=False,
        )

    @classmethod
    def from_settings(
        cls, name: str, settings: ShopSettings, resources: Resources
    ) -> ShopProjection:
        """Built on the shared PostgreSQL pool."""
        return cls(
            name,
            resources.postgres_pool(),
            tables=ShopTables(schema=settings.schema_, **settings.tables.model_dump()),
            attributes=EventAttributes(**settings.attributes.model_dump()),
            events_table=settings.events_table,
            strategy=settings.strategy,
            pool_timeout=settings.pool_timeout,
        )

    def migrate(self) -> None:
        """Create the read tables and the versions table if absent (idempotent)."""
        with translate_errors(f"projection {self.name}"), self.pool.connection() as conn:
            create_tables(conn, self.tables)

    def apply(self, records: Sequence[ChangeRecord]) -> Results:
        """Apply the batch's events in one transaction; see the module docstring."""
        results = Results()
        events: list[tuple[ChangeRecord, ShopEvent]] = []
        for record in records:
            event = None
            if self.events_table is None or record.table in (None, self.events_table):
                event = parse_event(record, self.attributes)
            if event is None:
                results.filtered(record)
            else:
                events.append((record, event))
        if not events:
            return results
        what = f"projection {self.name}"
        with batch_transaction(self.pool, self.pool_timeout, what) as conn:
            stored, batch = self._load(conn, [event for _, event in events])
            current = dict(stored)
            for record, event in events:
                have = current.get(event.aggregate_id, 0)
                if event.version <= have:
                    results.stale(record)
                    continue
                if event.version != have + 1:
                    raise VersionGapError(event.aggregate_id, have, event.version)
                current[event.aggregate_id] = event.version
                if event.known:
                    batch.apply(event)
                    results.applied(record)
                else:
                    results.filtered(record)
            self._write(conn, stored, current, batch)
        return results

    def _load(
        self, conn: psycopg.Connection[Any], events: list[ShopEvent]
    ) -> tuple[dict[str, int], ReadModelBatch]:
        """Stored versions and the rows the events touch, in one pipelined round trip."""
        t = self.tables
        aggregates = sorted({e.aggregate_id for e in events})
        products = sorted(
            {e.payload["product_id"] for e in events if e.event_type in PRODUCT_EVENTS}
        )
        carts = sorted({e.payload["cart_id"] for e in events if e.event_type in CART_EVENTS})
        orders = sorted({e.payload["order_id"] for e in events if e.event_type in ORDER_EVENTS})
        with conn.pipeline():
            versions = select_keys(
                conn,
                t.schema,
                t.versions,
                ("aggregate_id", "version"),
                "aggregate_id",
                "text",
                aggregates,
            )
            product_rows = select_keys(
                conn,
                t.schema,
                t.products,
                [c for c, _ in self._products.columns],
                "product_id",
                "text",
                products,
            )
            cart_rows = select_keys(
                conn,
                t.schema,
                t.carts,
                ("cart_id", "user_id", "items", "updated_at"),
                "cart_id",
                "text",
                carts,
            )
            order_rows = select_keys(
                conn,
                t.schema,
                t.orders,
                [c for c, _ in _ORDER_COLUMNS],
                "order_id",
                "text",
                orders,
            )
        batch = ReadModelBatch()
        stored = {a: int(v) for a, v in versions.fetchall()} if versions else {}
        for row in product_rows.fetchall() if product_rows else ():
            batch.products[row[0]] = ProductRow(*row)
        for cart_id, user_id, items, updated_at in cart_rows.fetchall() if cart_rows else ():
            by_product = {item["product_id"]: item for item in items}
            batch.carts[cart_id] = CartRow(cart_id, user_id, by_product, updated_at)
        for row in order_rows.fetchall() if order_rows else ():
            batch.orders[row[0]] = OrderRow(*row)
        return stored, batch

    def _write(
        self,
        conn: psycopg.Connection[Any],
        stored: dict[str, int],
        current: dict[str, int],
        batch: ReadModelBatch,
    ) -> None:
        """Write versions first (they lock the aggregates), then the read rows."""
        t = self.tables
        version_rows = [
            (aggregate, version, stored.get(aggregate, 0))
            for aggregate, version in current.items()
            if version != stored.get(aggregate, 0)
        ]
        if not version_rows:
            return
        products = [
            (p.product_id, p.name, p.description, p.price, p.created_at, p.updated_at)
            for p in (batch.products[k] for k in sorted(batch.changed_products))
        ]
        carts = [
            (c.cart_id, c.user_id, _json(list(c.items.values())), c.total, c.updated_at)
            for c in (batch.carts[k] for k in sorted(batch.changed_carts))
        ]
        orders = [
            (
                o.order_id,
                o.user_id,
                _json(o.items),
                o.total,
                o.status,
                o.cancel_reason,
                o.placed_at,
                o.paid_at,
                o.shipped_at,
                o.cancelled_at,
                o.updated_at,
            )
            for o in (batch.orders[k] for k in sorted(batch.changed_orders))
        ]
        inventory = [
            (d.product_id, d.total, d.reserved, d.updated_at)
            for d in (batch.inventory[k] for k in sorted(batch.inventory))
        ]
        # COPY cannot run inside a pipeline; the other strategies share one round trip.
        pipeline = nullcontext() if self.strategy is Strategy.COPY else conn.pipeline()
        with pipeline:
            versions = self._versions.execute(conn, version_rows, self.strategy)
            self._products.execute(conn, products, self.strategy)
            delete_keys(
                conn, t.schema, t.products, "product_id", "text", sorted(batch.deleted_products)
            )
            self._carts.execute(conn, carts, self.strategy)
            self._orders.execute(conn, orders, self.strategy)
            self._inventory.execute(conn, inventory, self.strategy)
        written = versions.rowcount if versions else 0
        if written != len(version_rows):
            raise ConcurrentUpdateError(
                f"projection {self.name}: {len(version_rows) - written} of "
                f"{len(version_rows)} aggregates were advanced by another writer meanwhile"
            )


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()
