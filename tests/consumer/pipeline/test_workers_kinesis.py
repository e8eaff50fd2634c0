"""Several worker processes share a Kinesis stream (kinesis-local) through the lease table."""

from __future__ import annotations

import signal
import subprocess
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from consumer.leases.store import DynamoDBLeaseStore
from tests.fixtures.servers import wait_until
from tests.support.daemon import start_worker_process, write_config
from tests.support.recording import create_recording_table, recorded
from tests.support.streams import kinesis_stream

CONFIG = """
application = "{app}"
worker_id = "{worker}"
[source]
kind = "kinesis"
stream_name = "{stream}"
[leases]
failover_seconds = {failover}
renew_interval_seconds = 0.5
take_interval_seconds = {take_interval}
shard_sync_interval_seconds = 2
[polling]
idle_backoff_seconds = 0.1
min_interval_seconds = 0.05
[http]
host = "127.0.0.1"
port = 0
[shutdown]
deadline_seconds = 5
[[projections]]
name = "recording"
class = "tests.support.recording:RecordingProjection"
[projections.settings]
table = "{table}"
"""


class Fleet:
    """Worker processes of one application, sharing a lease table on moto."""

    def __init__(self, tmp_path: Path, env: dict[str, str], **fields: Any) -> None:
        self.tmp_path, self.env, self.fields = tmp_path, env, fields
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, worker: str) -> subprocess.Popen:
        config = write_config(
            self.tmp_path / f"{worker}.toml", CONFIG.format(worker=worker, **self.fields)
        )
        env = {**self.env, "STREAM_PROJECTOR_WORKER_ID": worker}
        proc = start_worker_process(config, env, self.tmp_path / f"{worker}.log")
        self.procs[worker] = proc
        return proc

    def log(self, worker: str) -> str:
        return (self.tmp_path / f"{worker}.log").read_text(errors="replace")[-3000:]

    def events(self, worker: str) -> Counter[str]:
        """How often each log event occurred in the worker's JSON log lines."""
        events: Counter[str] = Counter()
        for line in (self.tmp_path / f"{worker}.log").read_bytes().splitlines():
            try:
                events[orjson.loads(line)["event"]] += 1
            except (orjson.JSONDecodeError, KeyError, TypeError):
                continue  # a line of a third-party library, not one of ours
        return events

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def owners(store: DynamoDBLeaseStore) -> Counter[str | None]:
    return Counter(lease.lease_owner for lease in store.list_leases())


def put_records(kinesis: Any, stream: str, start: int, count: int) -> set[str]:
    keys = set()
    for n in range(start, start + count):
        key = f"k{n}"
        data = orjson.dumps({"key": key, "n": n})
        kinesis.put_record(StreamName=stream, Data=data, PartitionKey=key)
        keys.add(key)
    return keys


@dataclass
class Setup:
    """A stream on kinesis-local, a recording table and a lease table on moto."""

    kinesis: Any
    dynamodb: Any
    stream: str
    table: str
    app: str
    env: dict[str, str]
    store: DynamoDBLeaseStore


@pytest.fixture
def make_setup(
    aws_client: Callable[..., Any],
    moto_endpoint: str,
    kinesis_local_endpoint: str,
    unique_name: Callable[[str], str],
) -> Callable[[int], Setup]:
    def make(shards: int) -> Setup:
        kinesis = aws_client("kinesis", kinesis_local_endpoint)
        dynamodb = aws_client("dynamodb")
        stream, table, app = unique_name("orders"), unique_name("recorded"), unique_name("app")
        kinesis_stream(kinesis, stream, shards=shards)
        create_recording_table(dynamodb, table)
        env = {
            "AWS_ENDPOINT_URL": moto_endpoint,
            "AWS_ENDPOINT_URL_KINESIS": kinesis_local_endpoint,
        }
        store = DynamoDBLeaseStore(dynamodb, f"{app}-leases")
        return Setup(kinesis, dynamodb, stream, table, app, env, store)

    return make


