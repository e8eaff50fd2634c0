"""Kinesis JSON to PostgreSQL, end to end: this daemon against async-kinesis, in one run.

The benchmark starts a Kinesis server (`--server`: kinesis-local, the default, or
bench/kinesis_replay.py, which serves pages from memory at almost no CPU, so that the sides
and PostgreSQL are what is measured), moto (DynamoDB, for checkpoints) and a durable
PostgreSQL server (fsync and synchronous_commit on), writes `--records` JSON events over
`--keys` keys (versions 1, 2, ... per key, partition key = the key, so a key's versions stay
in order in one shard) to a stream of `--shards` shards, then runs each side as a child
process reading the stream from TRIM_HORIZON into the same guarded table (`ON CONFLICT (id)
DO UPDATE ... WHERE t.version < EXCLUDED.version`), emptied before each side:

- `daemon`: `python -m consumer run` with the JSON upsert projection below (the sink's
  GuardedUpsert, one transaction per batch), leases and checkpoints in DynamoDB; the
  settings' defaults otherwise.
- `async-kinesis batched`: async-kinesis (the maintained Python peer) in its own virtualenv
  (.bench-venvs/async-kinesis, made here from PyPI), batches of `--batch` in one
  transaction each with psycopg's `executemany`, then a manual checkpoint (DynamoDB
  checkpointer).
- `async-kinesis per-record`: the same consumer, one upsert and commit per record, its own
  checkpoints per page.

Progress is read from the table: each key's stored version is the number of its events
applied, so `sum(version)` counts the records applied by any side. A side is measured from
its first commit (sum > 0, so start-up and imports are left out) to caught up (sum =
records): records/s over that window, and the child's own CPU time (user + system, every
thread, from /proc) per record over the same window. The window leaves out what a side
fetched before its first commit, so the table also gives the records in the window and the
seconds from spawning the child to caught up (start-up and imports included). Beside each
side, the Kinesis server's CPU: the share of a core it was busy in the side's window, and its
CPU from spawn to caught up per record it served (kinesis-local counts nothing: per record
of the stream); PostgreSQL's CPU (every backend) per record in the window; and how many of
the machine's cores were busy in the window (all processes: near 2 on this 2-core machine
means the cores were the limit), and how many of them went to processes other than the side,
PostgreSQL and the Kinesis server (moto, other engineers' work). Once caught up, every
key's row must hold its last event (version, price, body), or the run fails. Sides alternate
within each round; the figures are medians over `--rounds`.

`--baseline-root DIR` adds the side `daemon baseline`: the daemon of another checkout (say a
git worktree of an older commit), run with this checkout's servers, config and projection,
alternating with `daemon` in every round, so a change to the daemon is measured side by side.

`--proxy-latency-ms L` puts bench/latency_proxy.py (its own process, no CPU work) between the
sides and both AWS endpoints (Kinesis, DynamoDB), so every call waits L ms more: the network.

    python -m bench kinesis_postgres   # --records N --keys K --shards S --batch B --rounds R
    python -m bench kinesis_postgres --server replay [--proxy-latency-ms L]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import orjson
import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

from bench import kinesis_replay, latency_proxy
from bench.postgres_bench import COLUMNS, T0
from bench.processes import (
    PerRecord,
    cpu_seconds,
    machine_busy_seconds,
    stop,
    tree_cpu_seconds,
)
from consumer.record import ChangeRecord
from projections.api import BaseProjection, ProjectionSettings, Resources, Results
from projections.sinks.postgres import GuardedUpsert, batch_transaction

ROOT = Path(__file__).resolve().parent.parent
REGION = "us-east-1"
TABLE = "bench_kinesis_docs"
PEER_VENV = ROOT / ".bench-venvs" / "async-kinesis"
PEER_REQUIREMENTS = ("async-kinesis[dynamodb]==3.0.1", "psycopg[binary]>=3.1")
PEER_SCRIPT = ROOT / "bench" / "peers" / "async_kinesis_peer.py"
POLL_SECONDS = 0.05
SIDES = ("daemon", "async-kinesis batched", "async-kinesis per-record")
# With --baseline-root: the daemon of another checkout, measured beside this one.
BASELINE = "daemon baseline"
SERVERS = ("kinesis-local", "replay")


# -- the daemon's projection ------------------------------------------------------------------


class JsonUpsertSettings(ProjectionSettings):
    """`table`: the read table (default bench_kinesis_docs)."""

    table: str = TABLE


class JsonUpsertProjection(BaseProjection):
    """Each JSON event upserted as one row of `table`, guarded by its `version`."""

    settings_model = JsonUpsertSettings

    def __init__(self, name: str, pool: ConnectionPool, table: str = TABLE) -> None:
        super().__init__(name)
        self.pool = pool
        self.upsert = GuardedUpsert(
            table,
            COLUMNS,
            ("id",),
            guard="t.version < EXCLUDED.version",
            position="version",
            returning=True,
        )

    @classmethod
    def from_settings(
        cls, name: str, settings: JsonUpsertSettings, resources: Resources
    ) -> JsonUpsertProjection:
        """Built on the shared PostgreSQL pool."""
        return cls(name, resources.postgres_pool(), settings.table)

    def apply(self, records: Sequence[ChangeRecord]) -> Results:
        """One guarded upsert of the batch in one transaction."""
        results = Results()
        written: list[tuple[ChangeRecord, tuple[Any, ...]]] = []
        for record in records:
            doc = record.new_image
            if doc is None:
                results.filtered(record)
                continue
            row = (
                doc["id"],
                doc["version"],
                doc["name"],
                doc["price"],
                orjson.dumps(doc).decode(),
                doc["updated_at"],
            )
            written.append((record, row))
        if written:
            with batch_transaction(self.pool, what=f"projection {self.name}") as conn:
                cur = self.upsert.execute(conn, [row for _, row in written])
                results.merge(self.upsert.results(written, cur))
        return results


def create_table(dsn: str, table: str = TABLE) -> None:
    """The read table, empty."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))
        conn.execute(
            sql.SQL(
                "CREATE TABLE {} (id text PRIMARY KEY, version bigint NOT NULL, name text, "
                "price bigint, body jsonb, updated_at timestamptz)"
            ).format(sql.Identifier(table))
        )


