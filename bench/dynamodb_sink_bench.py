"""DynamoDB sink vs the tutorials' consumer, side by side in one run against a moto server.

Both project the same TripTable change records into their own TripSearchTable:
- baseline: one unconditional `Table.update_item` per record, one at a time (the seed's
  Lambda consumer, with boto3's resource layer and TypeSerializer);
- sink: `TripSearchProjection` per batch (guarded UpdateItem, coalesced per key and
  component, keys written concurrently).
The final tables are compared on their read-model fields, so a fast but wrong sink fails.

Run: `python -m bench dynamodb_sink [--records N --keys K ...]`, or until bench/__main__.py
exists, `python -m bench.dynamodb_sink_bench`. `--extra-latency-ms` adds a sleep before every
request on both sides to stand in for a real network round trip (moto on loopback answers in
about a millisecond; DynamoDB in-region is several); it is off unless asked for.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config

from consumer.record import ChangeRecord
from projections.scenarios.trip_search import (
    COMPONENTS,
    TripSearchProjection,
    create_table,
    iso_utc,
)

REGION = "us-east-1"
STATUSES = ("PENDING", "CONFIRMED", "CANCELLED", "CANCELED", "REFUNDED", "COMPLETED")


@dataclass(frozen=True, slots=True)
class Result:
    """One side's figures."""

    name: str
    records: int
    seconds: float
    update_calls: int

    @property
    def rate(self) -> float:
        return self.records / self.seconds if self.seconds else float("inf")


def make_records(count: int, keys: int, seed: int = 7) -> list[ChangeRecord]:
    """`count` changes to FLIGHT/HOTEL/PAYMENT items of `keys` trips, in stream order."""
    rng = random.Random(seed)
    records = []
    seen: set[tuple[int, int]] = set()
    for i in range(count):
        trip, part = rng.randrange(keys), rng.randrange(len(COMPONENTS))
        component = COMPONENTS[part]
        status = rng.choice(STATUSES)
        image: dict[str, Any] = {
            "PK": f"TRIP#trip-{trip}",
            "SK": f"{component.sk_prefix}{part}",
            "status": status,
        }
        for source, _ in component.fields:
            if source == "amount":
                image[source] = rng.randrange(1000, 100000)
            elif source != "status":
                image[source] = f"{source}-{rng.randrange(1000)}"
        event = "MODIFY" if (trip, part) in seen else "INSERT"
        seen.add((trip, part))
        records.append(
            ChangeRecord(
                source="dynamodb",
                stream="bench",
                shard_id="shardId-bench",
                sequence_number=str(10**20 + i),
                event_name=event,
                keys={"PK": image["PK"], "SK": image["SK"]},
                new_image=image,
                old_image=None,
                approximate_creation_time=1_772_355_600 + i,
                view_type="NEW_AND_OLD_IMAGES",
            )
        )
    return records


def count_update_calls(client: Any) -> list[int]:
    """A one-element counter of UpdateItem calls the client really makes."""
    counter = [0]

    def count(**_: Any) -> None:
        counter[0] += 1

    client.meta.events.register("before-parameter-build.dynamodb.UpdateItem", count)
    return counter


def add_latency(client: Any, milliseconds: float) -> None:
    """Sleep before each request: a stand-in for network round trips, clearly not moto's."""
    if milliseconds > 0:
        client.meta.events.register(
            "before-send.dynamodb", lambda **_: time.sleep(milliseconds / 1000)
        )


def run_baseline(
    endpoint: str, table: str, records: Sequence[ChangeRecord], latency: float
) -> Result:
    """The tutorial: deserialize, one `update_item` per record, in order, unconditionally."""
    resource = boto3.resource("dynamodb", region_name=REGION, endpoint_url=endpoint)
    add_latency(resource.meta.client, latency)
    calls = count_update_calls(resource.meta.client)
    search_table = resource.Table(table)
    by_prefix = {component.sk_prefix: component for component in COMPONENTS}
    started = time.perf_counter()
    for record in records:
        image = record.new_image or {}
        component = by_prefix[str(image["SK"]).split("#")[0] + "#"]
        fields = {target: image[source] for source, target in component.fields}
        fields["updated_at"] = iso_utc(record.approximate_creation_time)
        names = {f"#f{i}": name for i, name in enumerate(fields)}
        values = {f":v{i}": value for i, value in enumerate(fields.values())}
        search_table.update_item(
            Key={"trip_id": str(image["PK"]).removeprefix("TRIP#")},
            UpdateExpression="SET " + ", ".join(f"#f{i} = :v{i}" for i in range(len(fields))),
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )
    return Result(
        "baseline (sequential, 1 call/record)",
        len(records),
        time.perf_counter() - started,
        calls[0],
    )


