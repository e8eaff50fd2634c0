"""The shop's PostgreSQL tables: the four read models and the per-aggregate version guard."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

# Serializes concurrent `migrate` runs (two replicas starting at once): CREATE TABLE IF NOT
# EXISTS alone can still collide on the catalog. Any constant works; this one is ours.
_MIGRATE_LOCK = 0x5350_5348_4F50  # "SPSHOP"


@dataclass(frozen=True, slots=True)
class ShopTables:
    """Where the shop projection writes: a schema and one name per table."""

    schema: str = "public"
    products: str = "read_products"
    carts: str = "read_carts"
    orders: str = "read_orders"
    inventory: str = "read_inventory"
    versions: str = "shop_aggregate_versions"


# `available` is derived by PostgreSQL, so it can never disagree with total and reserved.
_DDL = (
    """CREATE TABLE IF NOT EXISTS {versions} (
        aggregate_id text PRIMARY KEY,
        version bigint NOT NULL,
        base_version bigint NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS {products} (
        product_id text PRIMARY KEY,
        name text NOT NULL,
        description text NOT NULL,
        price bigint NOT NULL,
        created_at timestamptz,
        updated_at timestamptz
    )""",
    """CREATE TABLE IF NOT EXISTS {carts} (
        cart_id text PRIMARY KEY,
        user_id text NOT NULL,
        items jsonb NOT NULL,
        total bigint NOT NULL,
        updated_at timestamptz
    )""",
    """CREATE TABLE IF NOT EXISTS {orders} (
        order_id text PRIMARY KEY,
        user_id text NOT NULL,
        items jsonb NOT NULL,
        total bigint NOT NULL,
        status text NOT NULL CHECK (status IN ('pending', 'paid', 'shipped', 'cancelled')),
        cancel_reason text,
        placed_at timestamptz,
        paid_at timestamptz,
        shipped_at timestamptz,
        cancelled_at timestamptz,
        updated_at timestamptz
    )""",
    """CREATE TABLE IF NOT EXISTS {inventory} (
        product_id text PRIMARY KEY,
        total bigint NOT NULL,
        reserved bigint NOT NULL,
        available bigint GENERATED ALWAYS AS (total - reserved) STORED,
        updated_at timestamptz
    )""",
)


def create_tables(conn: psycopg.Connection[Any], tables: ShopTables) -> None:
    """Create the schema and tables if absent, in one transaction; changes nothing otherwise."""
    names = {
        role: sql.Identifier(tables.schema, getattr(tables, role))
        for role in ("versions", "products", "carts", "orders", "inventory")
    }
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", [_MIGRATE_LOCK])
        conn.execute(
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(tables.schema))
        )
        for ddl in _DDL:
            conn.execute(sql.SQL(ddl).format(**names))