def test_two_workers_share_shards_survive_a_kill_and_hand_over_on_sigterm(
    tmp_path: Path, make_setup: Callable[[int], Setup]
) -> None:
    setup = make_setup(4)
    kinesis, dynamodb, stream, table = setup.kinesis, setup.dynamodb, setup.stream, setup.table
    app, env, store = setup.app, setup.env, setup.store

    def all_recorded(keys: set[str]) -> bool:
        return keys <= {item["record_key"] for item in recorded(dynamodb, table)}

    fleet = Fleet(tmp_path, env, app=app, stream=stream, table=table, failover=3, take_interval=0.5)
    try:
        fleet.start("w1")
        fleet.start("w2")
        wait_until(
            lambda: owners(store) == Counter({"w1": 2, "w2": 2}),
            timeout=60,
            what="2 leases each",
        )
        keys = put_records(kinesis, stream, 0, 200)
        wait_until(lambda: all_recorded(keys), timeout=60, what="first 200 records")

        # SIGKILL: no release; w2 takes w1's shards once their leases expire.
        fleet.procs["w1"].kill()
        fleet.procs["w1"].wait()
        keys |= put_records(kinesis, stream, 200, 200)
        wait_until(lambda: owners(store) == Counter({"w2": 4}), timeout=60, what="w2 owns all")
        wait_until(lambda: all_recorded(keys), timeout=60, what="records after the kill")
        workers = Counter(item["worker"] for item in recorded(dynamodb, table))
        assert set(workers) == {"w1", "w2"}

        # SIGTERM: with a failover time far beyond the test's patience, w3 can only get w2's
        # shards because w2 releases them on its way out.
        fleet.fields["failover"] = 120
        fleet.start("w3")
        wait_until(
            lambda: owners(store) == Counter({"w2": 2, "w3": 2}),
            timeout=60,
            what="w3 steals its share",
        )
        fleet.procs["w2"].send_signal(signal.SIGTERM)
        assert fleet.procs["w2"].wait(timeout=30) == 0, fleet.log("w2")
        wait_until(lambda: owners(store) == Counter({"w3": 4}), timeout=60, what="handover")
        keys |= put_records(kinesis, stream, 400, 100)
        wait_until(lambda: all_recorded(keys), timeout=60, what="records after the handover")
    finally:
        fleet.stop_all()
    assert len({item["record_key"] for item in recorded(dynamodb, table)}) == 500


def test_two_workers_starting_together_split_eight_shards_four_four_without_stealing(
    tmp_path: Path, make_setup: Callable[[int], Setup]
) -> None:
    setup = make_setup(8)
    kinesis, dynamodb, stream, table = setup.kinesis, setup.dynamodb, setup.stream, setup.table
    app, env, store = setup.app, setup.env, setup.store
    # A take interval longer than two processes need to start, so both claim their first
    # lease before either takes its share: that is the case the first take must get right.
    fleet = Fleet(tmp_path, env, app=app, stream=stream, table=table, failover=30, take_interval=8)
    try:
        fleet.start("w1")
        fleet.start("w2")
        wait_until(
            lambda: owners(store) == Counter({"w1": 4, "w2": 4}),
            timeout=60,
            what="4 leases each",
        )
        keys = put_records(kinesis, stream, 0, 80)
        wait_until(
            lambda: keys <= {item["record_key"] for item in recorded(dynamodb, table)},
            timeout=60,
            what="records on all 8 shards",
        )
    finally:
        fleet.stop_all()
    for worker in ("w1", "w2"):
        events = fleet.events(worker)
        assert events["lease taken"] == 4, fleet.log(worker)
        assert events["lease stolen"] == 0, fleet.log(worker)
        assert events["lease lost"] == 0, fleet.log(worker)
    shards = {item["shard_id"] for item in recorded(dynamodb, table)}
    assert len(shards) == 8
