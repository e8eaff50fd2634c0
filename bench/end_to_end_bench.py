"""Stream to read model, end to end: the tutorials' consumer against this daemon, in one run.

Scenario 1 of seed 001. The benchmark starts a moto server, creates a TripTable with a
NEW_AND_OLD_IMAGES stream and writes `--changes` FLIGHT/HOTEL/PAYMENT changes of `--trips`
trips to it (the same component of a trip is written again and again, so keys repeat: the
first write of an item is an INSERT, every later one a MODIFY). Then, on that one stream:

- A, the tutorials' consumer: a boto3 `dynamodbstreams` client with botocore's own parser,
  `describe_stream`, TRIM_HORIZON per shard, `get_records` in a loop, `TypeDeserializer` on
  the image, and one unconditional `Table.update_item` per record, one at a time (the shape of
  seed 001's stream handler), into its own TripSearchTable; it stops at the first empty page.
- B, this daemon: `build_daemon(settings)` + `run_daemon(..., until=caught up)` with the
  `trip_search` projection, leases and checkpoints in its lease table, into another
  TripSearchTable.

For each side: wall-clock seconds from start to caught up, records/s, UpdateItem calls on the
read model (a botocore hook on the side's clients), every other AWS call, CPU seconds of this
process and of the moto server. The two read models are compared on the business fields both
write (`same read model: True/False`); `updated_at` differs by design (the tutorial stamps
the wall clock, the daemon the change's creation time) and the guards are B's alone.

Run: `python -m bench end_to_end [--changes N --trips K --proxy-latency-ms L --json]`.
`--proxy-latency-ms` puts bench/latency_proxy.py (its own process, no CPU work) between both
sides and moto, so every AWS call waits L ms more without costing the client CPU: the network
to the real service. `--extra-latency-ms` instead sleeps in the client before every request
(the same `before-send` hook as bench/dynamodb_sink_bench.py). The output labels both as
simulated. Per side it also prints the client's CPU microseconds per record.
`--parallelization-factor N` runs B with N per-key lanes in the shard
(`polling.parallelization_factor`).

`--stream-pages json` starts moto through bench/moto_json_pages.py, which writes GetRecords
pages with json.dumps instead of moto's serializer (the same records; the serializer's CPU per
page is otherwise the limit of B's reading).
`--read-model-server dynalite` puts both sides' TripSearchTables on dynalite (bench/dynalite.py,
installed from npm on first use; behind a second latency proxy of the same delay when
`--proxy-latency-ms` is set) instead of moto, whose CPU per UpdateItem is otherwise the limit
of B's concurrent writes; the stream and B's lease table stay on moto. The report adds the
read-model server's CPU, the proxies' CPU and the AWS calls per record.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import boto3
import structlog
from boto3.dynamodb.types import TypeDeserializer

from bench import dynalite, latency_proxy
from bench.dynamodb_sink_bench import start_moto
from bench.processes import PerRecord, cpu_seconds, stop
from consumer.aws import make_client
from consumer.config import load_settings
from consumer.demo.trip_saga import create_trip_table
from consumer.runtimes.daemon import build_daemon, run_daemon
from consumer.runtimes.garbage_collector import tune_for_throughput
from consumer.sources.attribute_values import to_image
from projections.scenarios.trip_search import COMPONENTS, TripSearchProjection, create_table

REGION = "us-east-1"
# Seed 001's statuses per component, including the saga's compensation states.
STATUSES = {
    "FLIGHT": ("PENDING", "CONFIRMED", "CANCELLED"),
    "HOTEL": ("PENDING", "CONFIRMED", "CANCELED"),
    "PAYMENT": ("PENDING", "COMPLETED", "FAILED", "REFUNDED"),
}
HOTELS = ("Grand Hotel Tokyo", "Test Hotel", "Hotel Osaka Bay", "Kyoto Garden Inn")
# The document fields both consumers write; `updated_at` is stamped differently on purpose.
BUSINESS_FIELDS = tuple(name for component in COMPONENTS for name in component.document_fields)
# The demo's pacing (consumer/demo/trip_saga.py): a short idle backoff, so "caught up" is
# seen promptly.
POLLING = {"idle_backoff_seconds": 0.2, "min_interval_seconds": 0.05}
LEASES = {"failover_seconds": 10, "renew_interval_seconds": 2, "take_interval_seconds": 1}


# -- the input --------------------------------------------------------------------------------


def make_changes(changes: int, trips: int, seed: int = 1) -> list[dict[str, Any]]:
    """`changes` full TripTable items in write order; (trip, component) pairs repeat.

    Every change bumps `revision`, so each write really changes the item: DynamoDB writes no
    stream record for a write that changes nothing, and the count of records must be exact.
    """
    rng = random.Random(seed)
    items = []
    for revision in range(changes):
        trip_id = f"trip-{rng.randrange(trips):05d}"
        component = rng.choice(("FLIGHT", "HOTEL", "PAYMENT"))
        day = rng.randrange(1, 28)
        item: dict[str, Any] = {
            "PK": f"TRIP#{trip_id}",
            "SK": f"{component}#{trip_id}",
            "trip_id": trip_id,
            "EntityType": component,
            "status": rng.choice(STATUSES[component]),
            "revision": revision,
        }
        if component == "FLIGHT":
            item["flight_number"] = f"NH{rng.randrange(1, 1000):03d}"
            item["departure_time"] = f"2026-04-{day:02d}T10:00:00"
            item["arrival_time"] = f"2026-04-{day:02d}T14:00:00"
        elif component == "HOTEL":
            item["hotel_name"] = rng.choice(HOTELS)
            item["check_in_date"] = f"2026-04-{day:02d}"
            item["check_out_date"] = f"2026-04-{day + 2:02d}"
        else:
            item["amount"] = rng.randrange(10_000, 300_000)
            item["currency"] = "JPY"
        items.append(item)
    return items


def write_changes(client: Any, table: str, items: Sequence[dict[str, Any]]) -> None:
    """Write `items` in order with batch_write_item (fast setup, not part of any timing).

    A batch may not name one key twice, so a batch ends early at a repeated key; batches run
    in order, so the stream keeps each key's order.
    """
    batch: list[dict[str, Any]] = []
    keys: set[tuple[str, str]] = set()

    def flush() -> None:
        pending: dict[str, Any] = {table: batch}
        while pending:
            pending = client.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}
        batch.clear()
        keys.clear()

    for item in items:
        key = (item["PK"], item["SK"])
        if key in keys or len(batch) == 25:
            flush()
        keys.add(key)
        batch.append({"PutRequest": {"Item": to_image(item)}})
    if batch:
        flush()


# -- measuring --------------------------------------------------------------------------------


@dataclass
class CallLog:
    """The AWS calls one side makes, by operation; UpdateItem on the read model apart."""

    read_model: str
    operations: Counter[str] = field(default_factory=Counter)
    read_model_updates: int = 0
    get_records_seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def watch(self, client: Any, latency_ms: float) -> None:
        """Count every call of `client`; sleep `latency_ms` before each request if asked."""
        service = client.meta.service_model.service_id.hyphenize()
        # before-parameter-build sees the caller's parameters (TableName), once per call.
        client.meta.events.register(f"before-parameter-build.{service}", self._count)
        # How long the side waited for its pages: the source server's share of its time.
        client.meta.events.register(f"before-call.{service}.GetRecords", self._call_started)
        client.meta.events.register(f"after-call.{service}.GetRecords", self._call_ended)
        if latency_ms > 0:
            # The same stand-in for a network round trip as bench/dynamodb_sink_bench.py's
            # add_latency, registered per service so the streams client pays it too.
            client.meta.events.register(
                f"before-send.{service}", lambda **_: time.sleep(latency_ms / 1000)
            )

    def _count(self, params: Mapping[str, Any], model: Any, **_: Any) -> None:
        # The daemon's sink writes from many threads through one client.
        with self._lock:
            if model.name == "UpdateItem" and params.get("TableName") == self.read_model:
                self.read_model_updates += 1
            else:
                self.operations[model.name] += 1

    def _call_started(self, context: dict[str, Any], **_: Any) -> None:
        context["bench_started"] = time.perf_counter()

    def _call_ended(self, context: dict[str, Any], **_: Any) -> None:
        seconds = time.perf_counter() - context["bench_started"]
        with self._lock:
            self.get_records_seconds += seconds


@dataclass(frozen=True)
class Servers:
    """Where each side sends its calls, and the processes whose CPU is counted.

    `endpoint` serves the stream (and B's lease table), `read_model_endpoint` the
    TripSearchTables: both the latency proxies' URLs when there are proxies. A pid is None
    when that process is not ours (`--endpoint-url`) or not there (no separate read-model
    server, no proxy).
    """

    endpoint: str
    read_model_endpoint: str
    moto_pid: int | None
    read_model_pid: int | None = None
    proxy_pids: tuple[int, ...] = ()

    def cpu(self) -> tuple[float, float, float]:
        """CPU seconds so far of moto, the read-model server and the proxies together."""

        def of(pid: int | None) -> float:
            return 0.0 if pid is None else cpu_seconds(pid)

        proxies = sum(of(pid) for pid in self.proxy_pids)
        return of(self.moto_pid), of(self.read_model_pid), proxies


@dataclass
class Result(PerRecord):
    """One side's figures; rate is records per wall-clock second, start to caught up, and
    CPU is this process's (the client's: moto runs apart)."""

    name: str
    records: int
    seconds: float
    cpu_seconds: float
    server_cpu_seconds: float
    read_model_updates: int
    other_calls: dict[str, int]
    stop_seconds: float = 0.0
    read_model_server_cpu_seconds: float = 0.0
    proxy_cpu_seconds: float = 0.0
    get_records_seconds: float = 0.0

    @property
    def calls_per_record(self) -> float:
        """Every AWS call of the side (read-model writes included) per record."""
        return (self.read_model_updates + sum(self.other_calls.values())) / self.records


class Clock:
    """Wall clock, this process's CPU and the servers' CPU, from one start."""

    def __init__(self, servers: Servers) -> None:
        self._servers = servers
        self._wall = time.perf_counter()
        self._cpu = time.process_time()
        self._server = servers.cpu()

    def read(self) -> tuple[float, float, tuple[float, float, float]]:
        """(wall s, process CPU s, (moto, read-model server, proxies) CPU s) since the start."""
        now = self._servers.cpu()
        return (
            time.perf_counter() - self._wall,
            time.process_time() - self._cpu,
            (now[0] - self._server[0], now[1] - self._server[1], now[2] - self._server[2]),
        )


# -- A: the tutorials' consumer ---------------------------------------------------------------

# Seed 001's handler: SK prefix → (source attribute, document attribute), `item.get(x, "")`.
TUTORIAL_FIELDS = {
    "FLIGHT#": (
        ("flight_number", "flight_number"),
        ("departure_time", "departure_time"),
        ("arrival_time", "arrival_time"),
        ("status", "flight_status"),
    ),
    "HOTEL#": (
        ("hotel_name", "hotel_name"),
        ("check_in_date", "check_in_date"),
        ("check_out_date", "check_out_date"),
        ("status", "hotel_status"),
    ),
    "PAYMENT#": (
        ("amount", "total_amount"),
        ("currency", "currency"),
        ("status", "payment_status"),
    ),
}


def tutorial_handle(record: Mapping[str, Any], table: Any, deserializer: TypeDeserializer) -> None:
    """One stream record as seed 001's Lambda handles it: no guard, one call per record."""
    stream_record = record["dynamodb"]
    if record["eventName"] == "REMOVE":
        old = {k: deserializer.deserialize(v) for k, v in stream_record["OldImage"].items()}
        table.delete_item(Key={"trip_id": str(old.get("PK", "")).removeprefix("TRIP#")})
        return
    new = {k: deserializer.deserialize(v) for k, v in stream_record["NewImage"].items()}
    sort_key = str(new.get("SK", ""))
    mapping = next((m for p, m in TUTORIAL_FIELDS.items() if sort_key.startswith(p)), None)
    if mapping is None:
        return  # TRIP# and other entities are not projected
    fields = {target: str(new.get(source, "")) for source, target in mapping}
    fields["updated_at"] = datetime.now(UTC).isoformat()  # the seed stamps the wall clock
    table.update_item(
        Key={"trip_id": str(new.get("PK", "")).removeprefix("TRIP#")},
        UpdateExpression="SET " + ", ".join(f"#f{i} = :v{i}" for i in range(len(fields))),
        ExpressionAttributeNames={f"#f{i}": name for i, name in enumerate(fields)},
        ExpressionAttributeValues={f":v{i}": value for i, value in enumerate(fields.values())},
    )


