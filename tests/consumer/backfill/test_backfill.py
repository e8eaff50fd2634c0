"""Backfill: parallel Scan → projections, hand-off to the stream, resume (moto, PostgreSQL)."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from psycopg_pool import ConnectionPool

from consumer.backfill.progress import BackfillProgressStore, run_name
from consumer.backfill.runner import BackfillOptions
from consumer.cli.backfill import backfill_from_settings, progress_table
from consumer.config import Settings, load_settings
from consumer.leases.store import DynamoDBLeaseStore
from consumer.record import ChangeRecord
from consumer.resources import SharedResources
from consumer.sources.attribute_values import to_image
from projections.scenarios.shop.projection import ShopProjection
from projections.scenarios.trip_search import COMPONENTS, create_table
from projections.scenarios.trip_search_query import plain_document
from tests.fixtures.servers import ROOT, wait_until
from tests.projections.scenarios.shop.scenario import T0, dump, records, shop_scenario
from tests.support.daemon import FAST_LEASES, FAST_POLLING, daemon_thread, wait_caught_up

STREAM = {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
PARTS = ("FLIGHT", "HOTEL", "PAYMENT")


# -- scenario 1 helpers ------------------------------------------------------------------------


def create_trip_table(client: Any, table: str, stream: bool) -> None:
    """TripTable (PK/SK strings), with or without its stream."""
    extra = {"StreamSpecification": STREAM} if stream else {}
    client.create_table(
        TableName=table,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            {"AttributeName": "PK", "AttributeType": "S"},
            {"AttributeName": "SK", "AttributeType": "S"},
        ],
        KeySchema=[
            {"AttributeName": "PK", "KeyType": "HASH"},
            {"AttributeName": "SK", "KeyType": "RANGE"},
        ],
        **extra,
    )


def key(trip: str, part: str) -> dict[str, Any]:
    return {"PK": {"S": f"TRIP#{trip}"}, "SK": {"S": f"{part}#{trip}"}}


def put(client: Any, table: str, trip: str, part: str, status: str, n: int = 0) -> None:
    """A FLIGHT/HOTEL/PAYMENT item with fields that differ by `status` and `n`."""
    fields = {
        "FLIGHT": {"flight_number": f"NH{n:03d}", "departure_time": f"2026-03-{n % 28 + 1:02d}"},
        "HOTEL": {"hotel_name": f"Hotel {n}", "check_in_date": "2026-03-15"},
        "PAYMENT": {"amount": 1000 + n, "currency": "JPY"},
    }[part]
    item = {**key(trip, part), **to_image({"status": status, **fields})}
    client.put_item(TableName=table, Item=item)


def expected_documents(client: Any, table: str) -> dict[str, dict[str, Any]]:
    """The read model a full replay ends with: each trip's fields from its current items."""
    docs: dict[str, dict[str, Any]] = {}
    for page in client.get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
        for item in page["Items"]:
            image = plain_document(item)
            trip = image["PK"].removeprefix("TRIP#")
            component = next(c for c in COMPONENTS if image["SK"].startswith(c.sk_prefix))
            doc = docs.setdefault(trip, {"trip_id": trip})
            doc.update({target: image[src] for src, target in component.fields if src in image})
    return docs


def documents(client: Any, table: str) -> dict[str, dict[str, Any]]:
    """The search table's documents without guards and updated_at (they differ by design)."""
    found = {}
    for page in client.get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
        for item in page["Items"]:
            doc = plain_document(item)
            for name in ("updated_at", *(c.guard for c in COMPONENTS)):
                doc.pop(name, None)
            found[doc["trip_id"]] = doc
    return found


def trip_settings(endpoint: str, app: str, source: str, search: str) -> Settings:
    # LATEST: without the backfill's recorded leases the daemon would start at the tip.
    return load_settings(
        None,
        application=app,
        source={"kind": "dynamodb", "table": source, "initial_position": "LATEST"},
        aws={"endpoint_url": endpoint, "region": "us-east-1"},
        leases=FAST_LEASES,
        polling=FAST_POLLING,
        projections=[
            {
                "name": "trip_search",
                "class": "projections.scenarios.trip_search:TripSearchProjection",
                "settings": {"table": search},
            }
        ],
    )


@pytest.fixture
def trip_tables(
    aws_client: Callable[..., Any], unique_name: Callable[[str], str], moto_endpoint: str
) -> Iterator[tuple[Any, str, str, Settings]]:
    client = aws_client("dynamodb")
    source, search = unique_name("TripTable"), unique_name("TripSearch")
    create_table(client, search)
    yield client, source, search, trip_settings(moto_endpoint, unique_name("app"), source, search)


