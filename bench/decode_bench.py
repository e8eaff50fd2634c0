"""Decoding GetRecords pages: the tutorials' path against this daemon's, side by side.

(A) botocore's generic JSON parser with the operation's output shape, then boto3's
    TypeDeserializer per image (json.loads of Data first, on Kinesis): what the tutorials do.
(B) orjson.loads of the body, then DynamoDBStreamsDecoder / KinesisDecoder per record into
    ChangeRecords: what the shard loop does.

    python -m bench decode            # measure (pinned to one core), print a table
    python -m bench decode --record   # re-record bench/samples/ from moto's server
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import botocore.parsers
import botocore.session
import orjson
from boto3.dynamodb.types import TypeDeserializer

from consumer.record import RawRecord
from consumer.sources.attribute_values import from_image
from consumer.sources.decode import DynamoDBStreamsDecoder, KinesisDecoder
from consumer.sources.kpl import deaggregate

SAMPLES = Path(__file__).parent / "samples"
STREAMS_PAGE = SAMPLES / "dynamodb_streams_get_records.json.gz"
KINESIS_PAGE = SAMPLES / "kinesis_get_records.json.gz"
PAGE_SIZE = 1000
REGION = "us-east-1"


# --- the two paths ------------------------------------------------------------------------


def botocore_path(service: str, operation: str) -> Callable[[bytes], int]:
    """(A): botocore's parser on the body, TypeDeserializer on every image."""
    model = botocore.session.get_session().get_service_model(service)
    shape = model.operation_model(operation).output_shape
    parser = botocore.parsers.create_parser(model.protocol)
    deserializer = TypeDeserializer()

    def image(raw: dict[str, Any]) -> dict[str, Any]:
        return {k: deserializer.deserialize(v) for k, v in raw.items()}

    def run(body: bytes) -> int:
        parsed = parser.parse({"body": body, "headers": {}, "status_code": 200}, shape)
        records = parsed["Records"]
        for record in records:
            # On Kinesis the change is the JSON in Data (already base64-decoded by botocore).
            change = (
                record["dynamodb"]
                if service == "dynamodbstreams"
                else json.loads(record["Data"])["dynamodb"]
            )
            image(change["Keys"])
            for name in ("NewImage", "OldImage"):
                if name in change:
                    image(change[name])
        return len(records)

    return run


def daemon_streams_path(stream_arn: str) -> Callable[[bytes], int]:
    """(B) for DynamoDB Streams: orjson, then the decoder, as the shard loop calls it."""
    decoder = DynamoDBStreamsDecoder(stream_arn)

    def run(body: bytes) -> int:
        count = 0
        for record in orjson.loads(body)["Records"]:
            raw = RawRecord(record["dynamodb"]["SequenceNumber"], None, record)
            count += len(decoder.decode(raw, "shardId-bench"))
        return count

    return run


def daemon_kinesis_path(stream_name: str) -> Callable[[bytes], int]:
    """(B) for Kinesis: orjson, then the decoder (base64, orjson of Data, AttributeValues)."""
    decoder = KinesisDecoder(stream_name)

    def run(body: bytes) -> int:
        count = 0
        for record in orjson.loads(body)["Records"]:
            raw = RawRecord(record["SequenceNumber"], record["ApproximateArrivalTimestamp"], record)
            count += len(decoder.decode(raw, "shardId-bench"))
        return count

    return run


# --- measuring ----------------------------------------------------------------------------


def rate(run: Callable[[], int], seconds: float) -> float:
    """Items per second of `run`'s fastest call within `seconds` (after a warm-up call).

    The fastest call, as timeit does: on a shared machine a slower call measures the
    neighbours, not the code; what is left is this core's capacity.
    """
    run()
    best, deadline = float("inf"), time.perf_counter() + seconds
    while True:
        start = time.perf_counter()
        items = run()
        elapsed = time.perf_counter() - start
        best = min(best, elapsed / items)
        if start + elapsed >= deadline:
            return 1 / best


def compare(
    name: str, unit: str, a: Callable[[], int], b: Callable[[], int], rounds: int, seconds: float
) -> dict[str, Any]:
    """Alternate A and B for `rounds` rounds; medians of each and the median ratio."""
    a_rates, b_rates = [], []
    for _ in range(rounds):
        a_rates.append(rate(a, seconds))
        b_rates.append(rate(b, seconds))
    ratios = [bb / aa for aa, bb in zip(a_rates, b_rates, strict=True)]
    return {
        "name": name,
        "unit": unit,
        "a": statistics.median(a_rates),
        "b": statistics.median(b_rates),
        "ratio": statistics.median(ratios),
        "ratio_min": min(ratios),
    }


def pin_to_one_core() -> str:
    """Run on one CPU so the figures are per core; say which."""
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned (no sched_setaffinity)"
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return f"pinned to CPU {cpu}"


def load(path: Path) -> bytes:
    if not path.exists():
        raise SystemExit(f"{path} is missing: run `python -m bench decode --record` first")
    return gzip.decompress(path.read_bytes())


