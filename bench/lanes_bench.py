"""Per-key lanes inside one shard against a sink with latency: 1, 2, 4 and 10 lanes, in one run.

A sink that costs a round trip per record, one record at a time (an HTTP API, a database across
a network, a tutorial's `update_item` per record), caps a shard at 1 / latency records/s however
fast the engine is. Lanes (`polling.parallelization_factor`, like Lambda's ParallelizationFactor)
apply different keys at the same time, each key still in order, so that cap multiplies by the
number of lanes until keys, the emulator or the CPU run out.

The benchmark writes `--records` JSON records over `--keys` partition keys into a one-shard
Kinesis stream (moto's by default, `--emulator kinesis-local` for kinesis-local), then runs the
daemon on it from TRIM_HORIZON once per lane count, each run in a fresh process with its own
lease table, with a projection that waits `--latency-ms` per record (a simulated round trip: a
sleep, no CPU; the output says so). Per run: records/s from the first record applied to the
last, the speed-up over one lane, and the peak RSS.

Run: `python -m bench lanes [--records N --keys K --latency-ms L --lanes 1,2,4,10 --json]`.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from bench.daemon_run import (
    REGION,
    emulators,
    run_daemon_child,
    set_fake_credentials,
    write_backlog,
)
from consumer.aws import make_client


def main(argv: Sequence[str] | None = None) -> int:
    """Write the backlog once, run the daemon with each lane count, print records/s and speed-up."""
    parser = argparse.ArgumentParser(prog="bench lanes", description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=5000)
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--latency-ms", type=float, default=2.0)
    parser.add_argument("--lanes", default="1,2,4,10")
    parser.add_argument("--emulator", choices=("moto", "kinesis-local"), default="moto")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    set_fake_credentials()
    lane_counts = [int(n) for n in args.lanes.split(",")]
    runs: list[dict[str, Any]] = []
    with emulators(kinesis_local=args.emulator == "kinesis-local") as servers:
        url, _ = servers.kinesis()
        stream = f"lanes-{uuid.uuid4().hex[:6]}"
        client = make_client("kinesis", REGION, url)
        written = write_backlog(client, stream, args.records, args.keys)
        print(
            f"{args.emulator}: {args.records:,} records over {args.keys:,} keys written in "
            f"{written:.0f} s; sink: {args.latency_ms:g} ms per record (simulated latency)",
            flush=True,
        )
        env = {"AWS_ENDPOINT_URL": servers.moto_url, "AWS_ENDPOINT_URL_KINESIS": url}
        for _ in range(args.rounds):
            base = None
            for lanes in lane_counts:
                options = {
                    "stream": stream,
                    "records": args.records,
                    "latency_ms": args.latency_ms,
                    "polling": {"parallelization_factor": lanes},
                }
                run = run_daemon_child(options, env, servers.work)
                base = base or run.rate
                runs.append({"lanes": lanes, **asdict(run)})
                print(
                    f"  {lanes:>2} lane(s): {run.rate:,.0f} records/s "
                    f"({run.rate / base:.1f}x), {run.batches} lane batches, "
                    f"peak RSS {run.max_rss_mb:.0f} MB",
                    flush=True,
                )
    if args.json:
        print(json.dumps(runs, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