def run_backfill(settings: Settings, **kwargs: Any) -> Any:
    resources = SharedResources(settings.aws, settings.postgres)
    try:
        return backfill_from_settings(settings, resources, **kwargs)
    finally:
        resources.close()


# -- scenario 1 ----------------------------------------------------------------------------------


def test_items_older_than_the_stream_plus_writes_during_the_scan_equal_a_full_replay(
    trip_tables: tuple[Any, str, str, Settings],
) -> None:
    client, source, search, settings = trip_tables
    create_trip_table(client, source, stream=False)
    for n in range(24):
        for part in PARTS:
            put(client, source, f"t{n}", part, "PENDING", n)
    client.update_table(TableName=source, StreamSpecification=STREAM)
    # In the stream, before the hand-off point: the scan must cover these.
    for n in range(0, 24, 3):
        put(client, source, f"t{n}", "FLIGHT", "CONFIRMED", n)

    changed: list[str] = []

    def during_scan(segment: int, chunk: list[ChangeRecord]) -> None:
        # Once: every item of this chunk was just read, so only the stream can bring these
        # changes; plus a delete and a new trip.
        if changed or not chunk:
            return
        for record in chunk:
            trip = record.keys["PK"].removeprefix("TRIP#")
            part = record.keys["SK"].split("#")[0]
            put(client, source, trip, part, "CHANGED-DURING-SCAN", 99)
            changed.append(trip)
        client.delete_item(TableName=source, Key=key(changed[0], "HOTEL"))
        put(client, source, "t-new", "PAYMENT", "COMPLETED", 7)

    report, handoff = run_backfill(
        settings, options=BackfillOptions(segments=2, page_size=10), on_chunk=during_scan
    )
    assert report.complete and report.fed == 72 and changed
    # The hand-off point is a sequence number read before the scan, not LATEST.
    assert [p.checkpoint.isdigit() for p in handoff] == [True] * len(handoff) != []

    with daemon_thread(settings) as daemon:
        wait_caught_up(daemon)
    expected = expected_documents(client, source)
    assert documents(client, search) == expected
    assert "hotel_name" not in expected[changed[0]] and "t-new" in expected


def test_a_scanned_item_older_than_a_stream_change_does_not_overwrite_it(
    trip_tables: tuple[Any, str, str, Settings],
) -> None:
    client, source, search, settings = trip_tables
    create_trip_table(client, source, stream=True)
    put(client, source, "t1", "FLIGHT", "PENDING", 1)

    def stream_overtakes_the_scan(segment: int, chunk: list[ChangeRecord]) -> None:
        # The scan holds PENDING; the item becomes CANCELLED and the daemon applies that
        # before the scanned page is fed.
        if not chunk:
            return
        put(client, source, "t1", "FLIGHT", "CANCELLED", 1)
        with daemon_thread(settings) as daemon:
            wait_caught_up(daemon)
            wait_until(
                lambda: documents(client, search).get("t1", {}).get("flight_status") == "CANCELLED",
                what="the stream applied CANCELLED",
            )

    report, _ = run_backfill(
        settings, options=BackfillOptions(segments=1), on_chunk=stream_overtakes_the_scan
    )
    assert report.fed == 1 and report.outcome.stale == 1
    assert documents(client, search)["t1"]["flight_status"] == "CANCELLED"


# -- interrupt and resume --------------------------------------------------------------------------


def write_config(path: Path, settings: Settings) -> Path:
    search = settings.projections[0].settings["table"]
    path.write_text(
        f"""
application = "{settings.application}"
[source]
kind = "dynamodb"
table = "{settings.source.table}"
[aws]
endpoint_url = "{settings.aws.endpoint_url}"
region = "us-east-1"
[[projections]]
name = "trip_search"
class = "projections.scenarios.trip_search:TripSearchProjection"
settings = {{ table = "{search}" }}
"""
    )
    return path


