"""The daemon on one Kinesis shard's backlog, in a child process: what the engine benchmarks share.

`write_backlog` fills a one-shard stream; `run_daemon_child` runs the daemon (built from
settings, as `stream-projector run` builds it) in a fresh process until it has applied every
record, with a projection that only counts or one that waits a fixed time per record, and
returns its figures: records/s from the first record applied to the last (start-up and the first
GetRecords are left out), GetRecords calls and Limits, the batches, and the child's peak RSS.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
import structlog

from consumer.record import ChangeRecord
from projections.projection import BaseProjection, Resources
from projections.results import Outcome, Results
from projections.settings import ProjectionSettings

REGION = "us-east-1"
ROOT = Path(__file__).resolve().parents[1]
LEASES = {"failover_seconds": 10, "renew_interval_seconds": 2, "take_interval_seconds": 1}


def write_backlog(client: Any, stream: str, records: int, keys: int = 1000) -> float:
    """Create a one-shard stream and put `records` small JSON records; the seconds it took."""
    from tests.support.streams import kinesis_stream

    began = time.perf_counter()
    kinesis_stream(client, stream)
    for start in range(0, records, 500):
        batch = [
            {
                "Data": orjson.dumps({"key": f"k{n % keys}", "n": n, "note": "backlog"}),
                "PartitionKey": f"k{n % keys}",
            }
            for n in range(start, min(start + 500, records))
        ]
        while batch:
            response = client.put_records(StreamName=stream, Records=batch)
            batch = [
                record
                for record, result in zip(batch, response["Records"], strict=True)
                if "ErrorCode" in result
            ]
    return time.perf_counter() - began


class BenchSettings(ProjectionSettings):
    """`expected` records (0: never done) and a simulated `latency_ms` per record."""

    expected: int = 0
    latency_ms: float = 0.0


class BenchProjection(BaseProjection):
    """Counts records; with `latency_ms`, waits that long per record, one record at a time.

    The wait stands for a sink's round trip (an HTTP API, a database across a network) that
    costs time but no CPU here; it is simulated, and the output says so.
    """

    settings_model = BenchSettings

    def __init__(self, expected: int, latency_ms: float = 0.0, name: str = "bench") -> None:
        super().__init__(name)
        self.expected = expected
        self.latency = latency_ms / 1000
        self.count = 0
        self.first_start: float | None = None
        self.first_cpu = 0.0
        self.batch_ends: list[tuple[float, int]] = []
        self.done = threading.Event()
        self._lock = threading.Lock()

    @classmethod
    def from_settings(
        cls, name: str, settings: BenchSettings, resources: Resources
    ) -> BenchProjection:
        """For worker processes: `expected` (0: never done) and `latency_ms`."""
        return cls(settings.expected, settings.latency_ms, name)

    def apply(self, records: Sequence[ChangeRecord]) -> Results:
        """Touch every image (so decoding is real), wait per record if asked, count."""
        with self._lock:
            if self.first_start is None:
                self.first_start, self.first_cpu = time.perf_counter(), time.process_time()
        for record in records:
            if record.image is None:
                raise ValueError(f"record {record.sequence_number} has no image")
            if self.latency:
                time.sleep(self.latency)
        with self._lock:  # lanes apply from several threads
            self.count += len(records)
            self.batch_ends.append((time.perf_counter(), self.count))
            if self.expected and self.count >= self.expected:
                self.done.set()
        return Results.of(records, Outcome.APPLIED)


@dataclass
class DaemonRun:
    """One run's figures."""

    records: int
    seconds: float
    rate: float
    cpu_us_per_record: float
    get_records_calls: int
    largest_limit: int
    batches: int
    max_rss_mb: float


def run_in_this_process(options: dict[str, Any]) -> DaemonRun:
    """Run the daemon on options["stream"] until options["records"] are applied."""
    from consumer.config import load_settings
    from consumer.runtimes.daemon import build_daemon, run_daemon

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    projection = BenchProjection(options["records"], options.get("latency_ms", 0.0))
    settings = load_settings(
        None,
        application=f"bench-{uuid.uuid4().hex[:6]}",
        source={"kind": "kinesis", "stream_name": options["stream"]},
        leases=LEASES,
        polling=options.get("polling", {}),
        http={"host": "127.0.0.1", "port": 0},
    )
    daemon = build_daemon(settings, projections=[projection])
    limits: list[int] = []
    daemon.resources.aws_client("kinesis").meta.events.register(
        "provide-client-params.kinesis.GetRecords",
        lambda params, **_: limits.append(int(params["Limit"])),
    )
    began = time.perf_counter()
    run_daemon(daemon, threading.Event(), serve_http=False, until=projection.done.is_set)
    last_end, last_count = projection.batch_ends[-1]
    cpu = time.process_time() - projection.first_cpu
    assert projection.first_start is not None
    return DaemonRun(
        records=last_count,
        seconds=last_end - began,
        rate=last_count / (last_end - projection.first_start),
        cpu_us_per_record=cpu / last_count * 1e6,
        get_records_calls=len(limits),
        largest_limit=max(limits),
        batches=len(projection.batch_ends),
        max_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )


def run_daemon_child(options: dict[str, Any], env: dict[str, str], work: Path) -> DaemonRun:
    """`run_in_this_process` in a fresh process, so its peak RSS is its own."""
    result_path = work / f"{uuid.uuid4().hex}.json"
    subprocess.run(
        [sys.executable, "-m", "bench.daemon_run", json.dumps(options), str(result_path)],
        cwd=ROOT,
        env={**os.environ, **env},
        check=True,
        timeout=3600,
    )
    return DaemonRun(**json.loads(result_path.read_text()))


@dataclass
class Emulators:
    """The servers of one benchmark run, and a scratch directory."""

    moto_url: str
    moto_pid: int
    work: Path
    kinesis_local_url: str | None = None
    kinesis_local_pid: int | None = None
    replay_url: str | None = None
    replay_pid: int | None = None

    def kinesis(self) -> tuple[str, int]:
        """The Kinesis endpoint to read (kinesis-local when started, else moto) and its pid."""
        if self.kinesis_local_url is not None and self.kinesis_local_pid is not None:
            return self.kinesis_local_url, self.kinesis_local_pid
        return self.moto_url, self.moto_pid


@contextmanager
def emulators(kinesis_local: bool, replay: bool = False) -> Iterator[Emulators]:
    """moto (and kinesis-local, bench/kinesis_replay.py if asked) for one benchmark run,
    stopped when the block ends."""
    from bench import kinesis_replay
    from bench.dynamodb_sink_bench import start_moto
    from bench.processes import stop
    from tests.fixtures.aws import start_kinesis_local

    moto, moto_url = start_moto()
    server = replay_server = None
    try:
        with tempfile.TemporaryDirectory() as work_dir:
            servers = Emulators(moto_url, moto.pid, Path(work_dir))
            try:
                if kinesis_local:
                    server, servers.kinesis_local_url = start_kinesis_local(servers.work)
                    servers.kinesis_local_pid = server.process.pid
                if replay:
                    replay_server, servers.replay_url = kinesis_replay.start()
                    servers.replay_pid = replay_server.pid
                yield servers
            finally:
                if server is not None:
                    server.stop()
                if replay_server is not None:
                    stop(replay_server)
    finally:
        moto.kill()
        moto.wait()


def set_fake_credentials() -> None:
    """Credentials for the emulators (never a real account)."""
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)


if __name__ == "__main__":
    run = run_in_this_process(json.loads(sys.argv[1]))
    Path(sys.argv[2]).write_text(json.dumps(asdict(run)))
