"""Two worker processes on an 8-shard stream: how soon they hold 4 leases each, in one run.

Workers are real `python -m consumer run` processes sharing a lease table (moto) on an
8-shard kinesis-local stream, with the default lease timings (take every 5 s, renew every 3 s,
failover 10 s). Two scenarios, each `--rounds` times:

- together: both processes start at the same moment. Measured from the start: when the first
  lease is taken, when the table first shows 4/4, and how many leases were taken and stolen on
  the way (8 and 0 when nothing moved twice). "Within one take interval" means 4/4 one take
  interval (5 s, plus the claims themselves) after the first lease.
- late joiner: one worker holds all 8 leases, then the second starts; measured from its start.
  Run with `leases.max_steals_per_take` at 0 (the default: as many as the share needs) and at 1
  (the KCL's maxLeasesToStealAtOneTime default), which steals one lease per take.

`--baseline-root DIR` runs the same scenarios with the worker processes of another checkout of
this repository (e.g. `mkdir /tmp/before && git archive <commit> | tar -x -C /tmp/before`), side
by side, for a before and after; settings the older code does not know are left out there.

Run: `python -m bench balance [--rounds R --baseline-root DIR --json]`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from bench.daemon_run import REGION, ROOT, emulators, set_fake_credentials
from consumer.aws import make_client
from consumer.errors import MissingResourceError
from consumer.leases.store import DynamoDBLeaseStore
from tests.support.streams import stream_active

SHARDS = 8
TAKE_INTERVAL = 5.0
CONFIG = """
application = "{app}"
worker_id = "{worker}"
[source]
kind = "kinesis"
stream_name = "{stream}"
[leases]
{leases}
[http]
host = "127.0.0.1"
port = 0
[[projections]]
name = "bench"
class = "bench.daemon_run:BenchProjection"
"""


@dataclass
class Balance:
    """One scenario run: seconds from the start, and how leases moved."""

    scenario: str
    code: str
    first_lease_seconds: float
    balanced_seconds: float
    taken: int
    stolen: int

    @property
    def after_first_lease(self) -> float:
        """Seconds from the first lease taken to 4/4."""
        return self.balanced_seconds - self.first_lease_seconds


class Fleet:
    """Worker processes of one application, started from `root` (this checkout or another)."""

    def __init__(self, root: Path, work: Path, env: dict[str, str], stream: str, leases: str):
        self.root, self.work, self.env = root, work, env
        self.stream, self.leases = stream, leases
        self.app = f"bench-balance-{uuid.uuid4().hex[:6]}"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, worker: str) -> None:
        config = self.work / f"{self.app}-{worker}.toml"
        config.write_text(
            CONFIG.format(app=self.app, worker=worker, stream=self.stream, leases=self.leases)
        )
        self.procs[worker] = subprocess.Popen(
            [sys.executable, "-m", "consumer", "run", "--config", str(config)],
            cwd=self.root,
            env={**os.environ, **self.env, "PYTHONPATH": str(self.root)},
            stdout=self.log_path(worker).open("wb"),
            stderr=subprocess.STDOUT,
        )

    def log_path(self, worker: str) -> Path:
        return self.work / f"{self.app}-{worker}.log"

    def events(self) -> Counter[str]:
        """Lease events over every worker's JSON log lines."""
        events: Counter[str] = Counter()
        for worker in self.procs:
            for line in self.log_path(worker).read_bytes().splitlines():
                try:
                    events[orjson.loads(line)["event"]] += 1
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    continue  # not one of our JSON lines
        return events

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def owners(store: DynamoDBLeaseStore) -> Counter[str | None]:
    """Leases per owner; none while the first worker has not created the table yet."""
    try:
        return Counter(lease.lease_owner for lease in store.list_leases())
    except MissingResourceError:
        return Counter()