def run_tutorial(
    servers: Servers,
    stream_arn: str,
    search_table: str,
    expected: int,
    latency_ms: float,
) -> Result:
    """A: read every shard from TRIM_HORIZON to its first empty page, one write per record."""
    streams = boto3.client("dynamodbstreams", region_name=REGION, endpoint_url=servers.endpoint)
    resource = boto3.resource(
        "dynamodb", region_name=REGION, endpoint_url=servers.read_model_endpoint
    )
    calls = CallLog(search_table)
    calls.watch(streams, latency_ms)
    calls.watch(resource.meta.client, latency_ms)
    table = resource.Table(search_table)
    deserializer = TypeDeserializer()

    clock = Clock(servers)
    read = 0
    shards = streams.describe_stream(StreamArn=stream_arn)["StreamDescription"]["Shards"]
    for shard in shards:
        iterator = streams.get_shard_iterator(
            StreamArn=stream_arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while iterator:
            page = streams.get_records(ShardIterator=iterator)
            for record in page["Records"]:
                tutorial_handle(record, table, deserializer)
            read += len(page["Records"])
            iterator = page.get("NextShardIterator")
            if not page["Records"]:
                break  # caught up: everything was written before the clock started
    wall, cpu, (moto, read_model, proxies) = clock.read()
    if read != expected:
        raise RuntimeError(f"the tutorial read {read} records, expected {expected}")
    return Result(
        "A tutorials (1 update_item/record)",
        read,
        wall,
        cpu,
        moto,
        calls.read_model_updates,
        dict(calls.operations),
        read_model_server_cpu_seconds=read_model,
        proxy_cpu_seconds=proxies,
        get_records_seconds=calls.get_records_seconds,
    )


# -- B: this daemon ---------------------------------------------------------------------------


def run_projector(
    servers: Servers,
    trip_table: str,
    search_table: str,
    expected: int,
    latency_ms: float,
    timeout: float,
    lanes: int = 1,
) -> Result:
    """B: the daemon with the trip_search projection, until every shard is read to its tip."""
    settings = load_settings(
        None,
        application=f"bench-e2e-{uuid.uuid4().hex[:6]}",
        source={"kind": "dynamodb", "table": trip_table},
        aws={"endpoint_url": servers.endpoint, "region": REGION},
        http={"host": "127.0.0.1", "port": 0},
        polling={**POLLING, "parallelization_factor": lanes},
        leases=LEASES,
    )
    # The projection as `[[projections]]` would build it (the default max_workers), but on a
    # client of its own (the daemon's client configuration) so that the read model can be on
    # another server than the stream.
    read_model = make_client("dynamodb", region=REGION, endpoint_url=servers.read_model_endpoint)
    projection = TripSearchProjection(read_model, table=search_table)
    daemon = build_daemon(settings, projections=[projection])
    tune_for_throughput()  # as `stream-projector run` does once start-up is done
    calls = CallLog(search_table)
    for client in (*map(daemon.resources.aws_client, ("dynamodb", "dynamodbstreams")), read_model):
        calls.watch(client, latency_ms)
    # The lease table exists in steady state, as the read models do; creating it is setup.
    daemon.store.ensure_table()
    calls.operations.clear()

    clock = Clock(servers)
    caught: list[tuple[float, float, tuple[float, float, float]]] = []
    timed_out = [False]

    def until() -> bool:
        # Two caught-up observations in a row (one worker tick apart): the first is when
        # the daemon caught up, the second confirms no record was still on its way.
        if daemon.worker.caught_up():
            caught.append(clock.read())
        else:
            caught.clear()
        # Returning True (not raising) lets the worker stop its shard threads gracefully.
        timed_out[0] = clock.read()[0] > timeout
        return len(caught) >= 2 or timed_out[0]

    run_daemon(daemon, threading.Event(), serve_http=False, until=until)
    stopped = clock.read()[0]
    if timed_out[0]:
        raise RuntimeError(f"the daemon did not catch up within {timeout:.0f} s")
    wall, cpu, (moto, read_model_cpu, proxies) = caught[0]
    return Result(
        "B stream-projector (daemon)",
        # Caught up means every record up to the tip was applied; the read-model comparison
        # in main() is what proves none was lost.
        expected,
        wall,
        cpu,
        moto,
        calls.read_model_updates,
        dict(calls.operations),
        stop_seconds=stopped - caught[-1][0],
        read_model_server_cpu_seconds=read_model_cpu,
        proxy_cpu_seconds=proxies,
        get_records_seconds=calls.get_records_seconds,
    )


# -- the read models --------------------------------------------------------------------------


def business_view(client: Any, table: str) -> dict[str, dict[str, str]]:
    """Every document's business fields as strings (the tutorial stores numbers as strings)."""
    documents: dict[str, dict[str, str]] = {}
    for page in client.get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
        for item in page["Items"]:
            documents[item["trip_id"]["S"]] = {
                name: next(iter(item[name].values())) for name in BUSINESS_FIELDS if name in item
            }
    return documents


# -- the servers ------------------------------------------------------------------------------


@contextmanager
def servers_for(args: argparse.Namespace) -> Iterator[tuple[Servers, str, str]]:
    """moto (unless --endpoint-url), dynalite if asked, and a latency proxy in front of each.

    Yields the sides' Servers and the direct URLs of moto and of the read-model server (for
    setup and the comparison, which add no latency); every process is stopped at the end.
    """
    children: list[subprocess.Popen[bytes]] = []
    try:
        if args.endpoint_url:
            moto_pid, moto_url = None, args.endpoint_url
        else:
            module = "bench.moto_json_pages" if args.stream_pages == "json" else "moto.server"
            process, moto_url = start_moto(module)
            children.append(process)
            moto_pid = process.pid
        read_model_pid, read_model_url = None, moto_url
        if args.read_model_server == "dynalite":
            process, read_model_url = dynalite.start()
            children.append(process)
            read_model_pid = process.pid
        endpoint, read_model_endpoint = moto_url, read_model_url
        proxy_pids: list[int] = []
        if args.proxy_latency_ms:
            # One proxy per server, the same delay: a call to either pays one round trip.
            proxy, endpoint = latency_proxy.start(moto_url, args.proxy_latency_ms)
            children.append(proxy)
            proxy_pids.append(proxy.pid)
            read_model_endpoint = endpoint
            if read_model_pid is not None:
                proxy, read_model_endpoint = latency_proxy.start(
                    read_model_url, args.proxy_latency_ms
                )
                children.append(proxy)
                proxy_pids.append(proxy.pid)
        servers = Servers(
            endpoint, read_model_endpoint, moto_pid, read_model_pid, tuple(proxy_pids)
        )
        yield servers, moto_url, read_model_url
    finally:
        for child in reversed(children):
            stop(child)


# -- the report -------------------------------------------------------------------------------


def latency_label(args: argparse.Namespace) -> str:
    """What latency the run added, if any."""
    if args.proxy_latency_ms:
        return f"{args.proxy_latency_ms:g} ms SIMULATED latency per AWS call (latency proxy)"
    if args.extra_latency_ms:
        return f"{args.extra_latency_ms:g} ms SIMULATED latency per AWS request (sleep, both sides)"
    return "no added latency (servers on loopback)"


def report_lines(args: argparse.Namespace, a: Result, b: Result, same: bool) -> list[str]:
    """The human-readable report: one column per side and the ratio B/A."""
    latency = latency_label(args)

    def row(label: str, x: float, y: float, fmt: str) -> str:
        ratio = f"{y / x:.2f}x" if x else "-"
        return f"  {label:<36} {x:>12{fmt}} {y:>12{fmt}} {ratio:>8}"

    def others(result: Result) -> str:
        return ", ".join(f"{op} {n}" for op, n in sorted(result.other_calls.items()))

    servers = [row("CPU s, moto server", a.server_cpu_seconds, b.server_cpu_seconds, ".2f")]
    if args.read_model_server == "dynalite":
        a_cpu, b_cpu = a.read_model_server_cpu_seconds, b.read_model_server_cpu_seconds
        servers.append(row("CPU s, dynalite (read model)", a_cpu, b_cpu, ".2f"))
    if args.proxy_latency_ms:
        servers.append(
            row("CPU s, latency proxies", a.proxy_cpu_seconds, b.proxy_cpu_seconds, ".2f")
        )
    return [
        f"end_to_end: {args.changes} changes over {args.trips} trips (scenario 1, "
        f"TripTable stream -> TripSearchTable); {latency}; stream pages by "
        f"{args.stream_pages}; read model on {args.read_model_server}; "
        f"B's parallelization_factor {args.parallelization_factor}",
        f"  {'':<36} {'A tutorials':>12} {'B daemon':>12} {'B/A':>8}",
        row("wall s, start to caught up", a.seconds, b.seconds, ".2f"),
        row("records/s", a.rate, b.rate, ",.0f"),
        row("UpdateItem calls on the read model", a.read_model_updates, b.read_model_updates, "d"),
        row("AWS calls per record, all", a.calls_per_record, b.calls_per_record, ".3f"),
        row("GetRecords s, sum of call times", a.get_records_seconds, b.get_records_seconds, ".2f"),
        row("CPU s, this process", a.cpu_seconds, b.cpu_seconds, ".2f"),
        row("client CPU us/record", a.cpu_us_per_record, b.cpu_us_per_record, ",.0f"),
        *servers,
        f"  other AWS calls A: {others(a)}",
        f"  other AWS calls B: {others(b)}",
        f"  B's graceful stop after caught up: {b.stop_seconds:.2f} s (not in its wall time)",
        f"  speed-up B/A: {b.rate / a.rate:.2f}x records/s; same read model: {same}",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Write the changes, run A then B on the same stream, compare, print the figures."""
    parser = argparse.ArgumentParser(prog="bench end_to_end", description=__doc__.split("\n")[0])
    parser.add_argument("--changes", type=int, default=3000, help="stream records to project")
    parser.add_argument("--trips", type=int, default=300, help="distinct trips (3 items each)")
    parser.add_argument("--extra-latency-ms", type=float, default=0.0, help="sleep per request")
    parser.add_argument(
        "--proxy-latency-ms", type=float, default=0.0, help="latency proxy delay per call"
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="B's limit, seconds")
    parser.add_argument(
        "--parallelization-factor",
        type=int,
        default=1,
        choices=range(1, 11),
        metavar="N",
        help="B's per-key lanes in the shard (polling.parallelization_factor, 1-10)",
    )
    parser.add_argument(
        "--read-model-server",
        choices=("moto", "dynalite"),
        default="moto",
        help="where the TripSearchTables live: moto, with the stream (default), or dynalite "
        "(npm, installed into .bench-tools on first use), whose CPU per write is a fraction "
        "of moto's; the stream and B's leases stay on moto",
    )
    parser.add_argument(
        "--stream-pages",
        choices=("moto", "json"),
        default="moto",
        help="how the moto it starts writes GetRecords pages: with moto's own serializer "
        "(default; 1.7-2.4 s of CPU per 1,000 records) or json (bench/moto_json_pages.py: "
        "json.dumps of the same records)",
    )
    parser.add_argument("--endpoint-url", help="use this moto endpoint instead of starting one")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    args = parser.parse_args(argv)
    # The daemon logs at info (leases, shards); the figures are the output here.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    # moto accepts any credentials; never reach a real account from a benchmark.
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(name, "bench")

    if args.proxy_latency_ms and args.extra_latency_ms:
        parser.error("choose one of --proxy-latency-ms and --extra-latency-ms")
    if args.stream_pages == "json" and args.endpoint_url:
        parser.error("--stream-pages json starts its own moto: leave out --endpoint-url")
    try:
        with servers_for(args) as (servers, moto_url, read_model_url):
            client = make_client("dynamodb", region=REGION, endpoint_url=moto_url)
            read_model = make_client("dynamodb", region=REGION, endpoint_url=read_model_url)
            suffix = uuid.uuid4().hex[:6]
            trip_table = f"TripTable-{suffix}"
            search_a, search_b = f"TripSearch-A-{suffix}", f"TripSearch-B-{suffix}"
            create_trip_table(client, trip_table)
            for table in (search_a, search_b):
                create_table(read_model, table)
            # The whole input is in the stream before either side starts.
            write_changes(client, trip_table, make_changes(args.changes, args.trips))
            arn = client.describe_table(TableName=trip_table)["Table"]["LatestStreamArn"]

            latency = args.extra_latency_ms
            a = run_tutorial(servers, arn, search_a, args.changes, latency)
            b = run_projector(
                servers,
                trip_table,
                search_b,
                args.changes,
                latency,
                args.timeout,
                args.parallelization_factor,
            )
            view_a = business_view(read_model, search_a)
            view_b = business_view(read_model, search_b)
            same = view_a == view_b
    except dynalite.DynaliteUnavailable as error:
        print(f"bench end_to_end: {error}", file=sys.stderr)
        return 1

    if args.json:
        print(
            json.dumps(
                {
                    "changes": args.changes,
                    "trips": args.trips,
                    "simulated_latency_ms": args.extra_latency_ms,
                    "proxy_latency_ms": args.proxy_latency_ms,
                    "parallelization_factor": args.parallelization_factor,
                    "read_model_server": args.read_model_server,
                    "stream_pages": args.stream_pages,
                    "A": {
                        **asdict(a),
                        "records_per_s": a.rate,
                        "cpu_us_per_record": a.cpu_us_per_record,
                        "calls_per_record": a.calls_per_record,
                    },
                    "B": {
                        **asdict(b),
                        "records_per_s": b.rate,
                        "cpu_us_per_record": b.cpu_us_per_record,
                        "calls_per_record": b.calls_per_record,
                    },
                    "speedup_b_over_a": b.rate / a.rate,
                    "documents": [len(view_a), len(view_b)],
                    "same_read_model": same,
                },
                indent=2,
            )
        )
    else:
        print("\n".join(report_lines(args, a, b, same)))
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
