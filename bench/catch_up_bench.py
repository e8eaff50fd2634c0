"""One shard catching up: a fixed GetRecords Limit of 1,000 against adaptive paging, in one run.

The benchmark writes a backlog of small JSON records (about 60 bytes of data each) into a
one-shard Kinesis stream, then runs the daemon on it from TRIM_HORIZON, each run in a fresh
process with its own lease table, until it has applied every record:

- A, fixed pages (the daemon before adaptive paging): `polling.max_records = 1000`, so every
  GetRecords asks for 1,000 records; at 5 calls/s that caps a shard at 5,000 records/s.
- B, adaptive pages (the defaults): the Limit starts at 1,000 and doubles toward 10,000 while
  pages come back full or MillisBehindLatest says the shard is behind.

Both sides keep the default pacing (`min_interval_seconds = 0.2`: at most 5 GetRecords/s) and
apply through a projection that only counts, so what is measured is fetch, decode, the shard
loop and checkpoints, not a sink. Per run: records/s from the first record applied to the last
(start-up and the first GetRecords are left out), GetRecords calls, the largest Limit asked,
the daemon's CPU per record over that span, how many cores the emulator kept busy meanwhile
(its CPU seconds over the run's seconds: a single-threaded emulator near 1.0 is saturated),
and the child process's peak RSS (`ru_maxrss`): the memory a backlog costs.

The emulator's ceiling is measured on the same stream: a plain loop of GetRecords with Limit
10,000 and no pacing (orjson parsing, as the daemon's), so a side that reaches it is limited by
the emulator, not by its pacing.

Backlogs: moto's Kinesis (`--records`, default 100,000) and kinesis-local
(`--kinesis-local-records`, default 20,000: kinesis-local's PutRecords slows down as a shard
grows, about 10-20 s per 500 records past 20,000, so a 100,000-record backlog takes hours to
write there). `--emulators` picks them.

Run: `python -m bench catch_up [--records N --kinesis-local-records N --rounds R --json]`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
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
from bench.processes import cpu_seconds
from consumer.aws import make_client
from consumer.sources import fast_get_records

SIDES: dict[str, dict[str, Any]] = {
    "A fixed Limit 1,000": {"max_records": 1000},
    "B adaptive 1,000-10,000": {},
}


def emulator_ceiling(client: Any, stream: str, records: int) -> float:
    """Records/s a plain, unpaced GetRecords loop (Limit 10,000, orjson parsing) reads."""
    fast_get_records.install(client)
    shard = client.list_shards(StreamName=stream)["Shards"][0]["ShardId"]
    iterator = client.get_shard_iterator(
        StreamName=stream, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    began, read = time.perf_counter(), 0
    while read < records:
        page = client.get_records(ShardIterator=iterator, Limit=10_000)
        read += len(page["Records"])
        iterator = page["NextShardIterator"]
    return read / (time.perf_counter() - began)


def main(argv: Sequence[str] | None = None) -> int:
    """Write the backlogs, run both sides `--rounds` times on each emulator, print the figures."""
    parser = argparse.ArgumentParser(prog="bench catch_up", description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=100_000, help="backlog on moto")
    parser.add_argument("--kinesis-local-records", type=int, default=20_000)
    parser.add_argument("--emulators", default="moto,kinesis-local")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    set_fake_credentials()
    names = [name.strip() for name in args.emulators.split(",") if name.strip()]
    report: dict[str, Any] = {}
    with emulators(kinesis_local="kinesis-local" in names) as servers:
        endpoints = {"moto": (servers.moto_url, servers.moto_pid)}
        if servers.kinesis_local_url is not None and servers.kinesis_local_pid is not None:
            endpoints["kinesis-local"] = (servers.kinesis_local_url, servers.kinesis_local_pid)
        for emulator in names:
            url, pid = endpoints[emulator]
            records = args.records if emulator == "moto" else args.kinesis_local_records
            client = make_client("kinesis", REGION, url)
            stream = f"catch-up-{uuid.uuid4().hex[:6]}"
            written = write_backlog(client, stream, records)
            ceiling = emulator_ceiling(client, stream, records)
            print(
                f"{emulator}: {records:,} records written in {written:.0f} s; "
                f"unpaced GetRecords reads {ceiling:,.0f} records/s",
                flush=True,
            )
            env = {"AWS_ENDPOINT_URL": servers.moto_url, "AWS_ENDPOINT_URL_KINESIS": url}
            runs = []
            for _ in range(args.rounds):
                for side, polling in SIDES.items():
                    options = {"stream": stream, "records": records, "polling": polling}
                    before = cpu_seconds(pid)
                    run = run_daemon_child(options, env, servers.work)
                    busy = (cpu_seconds(pid) - before) / run.seconds
                    runs.append({"side": side, "emulator_cores": busy, **asdict(run)})
                    print(
                        f"  {side}: {run.rate:,.0f} records/s, "
                        f"{run.get_records_calls} GetRecords, Limit up to "
                        f"{run.largest_limit:,}, {run.cpu_us_per_record:.0f} us CPU/record here, "
                        f"{emulator} busy {busy:.2f} cores, peak RSS {run.max_rss_mb:.0f} MB",
                        flush=True,
                    )
            report[emulator] = {
                "records": records,
                "write_seconds": written,
                "ceiling": ceiling,
                "runs": runs,
            }
    if args.json:
        print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