def measure(rounds: int, seconds: float) -> list[dict[str, Any]]:
    """Every comparison of this benchmark, on the recorded pages."""
    streams_body, kinesis_body = load(STREAMS_PAGE), load(KINESIS_PAGE)
    streams_page, kinesis_page = orjson.loads(streams_body), orjson.loads(kinesis_body)
    streams_a = botocore_path("dynamodbstreams", "GetRecords")
    streams_b = daemon_streams_path(streams_page["StreamArn"])
    kinesis_a = botocore_path("kinesis", "GetRecords")
    kinesis_b = daemon_kinesis_path("bench")
    results = [
        compare(
            "DynamoDB Streams GetRecords page",
            "records/s",
            lambda: streams_a(streams_body),
            lambda: streams_b(streams_body),
            rounds,
            seconds,
        ),
        compare(
            "Kinesis GetRecords page (DynamoDB integration JSON)",
            "records/s",
            lambda: kinesis_a(kinesis_body),
            lambda: kinesis_b(kinesis_body),
            rounds,
            seconds,
        ),
    ]
    images = [
        image
        for record in streams_page["Records"]
        for image in (record["dynamodb"].get("NewImage"), record["dynamodb"].get("OldImage"))
        if image is not None
    ]
    deserializer = TypeDeserializer()

    def boto3_images() -> int:
        for image in images:
            {k: deserializer.deserialize(v) for k, v in image.items()}
        return len(images)

    def our_images() -> int:
        for image in images:
            from_image(image)
        return len(images)

    results.append(compare("Item images", "images/s", boto3_images, our_images, rounds, seconds))
    results.append(kpl_comparison(kinesis_page, rounds, seconds))
    return results


def kpl_comparison(kinesis_page: dict[str, Any], rounds: int, seconds: float) -> dict[str, Any]:
    """aws-kinesis-agg's deaggregator against consumer.sources.kpl, on the page packed into
    aggregates."""
    import base64

    from aws_kinesis_agg import deaggregator
    from aws_kinesis_agg.aggregator import RecordAggregator

    aggregates: list[bytes] = []
    aggregator = RecordAggregator()
    for record in kinesis_page["Records"]:
        full = aggregator.add_user_record(record["PartitionKey"], base64.b64decode(record["Data"]))
        if full is not None:
            aggregates.append(full.get_contents()[2])
    aggregates.append(aggregator.clear_and_get().get_contents()[2])
    boto3_style = [
        {"SequenceNumber": "1", "PartitionKey": "p", "ApproximateArrivalTimestamp": 0, "Data": d}
        for d in aggregates
    ]

    def library() -> int:
        return len(list(deaggregator.iter_deaggregate_records(boto3_style, data_format="Boto3")))

    def ours() -> int:
        return sum(len(deaggregate(d)) for d in aggregates)

    return compare("KPL de-aggregation", "user records/s", library, ours, rounds, seconds)


def report(results: Sequence[dict[str, Any]], pinned: str, rounds: int) -> str:
    lines = [
        f"decode benchmark: {pinned}, {rounds} rounds, medians; Python {sys.version.split()[0]}",
        f"{'comparison':52} {'A tutorials/library':>20} {'B stream-projector':>20} {'B/A':>7}",
    ]
    for r in results:
        lines.append(
            f"{r['name']:52} {r['a']:>12,.0f} {r['unit']:<7} {r['b']:>12,.0f} {r['unit']:<7}"
            f" {r['ratio']:>6.1f}x (min {r['ratio_min']:.1f}x)"
        )
    return "\n".join(lines)


# --- recording ----------------------------------------------------------------------------


def trip_items(count: int, seed: int = 2026) -> Iterator[dict[str, Any]]:
    """Deterministic trip items as in seed 001: a FLIGHT, a HOTEL and a PAYMENT per trip."""
    rng = random.Random(seed)
    hotels = ["Hotel Okura Tokyo", "Park Hyatt Kyoto", "Osaka Marriott", "Hilton Sapporo"]
    for n in range(count):
        trip, kind = n // 3, ("FLIGHT", "HOTEL", "PAYMENT")[n % 3]
        day = 1 + trip % 28
        base = {
            "PK": {"S": f"TRIP#trip-{trip:05d}"},
            "SK": {"S": f"{kind}#{kind.lower()}_for_trip-{trip:05d}"},
            "trip_id": {"S": f"trip-{trip:05d}"},
            "entity_type": {"S": kind},
            "status": {"S": "PENDING"},
            "created_at": {"S": f"2026-02-{day:02d}T09:{rng.randrange(60):02d}:00Z"},
            "updated_at": {"S": f"2026-02-{day:02d}T09:{rng.randrange(60):02d}:30Z"},
        }
        if kind == "FLIGHT":
            base |= {
                "flight_number": {"S": f"NH{rng.randrange(1, 999):03d}"},
                "departure_time": {"S": f"2026-03-{day:02d}T{rng.randrange(6, 22):02d}:00:00"},
                "arrival_time": {"S": f"2026-03-{day:02d}T{rng.randrange(8, 24):02d}:30:00"},
                "passengers": {"N": str(rng.randrange(1, 5))},
                "seat_class": {"S": rng.choice(["ECONOMY", "PREMIUM", "BUSINESS"])},
            }
        elif kind == "HOTEL":
            base |= {
                "hotel_name": {"S": rng.choice(hotels)},
                "check_in_date": {"S": f"2026-03-{day:02d}"},
                "check_out_date": {"S": f"2026-03-{day + 2:02d}"},
                "nights": {"N": "2"},
                "rate_per_night": {"N": f"{rng.randrange(8000, 60000)}.{rng.randrange(100):02d}"},
            }
        else:
            base |= {
                "amount": {"N": str(rng.randrange(20000, 300000))},
                "currency": {"S": "JPY"},
                "payment_method": {"S": rng.choice(["CARD", "BANK_TRANSFER"])},
                "tax_rate": {"N": "0.10"},
            }
        yield base


