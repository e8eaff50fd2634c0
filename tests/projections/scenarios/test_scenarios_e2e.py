"""Scenarios 2-5 through the whole daemon, from writes to the source to the read models.

Real parts: moto's server (DynamoDB, DynamoDB Streams, SNS, SQS), kinesis-local (Kinesis,
realistic sequence numbers) and PostgreSQL. moto's DynamoDB→Kinesis streaming destination
fails, so the shop test writes the integration's JSON change records into Kinesis itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import psycopg
import pytest

from consumer.config import Settings, load_settings
from consumer.demo.trip_saga import create_trip_table, write_saga
from consumer.leases.store import DynamoDBLeaseStore
from consumer.resources import SharedResources
from consumer.runtimes.projection_loader import load_projections
from consumer.sources.attribute_values import to_image
from tests.consumer.runtimes.test_daemon_trip_search import EXPECTED as TRIP_DOCUMENTS
from tests.consumer.runtimes.test_daemon_trip_search import documents
from tests.projections.scenarios.shop.scenario import T0, Event, shop_scenario
from tests.projections.scenarios.test_daily_sales import EXPECTED as DAILY_TOTALS
from tests.projections.scenarios.test_daily_sales import scenario as sales_scenario
from tests.projections.scenarios.test_inventory_alerts import make_topic
from tests.support.daemon import FAST_LEASES, FAST_POLLING, daemon_thread, wait_caught_up
from tests.support.streams import kinesis_stream

pytestmark = pytest.mark.integration


def migrate_all(settings: Settings) -> None:
    """What `stream-projector migrate` does: every configured projection's tables, twice."""
    resources = SharedResources(settings.aws, settings.postgres)
    try:
        for _ in range(2):
            for projection in load_projections(settings.projections, resources):
                projection.migrate()
    finally:
        resources.close()


def run_to_tip(settings: Settings) -> None:
    with daemon_thread(settings) as daemon:
        wait_caught_up(daemon)


def forget_checkpoints(dynamodb: Any, settings: Settings) -> None:
    """Delete every lease: the next run reads every shard from TRIM_HORIZON again (a replay)."""
    store = DynamoDBLeaseStore(dynamodb, settings.lease_table)
    leases = store.list_leases()
    assert leases and all(lease.checkpoint.isdigit() for lease in leases)
    for lease in leases:
        store.delete(lease.lease_key)


# --- Scenarios 2 and 4: the shop's event store via Kinesis → PostgreSQL ----------------------


def integration_record(n: int, event: Event | None, ttl_remove: bool = False) -> bytes:
    """A change record as the DynamoDB→Kinesis integration writes it (seed 002)."""
    created_ms = int(T0.timestamp() * 1000) + n * 1000
    if event is not None:
        item = event.item(T0)
        item["created_at"] = sales_scenario()[n].new_image["created_at"]
        keys = {"aggregate_id": event.aggregate_id, "version": event.version}
        body = {"eventName": "INSERT", "dynamodb": {"Keys": to_image(keys),
                "NewImage": to_image(item)}, "userIdentity": None}  # fmt: skip
    else:
        # A session item the TTL service removed: not an event; the audit log marks it.
        keys = {"aggregate_id": "session-s1", "version": 0}
        body = {"eventName": "REMOVE", "dynamodb": {"Keys": to_image(keys),
                "OldImage": to_image({**keys, "expires": 1})}}  # fmt: skip
        if ttl_remove:
            body["userIdentity"] = {"type": "Service", "principalId": "dynamodb.amazonaws.com"}
    body["dynamodb"] |= {"ApproximateCreationDateTime": created_ms, "SizeBytes": 100,
                         "ApproximateCreationDateTimePrecision": "MILLISECOND"}  # fmt: skip
    body |= {"awsRegion": "us-east-1", "eventID": f"evt-{n}", "recordFormat": "application/json",
             "tableName": "events", "eventSource": "aws:dynamodb"}  # fmt: skip
    return orjson.dumps(body)


def shop_records() -> list[tuple[str, bytes]]:
    """(partition key, data) for every event of the scenario, and one TTL REMOVE."""
    events = shop_scenario().events
    extra = [r for r in sales_scenario()[len(events) :]]
    out = []
    for n, record in enumerate(sales_scenario()):
        image = record.new_image
        event = Event(image["aggregate_id"], image["version"], image["event_type"], image["data"],
                      image["aggregate_type"])  # fmt: skip
        out.append((event.aggregate_id, integration_record(n, event)))
    assert extra  # day-two orders are part of the stream
    out.append(("session-s1", integration_record(len(out), None, ttl_remove=True)))
    return out