# -- the input --------------------------------------------------------------------------------


def make_events(count: int, keys: int) -> list[dict[str, Any]]:
    """`count` events over `keys` keys, round robin, so key k's versions are 1, 2, ..."""
    return [
        {
            "id": f"item-{i % keys:07d}",
            "version": i // keys + 1,
            "name": f"product {i % keys}",
            "price": 1000 + i % 997,
            "tags": ["sale", "new"] if i % 3 else ["clearance"],
            "description": "a small JSON document, as an application's own event would carry",
            "updated_at": (T0 + timedelta(seconds=i)).isoformat(),
        }
        for i in range(count)
    ]


def create_stream(client: Any, name: str, shards: int) -> None:
    """A stream of `shards` shards, active."""
    client.create_stream(StreamName=name, ShardCount=shards)
    client.get_waiter("stream_exists").wait(
        StreamName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 150}
    )


def put_events(client: Any, stream: str, events: Sequence[dict[str, Any]]) -> None:
    """PutRecords in order, 500 a call; a failed entry is retried before going on."""
    for start in range(0, len(events), 500):
        entries = [
            {"Data": orjson.dumps(e), "PartitionKey": e["id"]} for e in events[start : start + 500]
        ]
        while entries:
            response = client.put_records(StreamName=stream, Records=entries)
            entries = [
                e for e, r in zip(entries, response["Records"], strict=True) if "ErrorCode" in r
            ]


# -- the sides --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoints:
    """Where the servers listen."""

    kinesis: str
    dynamodb: str
    dsn: str
    # The Kinesis server's process, whose CPU the report shows beside the client's (0: unknown).
    kinesis_pid: int = 0
    # The replay server's own URL (not the proxy's), for its GET /stats; None for kinesis-local.
    replay_url: str | None = None
    # PostgreSQL's postmaster, whose CPU (its backends' included) the report shows (0: unknown).
    postgres_pid: int = 0


@dataclass
class Measured(PerRecord):
    """One side's figures over its window (first commit to caught up); CPU is the child's."""

    side: str
    records: int
    seconds: float
    cpu_seconds: float
    seconds_from_spawn: float
    # The Kinesis server's CPU in the window, and from spawn to caught up.
    kinesis_cpu_seconds: float = 0.0
    kinesis_cpu_seconds_from_spawn: float = 0.0
    # Records the Kinesis server served from spawn to caught up.
    records_served: int = 0
    # PostgreSQL's CPU (every backend) and the whole machine's busy CPU, in the window.
    postgres_cpu_seconds: float = 0.0
    machine_busy_seconds: float = 0.0

    @property
    def other_cpu_seconds(self) -> float:
        """The machine's busy CPU in the window that was neither the side's, PostgreSQL's nor
        the Kinesis server's: moto, this benchmark's polling, other engineers' processes."""
        mine = self.cpu_seconds + self.postgres_cpu_seconds + self.kinesis_cpu_seconds
        return max(0.0, self.machine_busy_seconds - mine)


