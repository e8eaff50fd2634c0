"""Backfill rate against a moto server with 1, 2 and 4 Scan segments (ratio to 1 segment).

Two sides per segment count, on one TripTable of FLIGHT/HOTEL/PAYMENT items:
- scan: `Backfill` feeding a projection that only counts (the Scan, decoding and progress
  writes alone);
- trip_search: `Backfill` feeding `TripSearchProjection` into an empty TripSearchTable (the
  whole backfill: one guarded UpdateItem per item). The result is checked: one document per
  trip with every component's guard at position 0.

Run: `python -m bench backfill [--trips N --page-size P --extra-latency-ms L]`.
`--extra-latency-ms` sleeps before every request to stand for a network round trip (moto on
loopback answers in about a millisecond of latency but several of CPU); off unless asked.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from bench.dynamodb_sink_bench import add_latency, start_moto
from consumer.aws import make_client
from consumer.backfill.progress import BackfillProgressStore
from consumer.backfill.runner import Backfill, BackfillOptions
from consumer.backfill.scan import describe_table
from consumer.record import ChangeRecord
from consumer.sources.attribute_values import to_image
from projections.projection import BaseProjection
from projections.results import Outcome, Results
from projections.scenarios.trip_search import GUARD_ATTRIBUTES, TripSearchProjection, create_table

REGION = "us-east-1"
SEGMENTS = (1, 2, 4)


class CountingProjection(BaseProjection):
    """Accepts every record and writes nothing: isolates the Scan side."""

    name = "count"

    def apply(self, records: Sequence[ChangeRecord]) -> Results:
        return Results.of(records, Outcome.APPLIED)


@dataclass(frozen=True, slots=True)
class Result:
    """One run's figures."""

    side: str
    segments: int
    items: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.items / self.seconds if self.seconds else float("inf")


def fill_source(client: Any, table: str, trips: int) -> int:
    """TripTable with three components per trip (no stream: a backfill needs none)."""
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
    )
    items = []
    for n in range(trips):
        trip = f"trip-{n:06d}"
        base = {"PK": f"TRIP#{trip}", "trip_id": trip, "status": "CONFIRMED"}
        items += [
            {**base, "SK": f"FLIGHT#{trip}", "flight_number": f"NH{n % 1000:03d}",
             "departure_time": "2026-03-15T10:00:00", "arrival_time": "2026-03-15T14:00:00"},
            {**base, "SK": f"HOTEL#{trip}", "hotel_name": f"Hotel {n % 97}",
             "check_in_date": "2026-03-15", "check_out_date": "2026-03-17"},
            {**base, "SK": f"PAYMENT#{trip}", "amount": 1000 + n, "currency": "JPY"},
        ]  # fmt: skip
    for start in range(0, len(items), 25):
        requests = [{"PutRequest": {"Item": to_image(i)}} for i in items[start : start + 25]]
        client.batch_write_item(RequestItems={table: requests})
    return len(items)


def run_once(
    client: Any, source: str, side: str, segments: int, page_size: int, workers: int
) -> tuple[Result, str | None]:
    """One backfill of the whole table; the search table's name for the trip_search side."""
    progress = BackfillProgressStore(client, f"bench-backfill-{uuid.uuid4().hex[:8]}")
    progress.ensure_table()
    search: str | None = None
    if side == "scan":
        projection: Any = CountingProjection()
    else:
        search = f"TripSearch-{uuid.uuid4().hex[:8]}"
        create_table(client, search)
        projection = TripSearchProjection(client, search, max_workers=workers)
    job = Backfill(
        client,
        describe_table(client, source),
        [projection],
        progress,
        f"bench#{side}#{segments}",
        BackfillOptions(segments=segments, page_size=page_size),
    )
    started = time.perf_counter()
    report = job.run()
    seconds = time.perf_counter() - started
    if side != "scan":
        projection.close()
    assert report.complete and not report.failed_keys, report
    return Result(side, segments, report.fed, seconds), search


def check_read_model(client: Any, table: str, trips: int) -> bool:
    """One document per trip, every component guarded at the scan's position 0."""
    documents = 0
    for page in client.get_paginator("scan").paginate(TableName=table):
        for item in page["Items"]:
            documents += 1
            guards = {item[g]["S"] for g in GUARD_ATTRIBUTES if g in item}
            if len(guards) != 1 or set(next(iter(guards))) - {"0", "."}:
                return False
    return documents == trips


def main(argv: Sequence[str] | None = None) -> int:
    """Fill a table, backfill it with 1, 2 and 4 segments on both sides, print the figures."""
    parser = argparse.ArgumentParser(prog="bench backfill", description=__doc__.split("\n")[0])
    parser.add_argument("--trips", type=int, default=400, help="3 items per trip")
    parser.add_argument("--page-size", type=int, default=100)
    parser.add_argument("--workers", type=int, default=16, help="sink threads per projection")
    parser.add_argument("--extra-latency-ms", type=float, default=0.0)
    parser.add_argument("--endpoint-url", help="use this moto/DynamoDB endpoint instead")
    args = parser.parse_args(argv)
    # Segment threads log at info; the figures are the output here.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    # moto accepts any credentials; never reach a real account from a benchmark.
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(name, "bench")
    process, endpoint = (None, args.endpoint_url) if args.endpoint_url else start_moto()
    try:
        client = make_client("dynamodb", region=REGION, endpoint_url=endpoint)
        source = f"TripTable-{uuid.uuid4().hex[:8]}"
        items = fill_source(client, source, args.trips)
        if args.extra_latency_ms:
            add_latency(client, args.extra_latency_ms)
        print(f"{items} items ({args.trips} trips), page size {args.page_size}"
              + (f", {args.extra_latency_ms} ms simulated latency per call"
                 if args.extra_latency_ms else ""))  # fmt: skip
        results: list[Result] = []
        correct = True
        for side in ("scan", "trip_search"):
            for segments in SEGMENTS:
                result, search = run_once(
                    client, source, side, segments, args.page_size, args.workers
                )
                results.append(result)
                if search is not None:
                    correct &= check_read_model(client, search, args.trips)
        print("| side | segments | items | seconds | items/s | ratio to 1 segment |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for result in results:
            one = next(r for r in results if r.side == result.side and r.segments == 1)
            print(
                f"| {result.side} | {result.segments} | {result.items} | {result.seconds:.2f} "
                f"| {result.rate:,.0f} | {result.rate / one.rate:.2f}x |"
            )
        print(f"read models correct: {correct}")
        return 0 if correct else 1
    finally:
        if process is not None:
            process.terminate()
            process.wait(10)
