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

Backlogs: moto's Kinesis (`--records`, default 100,000), kinesis-local
(`--kinesis-local-records`, default 20,000: kinesis-local's PutRecords slows down as a shard
grows, about 10-20 s per 500 records past 20,000, so a 100,000-record backlog takes hours to
write there) and `replay`, bench/kinesis_replay.py (`--records`), a server that serves pages
from memory at almost no CPU, so that the daemon, not the emulator, is what is measured.
`--emulators` picks them (moto serves the lease table in every case).
`--proxy-latency-ms L` puts bench/latency_proxy.py (no CPU work) between the daemon and
both AWS endpoints (Kinesis, DynamoDB), so every call waits L ms more; the ceiling loop reads
through it too.

Run: `python -m bench catch_up [--records N --kinesis-local-records N --rounds R --json]`,
`python -m bench catch_up --emulators replay [--proxy-latency-ms L]`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import asdict
from typing import Any

from bench import latency_proxy
from bench.daemon_run import (
    REGION,
    emulators,
    run_daemon_child,
    set_fake_credentials,
    write_backlog,
)
from bench.processes import cpu_seconds, stop
from consumer.aws import make_client
from consumer.sources import fast_get_records

KINDS = ("moto", "kinesis-local", "replay")
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


def proxied(stack: ExitStack, url: str, delay_ms: float) -> str:
    """A latency proxy in front of `url`, stopped with `stack`; the proxy's URL."""
    process, proxy_url = latency_proxy.start(url, delay_ms)
    stack.callback(stop, process)
    return proxy_url


def main(argv: Sequence[str] | None = None) -> int:
    """Write the backlogs, run both sides `--rounds` times on each emulator, print the figures."""
    parser = argparse.ArgumentParser(prog="bench catch_up", description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=100_000, help="backlog on moto, replay")
    parser.add_argument("--kinesis-local-records", type=int, default=20_000)
    parser.add_argument(
        "--emulators", default="moto,kinesis-local", help=f"comma-separated, of: {', '.join(KINDS)}"
    )
    parser.add_argument(
        "--proxy-latency-ms",
        type=float,
        default=0.0,
        help="bench/latency_proxy.py in front of Kinesis and DynamoDB, this delay per call",
    )
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    set_fake_credentials()
    names = [name.strip() for name in args.emulators.split(",") if name.strip()]
    if unknown := set(names) - set(KINDS):
        parser.error(f"--emulators: unknown {sorted(unknown)}; choose from {', '.join(KINDS)}")
    report: dict[str, Any] = {}
    with (
        emulators(kinesis_local="kinesis-local" in names, replay="replay" in names) as servers,
        ExitStack() as proxies,
    ):
        endpoints = {"moto": (servers.moto_url, servers.moto_pid)}
        if servers.kinesis_local_url is not None and servers.kinesis_local_pid is not None:
            endpoints["kinesis-local"] = (servers.kinesis_local_url, servers.kinesis_local_pid)
        if servers.replay_url is not None and servers.replay_pid is not None:
            endpoints["replay"] = (servers.replay_url, servers.replay_pid)
        moto_url = servers.moto_url
        if args.proxy_latency_ms:
            moto_url = proxied(proxies, moto_url, args.proxy_latency_ms)
        for emulator in names:
            url, pid = endpoints[emulator]
            records = args.kinesis_local_records if emulator == "kinesis-local" else args.records
            client = make_client("kinesis", REGION, url)
            stream = f"catch-up-{uuid.uuid4().hex[:6]}"
            written = write_backlog(client, stream, records)
            if args.proxy_latency_ms:
                url = proxied(proxies, url, args.proxy_latency_ms)
                client = make_client("kinesis", REGION, url)
            ceiling = emulator_ceiling(client, stream, records)
            proxy = (
                f", through a {args.proxy_latency_ms:g} ms proxy" if args.proxy_latency_ms else ""
            )
            print(
                f"{emulator}: {records:,} records written in {written:.0f} s; "
                f"unpaced GetRecords reads {ceiling:,.0f} records/s{proxy}",
                flush=True,
            )
            env = {"AWS_ENDPOINT_URL": moto_url, "AWS_ENDPOINT_URL_KINESIS": url}
            runs = []
            for _ in range(args.rounds):
                for side, polling in SIDES.items():
                    options = {"stream": stream, "records": records, "polling": polling}
                    before = cpu_seconds(pid)
                    run = run_daemon_child(options, env, servers.work)
                    server_cpu = cpu_seconds(pid) - before
                    busy = server_cpu / run.seconds
                    runs.append(
                        {
                            "side": side,
                            "emulator_cores": busy,
                            "emulator_cpu_us_per_record": server_cpu / run.records * 1e6,
                            **asdict(run),
                        }
                    )
                    print(
                        f"  {side}: {run.rate:,.0f} records/s, "
                        f"{run.get_records_calls} GetRecords, Limit up to "
                        f"{run.largest_limit:,}, {run.cpu_us_per_record:.0f} us CPU/record here, "
                        f"{emulator} busy {busy:.2f} cores "
                        f"({server_cpu / run.records * 1e6:.1f} us CPU/record), "
                        f"peak RSS {run.max_rss_mb:.0f} MB",
                        flush=True,
                    )
            report[emulator] = {
                "records": records,
                "write_seconds": written,
                "ceiling": ceiling,
                "proxy_latency_ms": args.proxy_latency_ms,
                "runs": runs,
            }
    if args.json:
        print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