def put_all(kinesis: Any, stream: str, records: list[tuple[str, bytes]]) -> None:
    for start in range(0, len(records), 100):
        kinesis.put_records(
            StreamName=stream,
            Records=[
                {"PartitionKey": pk, "Data": data} for pk, data in records[start : start + 100]
            ],
        )


TRIP_SEARCH_CLASS = "projections.scenarios.trip_search:TripSearchProjection"
READ_MODELS = {
    "read_products": "product_id",
    "read_carts": "cart_id",
    "read_orders": "order_id",
    "read_inventory": "product_id",
    "daily_sales": "day",
    "daily_sales_orders": "order_id",
}


def read_models(dsn: str) -> dict[str, list[tuple[Any, ...]]]:
    with psycopg.connect(dsn) as conn:
        models = {
            table: conn.execute(f"SELECT * FROM {table} ORDER BY {key}").fetchall()
            for table, key in READ_MODELS.items()
        }
        models["audit_log"] = conn.execute(
            "SELECT event_id, event_name, keys, before, after, ttl_expiry, changed_at, position "
            "FROM audit_log ORDER BY position"
        ).fetchall()
    return models


@pytest.mark.parametrize("lanes", [1, 4], ids=["one lane", "four lanes"])
def test_shop_events_through_kinesis_reach_every_read_model_once_even_when_replayed(
    lanes: int,
    aws_client: Callable[..., Any],
    kinesis_local_endpoint: str,
    unique_name: Callable[[str], str],
    pg_dsn: str,
    kinesis_env: None,
) -> None:
    kinesis = aws_client("kinesis", kinesis_local_endpoint)
    stream = unique_name("ec-events")
    kinesis_stream(kinesis, stream, 2)
    settings = load_settings(
        None,
        application=unique_name("shop"),
        source={"kind": "kinesis", "stream_name": stream},
        leases=FAST_LEASES,
        # Several batches per shard; with lanes, aggregates are applied concurrently.
        polling={**FAST_POLLING, "max_records": 7, "parallelization_factor": lanes},
        postgres={"dsn": pg_dsn},
        projections=[
            {"name": "shop", "class": "projections.scenarios.shop:ShopProjection"},
            {
                "name": "daily_sales",
                "class": "projections.scenarios.daily_sales:DailySalesProjection",
            },
            {"name": "audit", "class": "projections.scenarios.audit_log:AuditLogProjection"},
        ],
    )
    migrate_all(settings)
    records = shop_records()
    put_all(kinesis, stream, records)
    run_to_tip(settings)
    first = read_models(pg_dsn)

    assert [row[1:] for row in first["daily_sales"]] == [row[1:] for row in DAILY_TOTALS]
    orders = {row[0]: row[4] for row in first["read_orders"]}
    assert orders == {"o1": "shipped", "o2": "cancelled", "o3": "cancelled", "o4": "pending",
                      "o5": "cancelled"}  # fmt: skip
    inventory = {row[0]: row[1:4] for row in first["read_inventory"]}
    assert inventory["p2"] == (50 - 2, 0, 48)
    assert len(first["audit_log"]) == len(records)
    ttl_rows = [row for row in first["audit_log"] if row[5]]
    assert [(row[0], row[1]) for row in ttl_rows] == [(f"evt-{len(records) - 1}", "REMOVE")]

    # Replay: the whole stream read and applied again, twice. Nothing changes anywhere.
    dynamodb = aws_client("dynamodb")
    for _ in range(2):
        forget_checkpoints(dynamodb, settings)
        run_to_tip(settings)
        assert read_models(pg_dsn) == first

    # Duplicate injection: the integration writes some changes twice (new sequence numbers,
    # same eventID). Read models are unchanged; the audit log records each delivery.
    put_all(kinesis, stream, records[::3])
    run_to_tip(settings)
    again = read_models(pg_dsn)
    assert {k: v for k, v in again.items() if k != "audit_log"} == {
        k: v for k, v in first.items() if k != "audit_log"
    }
    assert len(again["audit_log"]) == len(records) + len(records[::3])
    changes = {row[0]: row[:7] for row in first["audit_log"]}
    assert all(changes[row[0]] == row[:7] for row in again["audit_log"])


# --- Scenario 3: product stock on DynamoDB Streams → SNS alerts -------------------------------


def create_shop_table(dynamodb: Any, table: str, view_type: str) -> None:
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
        StreamSpecification={"StreamEnabled": True, "StreamViewType": view_type},
    )