def ensure_peer_venv(python: str = sys.executable) -> Path:
    """The peer's virtualenv, created and installed from PyPI on first use; its python."""
    peer_python = PEER_VENV / "bin" / "python"
    stamp = PEER_VENV / ".installed"
    wanted = "\n".join(PEER_REQUIREMENTS)
    if not (stamp.exists() and stamp.read_text() == wanted):
        subprocess.run([python, "-m", "venv", "--clear", str(PEER_VENV)], check=True)
        subprocess.run(
            [str(peer_python), "-m", "pip", "install", "-q", *PEER_REQUIREMENTS], check=True
        )
        stamp.write_text(wanted)
    return peer_python


def peer_versions(peer_python: Path) -> str:
    """async-kinesis, aiobotocore and psycopg versions in the peer's virtualenv."""
    code = (
        "from importlib.metadata import version as v; "
        "print(', '.join(f'{p} {v(p)}' for p in ('async-kinesis', 'aiobotocore', 'psycopg')))"
    )
    out = subprocess.run([str(peer_python), "-c", code], capture_output=True, text=True)
    return out.stdout.strip()


def daemon_command(endpoints: Endpoints, stream: str, workdir: Path) -> list[str]:
    """`python -m consumer run` with a config for this stream and table."""
    config = workdir / f"daemon-{uuid.uuid4().hex[:6]}.toml"
    config.write_text(
        f"""application = "bench-kpg-{uuid.uuid4().hex[:6]}"
[source]
kind = "kinesis"
stream_name = "{stream}"
format = "json"
[aws]
region = "{REGION}"
[http]
host = "127.0.0.1"
port = 0
[postgres]
dsn = "{endpoints.dsn}"
[[projections]]
name = "docs"
class = "bench.kinesis_postgres_bench:JsonUpsertProjection"
[projections.settings]
table = "{TABLE}"
"""
    )
    return [sys.executable, "-m", "consumer", "run", "--config", str(config)]


def baseline_command(root: Path, daemon_argv: list[str]) -> list[str]:
    """`daemon_argv` run with the consumer (and bench) packages of the checkout at `root`."""
    config = daemon_argv[-1]
    code = (
        f"import runpy, sys; sys.path.insert(0, {str(root.resolve())!r}); "
        f"sys.argv = ['consumer', 'run', '--config', {config!r}]; "
        "runpy.run_module('consumer', run_name='__main__')"
    )
    return [sys.executable, "-c", code]


def peer_command(
    peer_python: Path, mode: str, endpoints: Endpoints, stream: str, batch: int
) -> list[str]:
    """The async-kinesis consumer in `mode` (per-record or batched)."""
    return [
        str(peer_python),
        str(PEER_SCRIPT),
        "--mode",
        mode,
        "--stream",
        stream,
        "--kinesis-endpoint",
        endpoints.kinesis,
        "--dynamodb-endpoint",
        endpoints.dynamodb,
        "--region",
        REGION,
        "--application",
        f"bench-kpg-{uuid.uuid4().hex[:6]}",
        "--dsn",
        endpoints.dsn,
        "--table",
        TABLE,
        "--batch",
        str(batch),
    ]


def applied(conn: psycopg.Connection[Any]) -> int:
    """Records applied so far: the sum of the stored versions (see the module docstring)."""
    row = conn.execute(
        sql.SQL("SELECT coalesce(sum(version), 0) FROM {}").format(sql.Identifier(TABLE))
    ).fetchone()
    return int(row[0]) if row else 0


def server_cpu(endpoints: Endpoints) -> float:
    """The Kinesis server's CPU seconds so far (0 when it is not ours)."""
    return cpu_seconds(endpoints.kinesis_pid) if endpoints.kinesis_pid else 0.0


def postgres_cpu(endpoints: Endpoints) -> float:
    """PostgreSQL's CPU seconds so far, every backend's included (0 when it is not ours)."""
    return tree_cpu_seconds(endpoints.postgres_pid) if endpoints.postgres_pid else 0.0


