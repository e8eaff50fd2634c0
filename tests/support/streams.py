"""Kinesis streams for tests: create one and wait until it takes reads and writes."""

from __future__ import annotations

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