def wait_for(condition: Any, timeout: float, what: str) -> float:
    """Poll the lease table every 50 ms; the monotonic time the condition first held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return time.monotonic()
        time.sleep(0.05)  # polling a remote table, not synchronizing threads
    raise TimeoutError(f"{what} not reached within {timeout} s")


def run_scenario(
    scenario: str, code: str, root: Path, work: Path, env: dict[str, str], stream: str, leases: str
) -> Balance:
    """Start the workers as the scenario says and time the way to 4/4."""
    fleet = Fleet(root, work, env, stream, leases)
    dynamodb = make_client("dynamodb", REGION, env["AWS_ENDPOINT_URL"])
    store = DynamoDBLeaseStore(dynamodb, f"{fleet.app}-leases")
    try:
        if scenario == "together":
            began = time.monotonic()
            fleet.start("w1")
            fleet.start("w2")
        else:
            fleet.start("w1")
            wait_for(lambda: owners(store) == {"w1": SHARDS}, 120, "w1 holds every lease")
            began = time.monotonic()
            fleet.start("w2")
        # The first lease of the scenario: any at all together, the joiner's when it joins.
        joiner = "w2" if scenario == "late joiner" else None
        first = wait_for(
            lambda: any(owner and owner == (joiner or owner) for owner in owners(store)),
            120,
            "a first lease",
        )
        balanced = wait_for(
            lambda: owners(store) == {"w1": SHARDS // 2, "w2": SHARDS // 2}, 180, "4/4"
        )
    except TimeoutError as exc:
        logs = "\n".join(fleet.log_path(w).read_text(errors="replace")[-2000:] for w in fleet.procs)
        raise TimeoutError(f"{exc}; owners {dict(owners(store))}; worker logs:\n{logs}") from None
    finally:
        fleet.stop()
    events = fleet.events()
    taken_before = SHARDS if scenario == "late joiner" else 0
    return Balance(
        scenario,
        code,
        first - began,
        balanced - began,
        events["lease taken"] - taken_before,
        events["lease stolen"],
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run each scenario `--rounds` times (and with the baseline's workers), print the figures."""
    parser = argparse.ArgumentParser(prog="bench balance", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline-root", type=Path, help="another checkout's workers, too")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    set_fake_credentials()
    codes = {"this checkout": ROOT}
    if args.baseline_root:
        codes[f"baseline {args.baseline_root}"] = args.baseline_root.resolve()
    results: list[Balance] = []
    with emulators(kinesis_local=True) as servers:
        kinesis_url, _ = servers.kinesis()
        work = servers.work
        kinesis = make_client("kinesis", REGION, kinesis_url)
        stream = f"balance-{uuid.uuid4().hex[:6]}"
        kinesis.create_stream(StreamName=stream, ShardCount=SHARDS)
        wait_for(lambda: stream_active(kinesis, stream), 60, "stream ACTIVE")
        env = {"AWS_ENDPOINT_URL": servers.moto_url, "AWS_ENDPOINT_URL_KINESIS": kinesis_url}
        cases: list[tuple[str, str, Path, str]] = []
        for code, root in codes.items():
            cases.append(("together", code, root, ""))
            cases.append(("late joiner", code, root, ""))
        kcl_steals = "this checkout, max_steals_per_take = 1"
        cases.append(("late joiner", kcl_steals, ROOT, "max_steals_per_take = 1"))
        for _ in range(args.rounds):
            for scenario, code, root, leases in cases:
                result = run_scenario(scenario, code, root, work, env, stream, leases)
                results.append(result)
                print(
                    f"{scenario:<11} {code}: first lease "
                    f"{result.first_lease_seconds:.1f} s, "
                    f"4/4 at {result.balanced_seconds:.1f} s "
                    f"({result.after_first_lease:.1f} s after the first lease); "
                    f"taken {result.taken}, stolen {result.stolen}",
                    flush=True,
                )
    if args.json:
        print(json.dumps([asdict(result) for result in results], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
