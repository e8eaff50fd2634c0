"""The shop part of `stream-projector demo`: events → Kinesis → PostgreSQL read models.

Needs PostgreSQL: `postgres_available()` returns a DSN from DATABASE_URL, or starts a
throwaway server from the local binaries (/usr/lib/postgresql/*/bin), or returns None.
`run_shop_demo` writes the shop's events to the `events` table and, as the DynamoDB→Kinesis
integration would (moto's integration does not work), their change records to Kinesis; runs
the daemon with the shop, daily-sales and audit projections until caught up; prints the read
models.
"""

from __future__ import annotations

import atexit
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from consumer.config import Settings, load_settings
from consumer.demo.trip_saga import REGION, run_until_caught_up
from consumer.resources import SharedResources
from consumer.runtimes.projection_loader import load_projections
from consumer.sources.attribute_values import to_image

EVENTS_TABLE = "events"
STREAM = "ec-events-cdc"
T0 = datetime(2025, 4, 1, 9, 0, tzinfo=UTC)
READ_MODELS = (
    ("read_products", "product_id"),
    ("read_carts", "cart_id"),
    ("read_orders", "order_id"),
    ("read_inventory", "product_id"),
    ("daily_sales", "day"),
)

# (aggregate id, event type, data): the seed's flow (register, cart, order, pay, ship, cancel).
SHOP_EVENTS: list[tuple[str, str, dict[str, Any]]] = [
    ("product-p1", "ProductCreated",
     {"product_id": "p1", "name": "Tシャツ", "description": "綿100%", "price": 2000, "stock": 100}),
    ("inventory-p1", "StockAdded", {"product_id": "p1", "quantity": 100}),
    ("product-p2", "ProductCreated",
     {"product_id": "p2", "name": "マグカップ", "description": "", "price": 1200, "stock": 50}),
    ("inventory-p2", "StockAdded", {"product_id": "p2", "quantity": 50}),
    ("cart-u1", "ItemAddedToCart",
     {"cart_id": "cart-u1", "user_id": "u1", "product_id": "p1", "quantity": 2, "price": 2000}),
    ("cart-u1", "ItemAddedToCart",
     {"cart_id": "cart-u1", "user_id": "u1", "product_id": "p2", "quantity": 1, "price": 1200}),
    ("order-o1", "OrderPlaced",
     {"order_id": "o1", "user_id": "u1", "total": 5200,
      "items": [{"product_id": "p1", "quantity": 2, "price": 2000},
                {"product_id": "p2", "quantity": 1, "price": 1200}]}),
    ("inventory-p1", "StockReserved", {"product_id": "p1", "order_id": "o1", "quantity": 2}),
    ("inventory-p2", "StockReserved", {"product_id": "p2", "order_id": "o1", "quantity": 1}),
    ("cart-u1", "CartCleared", {"cart_id": "cart-u1", "user_id": "u1"}),
    ("order-o1", "OrderPaid", {"order_id": "o1"}),
    ("order-o1", "OrderShipped", {"order_id": "o1"}),
    ("inventory-p1", "StockDeducted", {"product_id": "p1", "order_id": "o1", "quantity": 2}),
    ("inventory-p2", "StockDeducted", {"product_id": "p2", "order_id": "o1", "quantity": 1}),
    ("order-o2", "OrderPlaced",
     {"order_id": "o2", "user_id": "u2", "total": 3600,
      "items": [{"product_id": "p2", "quantity": 3, "price": 1200}]}),
    ("inventory-p2", "StockReserved", {"product_id": "p2", "order_id": "o2", "quantity": 3}),
    ("order-o2", "OrderCancelled", {"order_id": "o2", "reason": "changed my mind"}),
    ("inventory-p2", "StockReleased", {"product_id": "p2", "order_id": "o2", "quantity": 3}),
    ("cart-u2", "ItemAddedToCart",
     {"cart_id": "cart-u2", "user_id": "u2", "product_id": "p1", "quantity": 1, "price": 2000}),
]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _bin_dir() -> Path | None:
    """The newest local PostgreSQL server binaries (initdb and pg_ctl), if any."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
        reverse=True,
    )
    for bin_dir in map(Path, found):
        if (bin_dir / "initdb").exists() and (bin_dir / "pg_ctl").exists():
            return bin_dir
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path and shutil.which("initdb") else None


def postgres_available() -> str | None:
    """A DSN: DATABASE_URL, else a throwaway server started from local binaries, else None.

    The server runs in a temp dir on a free loopback port with trust auth and is stopped
    and deleted when the process exits. As root it runs as `postgres` (postgres refuses root).
    """
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    bin_dir = _bin_dir()
    if bin_dir is None:
        return None
    base = Path(tempfile.mkdtemp(prefix="stream-projector-demo-pg-"))
    os.chmod(base, 0o755)  # the postgres user must reach its data dir
    prefix: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    data, port = base / "data", _free_port()

    def run(*argv: str) -> bool:
        done = subprocess.run([*prefix, *argv], capture_output=True, timeout=120, check=False)
        return done.returncode == 0

    initdb = str(bin_dir / "initdb")
    if not run(initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync"):
        shutil.rmtree(base, ignore_errors=True)
        return None
    options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
    pg_ctl = str(bin_dir / "pg_ctl")
    started = run(pg_ctl, "-D", str(data), "-l", str(base / "log"), "-o", options, "-w", "start")

    def stop() -> None:
        run(pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(base, ignore_errors=True)

    atexit.register(stop)
    if not started:
        return None
    return f"host=127.0.0.1 port={port} user=postgres dbname=postgres connect_timeout=5"


def shop_settings(dsn: str, endpoint_url: str) -> Settings:
    """The daemon reading the shop's Kinesis stream into PostgreSQL (three projections)."""
    return load_settings(
        None,
        application="stream-projector-demo-shop",
        source={"kind": "kinesis", "stream_name": STREAM},
        aws={"endpoint_url": endpoint_url, "region": REGION},
        http={"host": "127.0.0.1", "port": 0},
        polling={"idle_backoff_seconds": 0.2, "min_interval_seconds": 0.05},
        leases={"failover_seconds": 10, "renew_interval_seconds": 2, "take_interval_seconds": 1},
        postgres={"dsn": dsn},
        projections=[
            {"name": "shop", "class": "projections.scenarios.shop:ShopProjection"},
            {
                "name": "daily_sales",
                "class": "projections.scenarios.daily_sales:DailySalesProjection",
            },
            {"name": "audit", "class": "projections.scenarios.audit_log:AuditLogProjection"},
        ],
    )