def set_stock(dynamodb: Any, table: str, product: str, stock: int) -> None:
    dynamodb.update_item(
        TableName=table,
        Key={"PK": {"S": f"PRODUCT#{product}"}, "SK": {"S": "METADATA"}},
        UpdateExpression="SET Stock = :s",
        ExpressionAttributeValues={":s": {"N": str(stock)}},
    )


def test_stock_changes_raise_each_alert_once_even_when_the_stream_is_replayed(
    aws_client: Callable[..., Any], moto_endpoint: str, unique_name: Callable[[str], str]
) -> None:
    dynamodb = aws_client("dynamodb")
    table = unique_name("DynamoDBShop")
    create_shop_table(dynamodb, table, "NEW_AND_OLD_IMAGES")
    topic = make_topic(aws_client, unique_name("inventory-alerts"))
    settings = load_settings(
        None,
        application=unique_name("alerts"),
        source={"kind": "dynamodb", "table": table},
        aws={"endpoint_url": moto_endpoint, "region": "us-east-1"},
        leases=FAST_LEASES,
        polling=FAST_POLLING,
        projections=[
            {
                "name": "inventory_alerts",
                "class": "projections.scenarios.inventory_alerts:InventoryAlertsProjection",
                "settings": {"topic_arn": topic.arn, "idempotency_table": unique_name("idem")},
            }
        ],
    )
    migrate_all(settings)
    for product, name in (("p001", "テスト商品"), ("p002", "マグカップ")):
        dynamodb.put_item(
            TableName=table,
            Item={"PK": {"S": f"PRODUCT#{product}"}, "SK": {"S": "METADATA"},
                  "EntityType": {"S": "PRODUCT"}, "ProductId": {"S": product},
                  "Name": {"S": name}, "Stock": {"N": "15"}},
        )  # fmt: skip
    # A review item on the product's partition: not METADATA, never alerts.
    dynamodb.put_item(
        TableName=table,
        Item={"PK": {"S": "PRODUCT#p001"}, "SK": {"S": "REVIEW#1"}, "Stock": {"N": "0"}},
    )
    for product, stock in (("p001", 12), ("p001", 5), ("p002", 11), ("p001", 0), ("p002", 9)):
        set_stock(dynamodb, table, product, stock)
    run_to_tip(settings)
    alerts = sorted((m["product_id"], m["alert"], m["new_stock"]) for m in topic.messages())
    assert alerts == [
        ("p001", "LOW_STOCK", 5),
        ("p001", "OUT_OF_STOCK", 0),
        ("p002", "LOW_STOCK", 9),
    ]
    forget_checkpoints(dynamodb, settings)
    run_to_tip(settings)
    assert topic.messages() == []


# --- Scenario 5: a single table on a KEYS_ONLY stream, routed by key prefix -------------------


def test_keys_only_single_table_routed_to_a_search_model_through_consistent_reads(
    aws_client: Callable[..., Any],
    moto_endpoint: str,
    unique_name: Callable[[str], str],
    pg_dsn: str,
) -> None:
    dynamodb = aws_client("dynamodb")
    source, search = unique_name("Single"), unique_name("TripSearch")
    create_shop_table(dynamodb, source, "KEYS_ONLY")
    settings = load_settings(
        None,
        application=unique_name("single"),
        source={"kind": "dynamodb", "table": source},
        aws={"endpoint_url": moto_endpoint, "region": "us-east-1"},
        leases=FAST_LEASES,
        polling=FAST_POLLING,
        postgres={"dsn": pg_dsn},
        projections=[
            {
                "name": "app",
                "class": "projections.routing:Router",
                "settings": {
                    "routes": [
                        {
                            "name": "trips",
                            "pk_prefix": "TRIP#",
                            "class": "projections.image_fetch:ImageFetchingProjection",
                            "settings": {
                                "projection": TRIP_SEARCH_CLASS,
                                "settings": {"table": search},
                            },
                        }
                    ]
                },
            },
            {"name": "audit", "class": "projections.scenarios.audit_log:AuditLogProjection"},
        ],
    )
    migrate_all(settings)
    create_trip_table(dynamodb, source)  # exists: kept, with its KEYS_ONLY stream
    write_saga(dynamodb, table=source)
    # Other entities of the single table: no route wants them.
    dynamodb.put_item(
        TableName=source,
        Item={"PK": {"S": "USER#u1"}, "SK": {"S": "METADATA"}, "EntityType": {"S": "USER"}},
    )
    run_to_tip(settings)
    assert documents(dynamodb, search) == TRIP_DOCUMENTS
    with psycopg.connect(pg_dsn) as conn:
        logged = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE after IS NULL AND before IS NULL) "
            "FROM audit_log"
        ).fetchone()
    assert logged == (11, 11)  # ten saga writes and the user; KEYS_ONLY carries no images
