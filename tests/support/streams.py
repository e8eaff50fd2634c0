"""Streams for tests: a Kinesis stream that takes reads and writes, a table with a stream."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.fixtures.servers import wait_until


def stream_active(client: Any, name: str) -> bool:
    """True when the stream accepts reads and writes (not CREATING/UPDATING)."""
    summary = client.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
    return bool(summary["StreamStatus"] == "ACTIVE")


def kinesis_stream(client: Any, name: str, shards: int = 1) -> None:
    """Create a Kinesis stream and wait until it is ACTIVE."""
    client.create_stream(StreamName=name, ShardCount=shards)
    wait_until(lambda: stream_active(client, name), timeout=30, what=f"stream {name}")


def dynamodb_table_with_stream(aws_client: Callable[..., Any], name: str, view: str) -> str:
    """Create a table keyed by pk with a stream of `view`; returns its stream ARN."""
    table = aws_client("dynamodb").create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": view},
    )
    return str(table["TableDescription"]["LatestStreamArn"])