def _change_record(n: int, item: dict[str, Any]) -> bytes:
    """The JSON change record the DynamoDB→Kinesis integration writes for an INSERT."""
    keys = {"aggregate_id": item["aggregate_id"], "version": item["version"]}
    created = int((T0 + timedelta(seconds=n)).timestamp() * 1000)
    return orjson.dumps(
        {
            "awsRegion": REGION,
            "eventID": f"demo-{n}",
            "eventName": "INSERT",
            "userIdentity": None,
            "recordFormat": "application/json",
            "tableName": EVENTS_TABLE,
            "eventSource": "aws:dynamodb",
            "dynamodb": {
                "ApproximateCreationDateTime": created,
                "ApproximateCreationDateTimePrecision": "MILLISECOND",
                "Keys": to_image(keys),
                "NewImage": to_image(item),
                "SizeBytes": 200,
            },
        }
    )


def seed_shop(settings: Settings) -> int:
    """Create the events table, the stream and the read tables; write the events. Returns
    how many events were written."""
    resources = SharedResources(settings.aws, settings.postgres)
    try:
        dynamodb, kinesis = resources.aws_client("dynamodb"), resources.aws_client("kinesis")
        existing = dynamodb.list_tables()["TableNames"]
        if EVENTS_TABLE not in existing:
            dynamodb.create_table(
                TableName=EVENTS_TABLE,
                KeySchema=[
                    {"AttributeName": "aggregate_id", "KeyType": "HASH"},
                    {"AttributeName": "version", "KeyType": "RANGE"},
                ],
                AttributeDefinitions=[
                    {"AttributeName": "aggregate_id", "AttributeType": "S"},
                    {"AttributeName": "version", "AttributeType": "N"},
                ],
                BillingMode="PAY_PER_REQUEST",
            )
        if STREAM not in kinesis.list_streams()["StreamNames"]:
            kinesis.create_stream(StreamName=STREAM, ShardCount=1)
            kinesis.get_waiter("stream_exists").wait(
                StreamName=STREAM, WaiterConfig={"Delay": 1, "MaxAttempts": 30}
            )
        for projection in load_projections(settings.projections, resources):
            projection.migrate()
        versions: dict[str, int] = {}
        for n, (aggregate_id, event_type, data) in enumerate(SHOP_EVENTS):
            versions[aggregate_id] = versions.get(aggregate_id, 0) + 1
            item = {
                "aggregate_id": aggregate_id,
                "version": versions[aggregate_id],
                "aggregate_type": aggregate_id.split("-")[0],
                "event_type": event_type,
                "data": data,
                "created_at": (T0 + timedelta(seconds=n)).isoformat().replace("+00:00", "Z"),
            }
            # The event store's append: the write model first, then (the integration) Kinesis.
            dynamodb.put_item(
                TableName=EVENTS_TABLE,
                Item=to_image(item),
                ConditionExpression="attribute_not_exists(aggregate_id)",
            )
            kinesis.put_record(
                StreamName=STREAM, PartitionKey=aggregate_id, Data=_change_record(n, item)
            )
        return len(SHOP_EVENTS)
    finally:
        resources.close()


def print_read_models(dsn: str, echo: Callable[[str], None]) -> None:
    """Every row of the four shop read models and the daily totals, as JSON lines."""
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        for table, key in READ_MODELS:
            echo(f"\n{table}")
            for row in conn.execute(f"SELECT * FROM {table} ORDER BY {key}"):
                echo("  " + orjson.dumps(row, default=str, option=orjson.OPT_SORT_KEYS).decode())
        audited = conn.execute("SELECT count(*) AS n FROM audit_log").fetchone()
        echo(f"\naudit_log: {audited['n'] if audited else 0} changes recorded")


def run_shop_demo(dsn: str, endpoint_url: str, echo: Callable[[str], None]) -> None:
    """Seed the shop's events, run the daemon until caught up, print the read models."""
    settings = shop_settings(dsn, endpoint_url)
    started = time.monotonic()
    count = seed_shop(settings)
    echo(f"wrote {count} shop events to {EVENTS_TABLE} and Kinesis stream {STREAM}")
    run_until_caught_up(settings)
    echo(f"projected into PostgreSQL in {time.monotonic() - started:.1f}s")
    print_read_models(dsn, echo)