def records_served(endpoints: Endpoints) -> int:
    """Records the replay server has served so far (0 for kinesis-local)."""
    return (
        kinesis_replay.stats(endpoints.replay_url)["records_served"] if endpoints.replay_url else 0
    )


def check_final_state(conn: psycopg.Connection[Any], events: Sequence[dict[str, Any]]) -> None:
    """Every key's row holds its last event (version, price and body), or RuntimeError."""
    last = {event["id"]: event for event in events}
    rows = conn.execute(
        sql.SQL("SELECT id, version, price, body FROM {}").format(sql.Identifier(TABLE))
    ).fetchall()
    stored = {row[0]: row[1:] for row in rows}
    wrong = [
        key
        for key, event in last.items()
        if stored.get(key) != (event["version"], event["price"], event)
    ]
    if wrong or len(stored) != len(last):
        raise RuntimeError(
            f"the table is not the stream's final state: {len(wrong)} of {len(last)} keys wrong "
            f"(e.g. {wrong[:3]}), {len(stored)} rows"
        )


def measure(
    side: str,
    argv: list[str],
    endpoints: Endpoints,
    expected: int,
    log: Path,
    timeout: float,
    py_spy: Path | None = None,
    events: Sequence[dict[str, Any]] = (),
) -> Measured:
    """Run one side as a child on an empty table until every record is applied.

    With `events` (the stream's), the table must then hold each key's last event. With
    `py_spy`, py-spy samples the child into that file (collapsed stacks); the figures of such a
    run include the sampling's cost to the child and are not for comparison."""
    create_table(endpoints.dsn)
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": endpoints.dynamodb,
        "AWS_ENDPOINT_URL_KINESIS": endpoints.kinesis,
    }
    with (
        psycopg.connect(endpoints.dsn, autocommit=True) as conn,
        log.open("ab") as out,
    ):
        out.write(f"\n== {side}: {' '.join(argv)}\n".encode())
        out.flush()
        spawned = time.perf_counter()
        at_spawn = (server_cpu(endpoints), records_served(endpoints))
        child = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        sampler = None
        if py_spy is not None:
            sampler = subprocess.Popen(
                ["py-spy", "record", "--pid", str(child.pid), "--rate", "200", "--format", "raw",
                 "--output", str(py_spy), "--gil", "--nonblocking"],
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            first: tuple[float, float, int, float, float, float] | None = None
            while True:
                if child.poll() is not None:
                    raise RuntimeError(f"{side} exited with {child.returncode}; see {log}")
                now = time.perf_counter()
                if now - spawned > timeout:
                    raise RuntimeError(f"{side} did not catch up within {timeout:.0f} s")
                done = applied(conn)
                if done and first is None:
                    first = (now, cpu_seconds(child.pid), done, server_cpu(endpoints),
                             postgres_cpu(endpoints), machine_busy_seconds())  # fmt: skip
                if done >= expected and first is not None:
                    cpu, kinesis_cpu = cpu_seconds(child.pid), server_cpu(endpoints)
                    postgres, busy = postgres_cpu(endpoints), machine_busy_seconds()
                    # kinesis-local counts nothing: every record of the stream is read once.
                    served = (
                        records_served(endpoints) - at_spawn[1]
                        if endpoints.replay_url
                        else expected
                    )
                    if events:
                        check_final_state(conn, events)
                    return Measured(side, expected - first[2], now - first[0], cpu - first[1],
                                    now - spawned, kinesis_cpu - first[3],
                                    kinesis_cpu - at_spawn[0], served, postgres - first[4],
                                    busy - first[5])  # fmt: skip
                time.sleep(POLL_SECONDS)  # polling a child's progress, not synchronizing
        finally:
            stop(child)
            if sampler is not None:
                sampler.wait(timeout=30)  # it writes its file when the child exits


# -- running it -------------------------------------------------------------------------------


def start_servers(
    workdir: Path, server: str = "kinesis-local", proxy_latency_ms: float = 0.0
) -> tuple[list[Any], Endpoints]:
    """The Kinesis server, moto and a durable PostgreSQL (and latency proxies in front of the
    two AWS endpoints if asked); the handles to stop and the endpoints."""
    from bench.dynamodb_sink_bench import start_moto
    from tests.fixtures.aws import start_kinesis_local
    from tests.fixtures.postgres import start_postgres

    handles: list[Any] = []
    replay_url = None
    if server == "replay":
        replay, kinesis_url = kinesis_replay.start()
        handles.append(replay)
        kinesis_pid, replay_url = replay.pid, kinesis_url
    else:
        kinesis, kinesis_url = start_kinesis_local(workdir)
        handles.append(kinesis)
        kinesis_pid = kinesis.process.pid
    moto, moto_url = start_moto()
    handles.append(moto)
    if proxy_latency_ms:
        kinesis_proxy, kinesis_url = latency_proxy.start(kinesis_url, proxy_latency_ms)
        moto_proxy, moto_url = latency_proxy.start(moto_url, proxy_latency_ms)
        handles += [kinesis_proxy, moto_proxy]
    postgres = start_postgres(durable=True)
    handles.append(postgres)
    postmaster = int((postgres.data_dir / "postmaster.pid").read_text().split()[0])
    return handles, Endpoints(
        kinesis_url, moto_url, postgres.dsn, kinesis_pid, replay_url, postmaster
    )


def stop_servers(handles: list[Any]) -> None:
    """Stop what start_servers started."""
    for handle in handles:
        if hasattr(handle, "destroy"):
            handle.destroy()
        elif isinstance(handle, subprocess.Popen):
            stop(handle)
        else:
            handle.stop()


def run_rounds(
    args: argparse.Namespace, endpoints: Endpoints, workdir: Path, peer_python: Path | None
) -> dict[str, list[Measured]]:
    """Write the events once, then run every side `args.rounds` times, alternating."""
    client = boto3.client("kinesis", region_name=REGION, endpoint_url=endpoints.kinesis)
    stream = f"bench-kpg-{uuid.uuid4().hex[:6]}"
    create_stream(client, stream, args.shards)
    events = make_events(args.records, args.keys)
    put_events(client, stream, events)

    def command(side: str) -> list[str]:
        # A new application (lease table, checkpointer) each time: every run reads it all.
        if side == "daemon":
            return daemon_command(endpoints, stream, workdir)
        if side == BASELINE:
            return baseline_command(args.baseline_root, daemon_command(endpoints, stream, workdir))
        assert peer_python is not None
        mode = side.removeprefix("async-kinesis ")
        return peer_command(peer_python, mode, endpoints, stream, args.batch)

    results: dict[str, list[Measured]] = {side: [] for side in args.sides}
    log = workdir / "sides.log"
    for round_ in range(args.rounds):
        for side in args.sides:
            py_spy = None
            if args.py_spy is not None:
                py_spy = args.py_spy.with_name(
                    f"{args.py_spy.stem}-{side.replace(' ', '-')}-{round_}.txt"
                )
            results[side].append(
                measure(
                    side, command(side), endpoints, args.records, log, args.timeout, py_spy, events
                )
            )
    return results


def median_of(runs: list[Measured]) -> dict[str, float]:
    """Medians of one side's runs."""
    return {
        "records_per_s": statistics.median(m.rate for m in runs),
        "cpu_us_per_record": statistics.median(m.cpu_us_per_record for m in runs),
        "seconds": statistics.median(m.seconds for m in runs),
        "seconds_from_spawn": statistics.median(m.seconds_from_spawn for m in runs),
        "server_cpu_share": statistics.median(
            [m.kinesis_cpu_seconds / m.seconds for m in runs if m.seconds] or [0.0]
        ),
        "server_cpu_us_per_record": statistics.median(
            m.kinesis_cpu_seconds_from_spawn / m.records_served * 1e6 if m.records_served else 0.0
            for m in runs
        ),
        "postgres_cpu_us_per_record": statistics.median(
            m.postgres_cpu_seconds / m.records * 1e6 if m.records else 0.0 for m in runs
        ),
        "machine_busy_cores": statistics.median(
            m.machine_busy_seconds / m.seconds if m.seconds else 0.0 for m in runs
        ),
        "other_processes_cores": statistics.median(
            m.other_cpu_seconds / m.seconds if m.seconds else 0.0 for m in runs
        ),
    }


def report(args: argparse.Namespace, results: dict[str, list[Measured]], versions: str) -> str:
    """A Markdown table: medians, every run's rate, and ratios against the daemon."""
    medians = {side: median_of(runs) for side, runs in results.items()}
    daemon = medians.get("daemon")
    proxy = (
        f", latency proxy {args.proxy_latency_ms:g} ms per AWS call"
        if args.proxy_latency_ms
        else ""
    )
    lines = [
        f"kinesis_postgres: {args.records} JSON records over {args.keys} keys, {args.shards} "
        f"shards, batch {args.batch}, Kinesis server {args.server}{proxy}; medians of "
        f"{args.rounds}; load {os.getloadavg()[0]:.1f}",
        f"peer: {versions or 'not run'}",
        "| side | records/s | each run | records in the window | s from spawn | "
        f"client CPU us/record | {args.server} CPU in the window | {args.server} CPU us/record "
        "served | PostgreSQL CPU us/record | machine busy (of which other processes) | "
        "daemon's rate vs side |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for side, runs in results.items():
        m = medians[side]
        ratio = f"{daemon['records_per_s'] / m['records_per_s']:.1f}x" if daemon else "-"
        each = " / ".join(f"{r.rate:,.0f}" for r in runs)
        window = statistics.median(r.records for r in runs)
        lines.append(
            f"| {side} | {m['records_per_s']:,.0f} | {each} | {window:,.0f} | "
            f"{m['seconds_from_spawn']:.1f} | {m['cpu_us_per_record']:.1f} | "
            f"{m['server_cpu_share']:.0%} of a core | {m['server_cpu_us_per_record']:.1f} | "
            f"{m['postgres_cpu_us_per_record']:.1f} | {m['machine_busy_cores']:.2f} cores "
            f"({m['other_processes_cores']:.2f}) | "
            f"{ratio} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Start the servers, run the sides, print the table (or JSON)."""
    parser = argparse.ArgumentParser(prog="python -m bench kinesis_postgres", description=__doc__)
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--keys", type=int, default=5_000)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--batch", type=int, default=500, help="the batched peer's batch size")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=300.0, help="per side, seconds")
    parser.add_argument(
        "--sides",
        type=lambda text: [s.strip() for s in text.split(",")],
        default=list(SIDES),
        help=f"comma-separated, of: {', '.join(SIDES)}",
    )
    parser.add_argument(
        "--server",
        choices=SERVERS,
        default="kinesis-local",
        help="the Kinesis server: kinesis-local, or bench/kinesis_replay.py (pages from memory)",
    )
    parser.add_argument(
        "--proxy-latency-ms",
        type=float,
        default=0.0,
        help="bench/latency_proxy.py in front of Kinesis and DynamoDB, this delay per call",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--py-spy",
        type=Path,
        metavar="FILE",
        help="sample each side with py-spy (on PATH) into FILE-<side>-<round>.txt, collapsed "
        "stacks; figures of such a run are not for comparison",
    )
    parser.add_argument(
        "--baseline-root",
        type=Path,
        metavar="DIR",
        help=f"also run another checkout's daemon (e.g. a git worktree of an older commit) as "
        f"the side {BASELINE!r}, alternating with this one",
    )
    args = parser.parse_args(argv)
    if args.baseline_root is not None:
        if not (args.baseline_root / "consumer" / "__main__.py").is_file():
            root = args.baseline_root
            parser.error(f"--baseline-root: {root} is not a stream-projector checkout")
        args.sides = [*args.sides, BASELINE]
    if unknown := set(args.sides) - {*SIDES, BASELINE}:
        parser.error(f"--sides: unknown {sorted(unknown)}; choose from {', '.join(SIDES)}")
    # The emulators accept any credentials; never reach a real account from a benchmark.
    for name, value in (("AWS_ACCESS_KEY_ID", "bench"), ("AWS_SECRET_ACCESS_KEY", "bench"),
                        ("AWS_DEFAULT_REGION", REGION)):  # fmt: skip
        os.environ.setdefault(name, value)
    peers = any(side not in ("daemon", BASELINE) for side in args.sides)
    peer_python = ensure_peer_venv() if peers else None
    versions = peer_versions(peer_python) if peer_python else ""
    workdir = Path(tempfile.mkdtemp(prefix="bench-kpg-"))
    handles, endpoints = start_servers(workdir, args.server, args.proxy_latency_ms)
    try:
        results = run_rounds(args, endpoints, workdir, peer_python)
    except Exception:
        print(f"the logs of the sides and servers are kept in {workdir}", file=sys.stderr)
        raise
    finally:
        stop_servers(handles)
    shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        out = {
            side: {"runs": [asdict(m) for m in runs], "median": median_of(runs)}
            for side, runs in results.items()
        }
        settings = {"records": args.records, "server": args.server,
                    "proxy_latency_ms": args.proxy_latency_ms}  # fmt: skip
        print(json.dumps({**settings, "peer": versions, "sides": out}, indent=2))
    else:
        print(report(args, results, versions))
    return 0


if __name__ == "__main__":
    sys.exit(main())
