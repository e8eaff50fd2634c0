"""The Kinesis -> PostgreSQL benchmark's daemon side still runs, at a tiny size (no timing)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import boto3
import psycopg
import pytest

from bench.kinesis_postgres_bench import (
    REGION,
    TABLE,
    Endpoints,
    create_stream,
    daemon_command,
    make_events,
    measure,
    put_events,
)

pytestmark = pytest.mark.integration


def test_the_daemon_side_applies_every_record(
    kinesis_local_endpoint: str,
    moto_endpoint: str,
    pg_dsn: str,
    tmp_path: Path,
    unique_name: Callable[[str], str],
) -> None:
    stream = unique_name("bench-smoke")
    endpoints = Endpoints(kinesis_local_endpoint, moto_endpoint, pg_dsn)
    client = boto3.client("kinesis", region_name=REGION, endpoint_url=kinesis_local_endpoint)
    create_stream(client, stream, 2)
    put_events(client, stream, make_events(200, 50))
    command = daemon_command(endpoints, stream, tmp_path)
    # measure() returns only once sum(version) over the table equals the 200 records (each
    # key's stored version counts its events applied); it raises if the daemon dies.
    measured = measure("daemon", command, endpoints, 200, tmp_path / "sides.log", timeout=120)
    assert measured.records <= 200 and measured.seconds_from_spawn > 0
    with psycopg.connect(pg_dsn) as conn:
        stored = conn.execute(f"SELECT count(*), max(version) FROM {TABLE}").fetchone()
    assert stored == (50, 4)  # 50 keys, each at its 4th and last version