@contextmanager
def moto_server() -> Iterator[str]:
    """moto's server as a subprocess on a free port (the same one the tests use)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.fixtures import aws

    os.environ.update(aws.CREDENTIALS)
    server = aws.moto_endpoint.__wrapped__(Path(tempfile.mkdtemp(prefix="bench-")))
    try:
        yield next(server)
    finally:
        server.close()


def record() -> None:
    """Write both pages: 1000 NEW_AND_OLD_IMAGES trip changes, as DynamoDB Streams and Kinesis
    (the integration's JSON, written by us: moto's streaming destination does not run)."""
    import boto3

    from tests.consumer.samples.recorder import capture_bodies, integration_record

    with moto_server() as url:
        client = lambda service: boto3.client(service, region_name=REGION, endpoint_url=url)  # noqa: E731
        dynamodb, streams, kinesis = (
            client("dynamodb"),
            client("dynamodbstreams"),
            client("kinesis"),
        )
        dynamodb.create_table(
            TableName="TripTable",
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
        arn = dynamodb.describe_table(TableName="TripTable")["Table"]["LatestStreamArn"]
        items = list(trip_items(PAGE_SIZE // 2))
        for item in items:  # INSERTs
            dynamodb.put_item(TableName="TripTable", Item=item)
        for item in items:  # MODIFYs: the saga confirms each part
            dynamodb.put_item(TableName="TripTable", Item={**item, "status": {"S": "CONFIRMED"}})
        shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]
        iterator = streams.get_shard_iterator(
            StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        bodies = capture_bodies(streams, "GetRecords")
        streams.get_records(ShardIterator=iterator, Limit=PAGE_SIZE)
        page = orjson.loads(bodies[-1])
        assert len(page["Records"]) == PAGE_SIZE, len(page["Records"])
        page.pop("NextShardIterator", None)
        STREAMS_PAGE.write_bytes(
            gzip.compress(orjson.dumps({**page, "StreamArn": arn}), 9, mtime=0)
        )

        kinesis.create_stream(StreamName="trip-cdc", ShardCount=1)
        kinesis.get_waiter("stream_exists").wait(StreamName="trip-cdc")
        changes = [integration_record(r, "TripTable") for r in page["Records"]]
        for start in range(0, len(changes), 500):
            kinesis.put_records(
                StreamName="trip-cdc",
                Records=[
                    {"PartitionKey": c["dynamodb"]["Keys"]["PK"]["S"], "Data": orjson.dumps(c)}
                    for c in changes[start : start + 500]
                ],
            )
        shard_id = kinesis.list_shards(StreamName="trip-cdc")["Shards"][0]["ShardId"]
        iterator = kinesis.get_shard_iterator(
            StreamName="trip-cdc", ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        bodies = capture_bodies(kinesis, "GetRecords")
        kinesis.get_records(ShardIterator=iterator, Limit=PAGE_SIZE)
        page = orjson.loads(bodies[-1])
        assert len(page["Records"]) == PAGE_SIZE, len(page["Records"])
        page.pop("NextShardIterator", None)
        KINESIS_PAGE.write_bytes(gzip.compress(orjson.dumps(page), 9, mtime=0))
    for path in (STREAMS_PAGE, KINESIS_PAGE):
        size = len(gzip.decompress(path.read_bytes()))
        print(f"{path}: {path.stat().st_size:,} bytes gzipped, {size:,} bytes of body")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m bench decode`."""
    parser = argparse.ArgumentParser(prog="python -m bench decode", description=__doc__)
    parser.add_argument("--record", action="store_true", help="re-record the pages from moto")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of A then B (default 5)")
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if args.record:
        record()
        return 0
    pinned = pin_to_one_core()
    results = measure(args.rounds, args.seconds)
    if args.json:
        print(json.dumps({"pinned": pinned, "rounds": args.rounds, "results": results}, indent=2))
    else:
        print(report(results, pinned, args.rounds))
    return 0