def run_sink(
    endpoint: str,
    table: str,
    records: Sequence[ChangeRecord],
    latency: float,
    batch: int,
    workers: int,
) -> Result:
    """This daemon's projection: batches of `batch` records through the guarded sink."""
    client = boto3.client(
        "dynamodb",
        region_name=REGION,
        endpoint_url=endpoint,
        config=Config(max_pool_connections=max(workers, 10)),
    )
    add_latency(client, latency)
    calls = count_update_calls(client)
    projection = TripSearchProjection(client, table=table, max_workers=workers)
    started = time.perf_counter()
    try:
        for start in range(0, len(records), batch):
            projection.apply(records[start : start + batch])
    finally:
        projection.close()
    name = f"sink ({workers} workers, batch {batch})"
    return Result(name, len(records), time.perf_counter() - started, calls[0])


def read_model(client: Any, table: str) -> dict[str, dict[str, Any]]:
    """Every document minus the guards, to prove both sides built the same read model."""
    guards = {component.guard for component in COMPONENTS}
    documents: dict[str, dict[str, Any]] = {}
    for page in client.get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
        for item in page["Items"]:
            documents[item["trip_id"]["S"]] = {k: v for k, v in item.items() if k not in guards}
    return documents


def start_moto(module: str = "moto.server") -> tuple[subprocess.Popen[bytes], str]:
    """A moto server in its own process, so its CPU is not the benchmark's.

    `module` runs moto.server's command line (bench.moto_json_pages: GetRecords by json.dumps).
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", module, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto server exited with {process.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return process, f"http://127.0.0.1:{port}"
        time.sleep(0.1)  # waiting for a child process to listen, not synchronizing tests
    process.kill()
    raise RuntimeError("moto server did not start within 60s")


def main(argv: Sequence[str] | None = None) -> int:
    """Run both sides on the same records and print records/s, the ratio and UpdateItem calls."""
    parser = argparse.ArgumentParser(prog="bench dynamodb_sink", description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--keys", type=int, default=100, help="distinct trips")
    parser.add_argument("--batch", type=int, default=100, help="records per apply()")
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--extra-latency-ms", type=float, default=0.0)
    parser.add_argument("--endpoint-url", help="use this moto/DynamoDB endpoint instead")
    args = parser.parse_args(argv)

    # Fake credentials unless some are set: the endpoint is local, nothing reaches AWS.
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(name, "bench")
    process, endpoint = (None, args.endpoint_url) if args.endpoint_url else start_moto()
    try:
        client = boto3.client("dynamodb", region_name=REGION, endpoint_url=endpoint)
        tables = [f"bench-{side}-{uuid.uuid4().hex[:6]}" for side in ("baseline", "sink")]
        for table in tables:
            create_table(client, table)
        records = make_records(args.records, args.keys)
        baseline = run_baseline(endpoint, tables[0], records, args.extra_latency_ms)
        sink = run_sink(
            endpoint, tables[1], records, args.extra_latency_ms, args.batch, args.workers
        )
        same = read_model(client, tables[0]) == read_model(client, tables[1])
        for table in tables:
            client.delete_table(TableName=table)
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=10)

    print(
        f"dynamodb_sink: {args.records} records over {args.keys} trips x 3 components, "
        f"extra latency {args.extra_latency_ms:g} ms/request"
    )
    for result in (baseline, sink):
        print(
            f"  {result.name:<40} {result.rate:9.0f} records/s  "
            f"{result.seconds:7.2f} s  {result.update_calls:6d} UpdateItem calls"
        )
    print(
        f"  ratio sink/baseline: {sink.rate / baseline.rate:.1f}x records/s, "
        f"{sink.update_calls / baseline.update_calls:.2f}x calls; same read model: {same}"
    )
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
