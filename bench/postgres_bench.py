"""PostgreSQL projection writes: the tutorials' per-record statements against batched upserts.

(A) One guarded INSERT ... ON CONFLICT DO UPDATE per record on an autocommit connection: the
    Lambda projector of the tutorials (one Exec per event, each its own transaction).
(B) projections.sinks.postgres: one transaction per batch, each batch one guarded upsert,
    shipped three ways (unnest arrays in binary, executemany in pipeline mode, COPY + INSERT
    SELECT), and unnest with text parameters (what the sink sent before) for comparison.
(C) The whole shop projection (ShopProjection.apply: parse, load versions, compute, write) on
    stock events, as records/s.

Same rows for every side, on a fresh table each: N rows over N/4 keys, so a quarter are
inserts and the rest guarded updates (version 1..4 per key). The final tables are compared
and must be identical. The client pins itself to one CPU; the server it starts runs beside it.

    python -m bench postgres     # --rows N --batch B --baseline-rows N --fast --dsn DSN --json
    python -m bench postgres --profile   # cProfile (client CPU) of the batched sides instead

By default the server it starts commits durably (fsync, synchronous_commit on), as a
production server does; --fast turns both off, as the tests do.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from consumer.record import ChangeRecord
from projections.scenarios.shop import ShopProjection
from projections.sinks.postgres import GuardedUpsert, Strategy, batch_transaction

TABLE = "bench_read"
COLUMNS = (
    ("id", "text"),
    ("version", "bigint"),
    ("name", "text"),
    ("price", "bigint"),
    ("body", "jsonb"),
    ("updated_at", "timestamptz"),
)
UPSERT = GuardedUpsert(
    TABLE, COLUMNS, ("id",), guard="t.version < EXCLUDED.version", position="version"
)
TEXT_UPSERT = replace(UPSERT, binary=False)
T0 = datetime(2025, 4, 1, tzinfo=UTC)
Row = tuple[Any, ...]


def make_rows(count: int) -> list[Row]:
    """`count` rows over count/4 keys, versions 1..4 per key (a key repeats every count/4
    rows, so a batch larger than that coalesces)."""
    keys = max(1, count // 4)
    return [
        (
            f"item-{i % keys:07d}",
            i // keys + 1,
            f"product {i}",
            1000 + i % 997,
            json.dumps({"sku": i % keys, "tags": ["a", "b"], "rev": i // keys}),
            T0 + timedelta(seconds=i),
        )
        for i in range(count)
    ]


def reset(dsn: str) -> None:
    """A fresh, empty bench table."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
        conn.execute(
            f"CREATE TABLE {TABLE} (id text PRIMARY KEY, version bigint NOT NULL, name text, "
            "price bigint, body jsonb, updated_at timestamptz)"
        )


def table_state(dsn: str) -> list[Row]:
    """Every row of the bench table, in key order."""
    with psycopg.connect(dsn) as conn:
        return conn.execute(f"SELECT * FROM {TABLE} ORDER BY id").fetchall()


