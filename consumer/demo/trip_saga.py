"""`stream-projector demo`: the trip saga of seed 001 on an embedded moto server, end to end."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

import click

from consumer.config import Settings, load_settings
from consumer.resources import SharedResources
from consumer.runtimes.daemon import build_daemon, run_daemon
from consumer.runtimes.projection_loader import load_projections

TRIP_TABLE = "TripTable"
SEARCH_TABLE = "TripSearchTable"
REGION = "us-east-1"

# The saga steps of seed 001, in the order the Step Functions flow writes them. The second
# trip's payment fails (amount -1) and the compensation runs in reverse order.
Step = tuple[str, str, dict[str, Any]]  # (trip id, component, attributes)
SAGA: list[Step] = [
    (
        "trip-streams-001",
        "FLIGHT",
        {
            "flight_number": "NH001",
            "status": "PENDING",
            "departure_time": "2026-03-15T10:00:00",
            "arrival_time": "2026-03-15T14:00:00",
        },
    ),
    ("trip-streams-001", "FLIGHT", {"status": "CONFIRMED"}),
    (
        "trip-streams-001",
        "HOTEL",
        {
            "hotel_name": "Grand Hotel Tokyo",
            "status": "CONFIRMED",
            "check_in_date": "2026-03-15",
            "check_out_date": "2026-03-17",
        },
    ),
    ("trip-streams-001", "PAYMENT", {"amount": 80000, "currency": "JPY", "status": "COMPLETED"}),
    (
        "trip-streams-cancel-001",
        "FLIGHT",
        {
            "flight_number": "NH999",
            "status": "CONFIRMED",
            "departure_time": "2026-04-01T10:00:00",
            "arrival_time": "2026-04-01T14:00:00",
        },
    ),
    (
        "trip-streams-cancel-001",
        "HOTEL",
        {
            "hotel_name": "Test Hotel",
            "status": "CONFIRMED",
            "check_in_date": "2026-04-01",
            "check_out_date": "2026-04-03",
        },
    ),
    ("trip-streams-cancel-001", "PAYMENT", {"amount": -1, "currency": "JPY", "status": "FAILED"}),
    ("trip-streams-cancel-001", "PAYMENT", {"status": "REFUNDED"}),
    ("trip-streams-cancel-001", "HOTEL", {"status": "CANCELED"}),
    ("trip-streams-cancel-001", "FLIGHT", {"status": "CANCELLED"}),
]


def _value(value: Any) -> dict[str, str]:
    return {"N": str(value)} if isinstance(value, int) else {"S": str(value)}


def create_trip_table(dynamodb: Any, table: str = TRIP_TABLE) -> None:
    """TripTable (PK/SK) with a NEW_AND_OLD_IMAGES stream; an existing table is kept."""
    try:
        dynamodb.create_table(
            TableName=table,
            KeySchema=[
                {"AttributeName": "PK", "KeyType": "HASH"},
                {"AttributeName": "SK", "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": "PK", "AttributeType": "S"},
                {"AttributeName": "SK", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        )
    except dynamodb.exceptions.ResourceInUseException:
        return
    dynamodb.get_waiter("table_exists").wait(
        TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
    )


def write_saga(dynamodb: Any, steps: list[Step] = SAGA, table: str = TRIP_TABLE) -> None:
    """Apply the saga's writes to TripTable: a put for a new component, an update after."""
    seen: set[tuple[str, str]] = set()
    for trip_id, component, attributes in steps:
        key = {"PK": {"S": f"TRIP#{trip_id}"}, "SK": {"S": f"{component}#{trip_id}"}}
        if (trip_id, component) not in seen:
            seen.add((trip_id, component))
            item = {**key, "trip_id": {"S": trip_id}, "EntityType": {"S": component}}
            item.update({name: _value(v) for name, v in attributes.items()})
            dynamodb.put_item(TableName=table, Item=item)
            continue
        names = {f"#a{i}": name for i, name in enumerate(attributes)}
        values = {f":v{i}": _value(v) for i, v in enumerate(attributes.values())}
        dynamodb.update_item(
            TableName=table,
            Key=key,
            UpdateExpression="SET " + ", ".join(f"#a{i} = :v{i}" for i in range(len(names))),
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )


def demo_settings(endpoint_url: str, **overrides: Any) -> Settings:
    """Settings for the trip-search demo against an emulator at `endpoint_url`."""
    return load_settings(
        None,
        application="stream-projector-demo",
        source={"kind": "dynamodb", "table": TRIP_TABLE},
        aws={"endpoint_url": endpoint_url, "region": REGION},
        http={"host": "127.0.0.1", "port": 0},
        polling={"idle_backoff_seconds": 0.2, "min_interval_seconds": 0.05},
        leases={"failover_seconds": 10, "renew_interval_seconds": 2, "take_interval_seconds": 1},
        projections=[
            {
                "name": "trip_search",
                "class": "projections.scenarios.trip_search:TripSearchProjection",
                "settings": {"table": SEARCH_TABLE},
            }
        ],
        **overrides,
    )


def use_demo_credentials() -> None:
    """Fake credentials: the demo's clients only ever talk to the emulator it names."""
    os.environ.update(
        AWS_ACCESS_KEY_ID="demo", AWS_SECRET_ACCESS_KEY="demo", AWS_DEFAULT_REGION=REGION
    )
    os.environ.pop("AWS_SESSION_TOKEN", None)
    os.environ.pop("AWS_PROFILE", None)


def start_moto() -> tuple[Any, str]:
    """moto's server in this process, on a free loopback port, over real HTTP."""
    import logging

    from moto.server import ThreadedMotoServer

    # werkzeug logs every request of the embedded server; the demo's output is the point.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, f"http://{host}:{port}"


def seed(endpoint_url: str) -> Settings:
    """Create TripTable and the read model, and write the saga; returns the demo settings."""
    settings = demo_settings(endpoint_url)
    resources = SharedResources(settings.aws, settings.postgres)
    dynamodb = resources.aws_client("dynamodb")
    create_trip_table(dynamodb)
    for projection in load_projections(settings.projections, resources):
        projection.migrate()
    write_saga(dynamodb)
    return settings


def run_until_caught_up(settings: Settings, timeout: float = 60.0) -> Any:
    """Run the daemon until every shard is read to its tip; returns the stopped daemon."""
    daemon = build_daemon(settings)
    stop = threading.Event()
    deadline = time.monotonic() + timeout
    streak = [0]

    def done() -> bool:
        # Two consecutive caught-up observations: the last write has surely been fetched.
        streak[0] = streak[0] + 1 if daemon.worker.caught_up() else 0
        if time.monotonic() > deadline:
            raise click.ClickException(f"demo did not catch up within {timeout:.0f}s")
        return streak[0] >= 3

    run_daemon(daemon, stop, until=done)
    return daemon


def print_results(settings: Settings, echo: Callable[[str], None] = click.echo) -> None:
    """Both search documents and the CONFIRMED search, as the seed's walkthrough shows them."""
    import orjson

    from projections.scenarios.trip_search_query import plain_document, search_trips

    def show(value: Any) -> str:
        options = orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS
        return orjson.dumps(value, default=str, option=options).decode()

    client = SharedResources(settings.aws, settings.postgres).aws_client("dynamodb")
    for trip_id in ("trip-streams-001", "trip-streams-cancel-001"):
        item = client.get_item(
            TableName=SEARCH_TABLE, Key={"trip_id": {"S": trip_id}}, ConsistentRead=True
        ).get("Item")
        echo(f"\n{SEARCH_TABLE}[{trip_id}]")
        echo(show(plain_document(item) if item else None))
    items, _ = search_trips(client, SEARCH_TABLE, status="CONFIRMED")
    echo("\nsearch trips --status CONFIRMED")
    echo(show({"trips": items, "count": len(items)}))