def backfill_process(config: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "consumer.cli.backfill", "--config", str(config), "--json", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def summary(process: subprocess.Popen[bytes]) -> tuple[int, dict[str, Any]]:
    out, err = process.communicate(timeout=60)
    lines = out.decode().strip().splitlines()
    assert lines, err.decode()
    return process.returncode, orjson.loads(lines[-1])


def test_sigterm_stops_the_backfill_and_a_second_run_resumes_where_it_stopped(
    trip_tables: tuple[Any, str, str, Settings], tmp_path: Path
) -> None:
    client, source, search, settings = trip_tables
    create_trip_table(client, source, stream=True)
    for n in range(60):
        for part in PARTS:
            put(client, source, f"t{n}", part, "CONFIRMED", n)
    config = write_config(tmp_path / "backfill.toml", settings)
    store = BackfillProgressStore(client, progress_table(settings))
    run = run_name(source, ["trip_search"])

    def saved_items() -> int:
        try:
            return sum(p.items for p in store.load(run, 2).values())
        except client.exceptions.ResourceNotFoundException:
            return 0

    # Slowed to 40 items/s so the signal lands mid-scan (180 items: about 4.5 s).
    first = backfill_process(config, "--segments", "2", "--page-size", "5", "--rate", "40")
    wait_until(lambda: saved_items() >= 20, timeout=30, interval=0.05, what="pages saved")
    first.send_signal(signal.SIGTERM)
    code, stopped = summary(first)
    assert code == 128 + signal.SIGTERM
    assert stopped["interrupted"] and not stopped["complete"]
    assert 20 <= stopped["fed"] < 180 and stopped["fed"] == saved_items()

    code, resumed = summary(backfill_process(config, "--segments", "2", "--page-size", "5"))
    assert code == 0 and resumed["complete"]
    assert resumed["segments_resumed"] + resumed["segments_already_done"] == 2
    # Nothing fed twice: finished pages and segments were not scanned again.
    assert resumed["fed"] == 180 - stopped["fed"]
    assert resumed["applied"] == resumed["fed"] and resumed["stale_skipped"] == 0
    assert documents(client, search) == expected_documents(client, source)

    # A different segmentation cannot resume this progress.
    other = backfill_process(config, "--segments", "3")
    _, err = other.communicate(timeout=60)
    assert other.returncode == 1 and b"--segments 2" in err
    assert DynamoDBLeaseStore(client, settings.lease_table).list_leases() != []


# -- scenario 2: the event store into PostgreSQL ---------------------------------------------


def create_events_table(client: Any, table: str, sort_key: str, sort_type: str) -> None:
    client.create_table(
        TableName=table,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            {"AttributeName": "aggregate_id", "AttributeType": "S"},
            {"AttributeName": sort_key, "AttributeType": sort_type},
        ],
        KeySchema=[
            {"AttributeName": "aggregate_id", "KeyType": "HASH"},
            {"AttributeName": sort_key, "KeyType": "RANGE"},
        ],
    )


@pytest.mark.parametrize(
    ("sort_key", "sort_type", "version_attribute"),
    [
        # The seed's schema: the version is the sort key (order picked automatically).
        ("version", "N", None),
        # Keyed by event id: scan and Query return an aggregate's events out of version order.
        ("event_id", "S", "version"),
    ],
)
def test_the_event_store_is_replayed_per_aggregate_in_version_order(
    aws_client: Callable[..., Any],
    unique_name: Callable[[str], str],
    moto_endpoint: str,
    pg_dsn: str,
    sort_key: str,
    sort_type: str,
    version_attribute: str | None,
) -> None:
    client, kinesis = aws_client("dynamodb"), aws_client("kinesis")
    table, stream = unique_name("events"), unique_name("ec-events")
    create_events_table(client, table, sort_key, sort_type)
    kinesis.create_stream(StreamName=stream, ShardCount=1)
    events = shop_scenario().events
    for n, event in enumerate(events):
        # The same created_at as the reference's stream records (scenario.records).
        item = event.item(T0 + timedelta(seconds=n))
        item["event_id"] = hashlib.sha1(
            f"{event.aggregate_id}/{event.version}".encode()
        ).hexdigest()
        client.put_item(TableName=table, Item=to_image(item))
    settings = load_settings(
        None,
        application=unique_name("shop"),
        source={"kind": "kinesis", "stream_name": stream, "table": table},
        aws={"endpoint_url": moto_endpoint, "region": "us-east-1"},
        postgres={"dsn": pg_dsn},
        projections=[
            {"name": "shop", "class": "projections.scenarios.shop.projection:ShopProjection"}
        ],
    )
    with ConnectionPool(pg_dsn, min_size=1, max_size=2) as pool:
        shop = ShopProjection("shop", pool)
        shop.migrate()
        shop.apply(records(events))
        with psycopg.connect(pg_dsn) as conn:
            reference = dump(conn)
            conn.execute(
                "TRUNCATE read_products, read_carts, read_orders, read_inventory, "
                "shop_aggregate_versions"
            )
    options = BackfillOptions(segments=3, page_size=4, version_attribute=version_attribute)
    report, handoff = run_backfill(settings, options=options)
    assert report.complete and not report.failed_keys
    assert report.fed == len(events) and report.outcome.applied == len(events)
    # The Kinesis stream's position was recorded for the daemon to take over.
    assert [p.created for p in handoff] == [True]
    with psycopg.connect(pg_dsn) as conn:
        assert dump(conn) == reference