def per_record(dsn: str, rows: list[Row], batch: int) -> None:
    """(A) One statement, one transaction per record."""
    statement = (
        f"INSERT INTO {TABLE} AS t (id, version, name, price, body, updated_at) "
        "VALUES (%s, %s, %s, %s, %s::jsonb, %s) ON CONFLICT (id) DO UPDATE SET "
        "version = EXCLUDED.version, name = EXCLUDED.name, price = EXCLUDED.price, "
        "body = EXCLUDED.body, updated_at = EXCLUDED.updated_at "
        "WHERE t.version < EXCLUDED.version"
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        for row in rows:
            conn.execute(statement, row)


def batched(
    strategy: Strategy, upsert: GuardedUpsert = UPSERT
) -> Callable[[str, list[Row], int], None]:
    """(B) One transaction and one guarded upsert per batch."""

    def run(dsn: str, rows: list[Row], batch: int) -> None:
        with ConnectionPool(dsn, min_size=1, max_size=1) as pool:
            for start in range(0, len(rows), batch):
                with batch_transaction(pool) as conn:
                    upsert.execute(conn, rows[start : start + batch], strategy)

    return run


def stock_records(count: int) -> list[ChangeRecord]:
    """Shop stock events as the Kinesis decoder yields them: 10 per inventory aggregate."""
    aggregates = max(1, count // 10)
    kinds = ("StockAdded", "StockReserved", "StockReleased", "StockReserved", "StockDeducted")
    out = []
    for i in range(count):
        product, version = i % aggregates, i // aggregates + 1
        item = {
            "aggregate_id": f"inventory-{product}",
            "version": version,
            "event_type": kinds[(version - 1) % len(kinds)],
            "data": {"product_id": f"p{product}", "order_id": "o", "quantity": 1 + i % 5},
            "created_at": (T0 + timedelta(seconds=i)).isoformat(),
        }
        out.append(
            ChangeRecord(
                "kinesis", "ec-events", "shardId-0", str(49_000_000 + i), "INSERT",
                {"aggregate_id": item["aggregate_id"], "version": version}, item, None, None,
                table="events",
            )
        )  # fmt: skip
    return out


def shop_projection(dsn: str, records: list[ChangeRecord], batch: int, strategy: Strategy) -> float:
    """(C) Seconds to apply `records` through ShopProjection in batches of `batch`."""
    with ConnectionPool(dsn, min_size=1, max_size=1) as pool:
        projection = ShopProjection("bench", pool, strategy=strategy)
        projection.migrate()
        with pool.connection() as conn:
            conn.execute(
                "TRUNCATE read_inventory, shop_aggregate_versions, read_products, read_carts, "
                "read_orders"
            )
        started = time.perf_counter()
        for start in range(0, len(records), batch):
            projection.apply(records[start : start + batch])
        return time.perf_counter() - started


def pin_to_one_cpu() -> str:
    """Run the client on one CPU, so its figures are per core."""
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned"
    cpu = sorted(os.sched_getaffinity(0))[-1]
    os.sched_setaffinity(0, {cpu})
    return f"client pinned to cpu {cpu}"


def measure(
    dsn: str, run: Callable[[str, list[Row], int], None], rows: list[Row], batch: int
) -> tuple[float, float, list[Row]]:
    """Wall seconds, client CPU seconds and the final table of one side on a fresh table."""
    reset(dsn)
    cpu, wall = time.process_time(), time.perf_counter()
    run(dsn, rows, batch)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return wall, cpu, table_state(dsn)


def profile_sides(dsn: str, count: int, batch: int, top: int = 8) -> None:
    """cProfile each B side once and print its `top` functions by own time (client only)."""
    rows = make_rows(count)
    for name, strategy, upsert in (
        ("unnest, text parameters", Strategy.UNNEST, TEXT_UPSERT),
        ("unnest, binary parameters", Strategy.UNNEST, UPSERT),
        ("copy", Strategy.COPY, UPSERT),
    ):
        reset(dsn)
        profiler = cProfile.Profile(time.process_time)  # CPU, not the wait for the server
        profiler.runcall(batched(strategy, upsert), dsn, rows, batch)
        stats = pstats.Stats(profiler)
        print(f"== B batched {name}: {stats.total_tt:.3f} client CPU s for {count} rows")
        stats.sort_stats("tottime").print_stats(top)


def run_bench(dsn: str, count: int, batch: int, baseline_rows: int) -> dict[str, Any]:
    """All sides on the same rows; the baseline on a prefix when asked (it is slow).

    Rates are rows per wall-clock second of the whole side; the baseline's rate on a prefix
    is representative because its cost per row is constant (one commit each)."""
    rows = make_rows(count)
    results: dict[str, Any] = {"rows": count, "batch": batch, "sides": {}}
    # Warm the server's caches and the client's statement cache once.
    measure(dsn, batched(Strategy.UNNEST), rows[: batch * 2], batch)
    base_rows = rows[:baseline_rows] if baseline_rows else rows
    wall, cpu, base_state = measure(dsn, per_record, base_rows, batch)
    results["sides"]["A per-record autocommit"] = {
        "rows": len(base_rows), "seconds": wall, "client_cpu": cpu,
    }  # fmt: skip
    sides = {
        "B batched unnest, text parameters": batched(Strategy.UNNEST, TEXT_UPSERT),
        **{f"B batched {s.value}": batched(s) for s in Strategy},
    }
    for name, run in sides.items():
        wall, cpu, state = measure(dsn, run, rows, batch)
        if not baseline_rows or baseline_rows >= count:
            assert state == base_state, f"{name} left a different table than per-record"
        results["sides"][name] = {"rows": count, "seconds": wall, "client_cpu": cpu}
    records = stock_records(count)
    for strategy in Strategy:
        wall = shop_projection(dsn, records, batch, strategy)
        results["sides"][f"C ShopProjection {strategy.value}"] = {"rows": count, "seconds": wall}
    for side in results["sides"].values():
        side["rows_per_s"] = side["rows"] / side["seconds"]
    base = results["sides"]["A per-record autocommit"]["rows_per_s"]
    for side in results["sides"].values():
        side["ratio"] = side["rows_per_s"] / base
    return results


def print_table(results: dict[str, Any], note: str) -> None:
    """The results as a Markdown table."""
    print(f"{results['rows']} rows, batches of {results['batch']}; {note}")
    print("| side | rows | rows/s | client CPU s | client CPU us/row | vs A |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, side in results["sides"].items():
        cpu, per_row = "-", "-"
        if "client_cpu" in side:
            cpu = f"{side['client_cpu']:.2f}"
            per_row = f"{side['client_cpu'] / side['rows'] * 1e6:.1f}"
        print(
            f"| {name} | {side['rows']} | {side['rows_per_s']:,.0f} | {cpu} | {per_row} | "
            f"{side['ratio']:.1f}x |"
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark against a server it starts (or --dsn) and print the table."""
    parser = argparse.ArgumentParser(prog="python -m bench postgres", description=__doc__)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--dsn", help="an existing database to use (default: start a server)")
    parser.add_argument(
        "--baseline-rows",
        type=int,
        default=5_000,
        help="rows for the slow per-record side (0: all; the final tables are then compared)",
    )
    parser.add_argument(
        "--fast",
        action="store_true",
        help="start the server with fsync and synchronous_commit off (as the tests do)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="instead of timing, cProfile the batched sides (client CPU) and print the top",
    )
    args = parser.parse_args(list(argv) if argv is not None else None)
    note = pin_to_one_cpu()
    server = None
    dsn = args.dsn or os.environ.get("DATABASE_URL")
    if not dsn:
        # The tests' server starter: initdb + pg_ctl from the local binaries, fsync off.
        from tests.fixtures.postgres import start_postgres

        server = start_postgres(durable=not args.fast)
        dsn = server.dsn
        note += ", server fsync and synchronous_commit " + ("off" if args.fast else "on")
    try:
        if args.profile:
            profile_sides(dsn, args.rows, args.batch)
            return 0
        results = run_bench(dsn, args.rows, args.batch, args.baseline_rows)
    finally:
        if server is not None:
            server.destroy()
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print_table(results, note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
