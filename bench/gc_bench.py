"""The cyclic garbage collector on the hot path: CPython's defaults against the daemon's tuning.

Parses and decodes Kinesis JSON pages as the daemon does (orjson on the page, `_raw_record`,
`decode_page` into ChangeRecords), keeping the last 8 pages alive as a prefetch queue would,
after importing what `stream-projector run` imports and creating its boto3 clients. Each
side runs in a fresh child process, since the collector's state is process-wide:

- default: CPython's thresholds (700, 10, 10), nothing frozen;
- tuned: `consumer.runtimes.garbage_collector.tune_for_throughput()` after start-up, as
  `stream-projector run` calls it.

Sides alternate; each figure is a child's best of 3 passes over the pages (CPU time), and
the table gives the median over `--rounds` children.

    python -m bench gc     # --records N --rounds R
"""

from __future__ import annotations

import argparse
import base64
import gc
import importlib
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence

import orjson

PAGE = 1000


def child(mode: str, records: int) -> tuple[float, int]:
    """CPU microseconds per record of parse + decode in this process, after start-up, and
    the number of objects the collector tracked when start-up was done."""
    import boto3

    # What the daemon has loaded by the time it tunes the collector.
    importlib.import_module("consumer.cli.main")
    importlib.import_module("consumer.runtimes.daemon")
    from bench.kinesis_postgres_bench import make_events
    from consumer.pipeline.prefetch import decode_page
    from consumer.runtimes.garbage_collector import tune_for_throughput
    from consumer.sources.decode import KinesisDecoder
    from consumer.sources.kinesis import KinesisShardReader

    clients = [boto3.client(s, region_name="us-east-1") for s in ("kinesis", "dynamodb")]
    wire = [
        {
            "SequenceNumber": str(49_000_000_000_000_000_000 + i),
            "ApproximateArrivalTimestamp": 1.7e9 + i,
            "Data": base64.b64encode(orjson.dumps(event)).decode(),
            "PartitionKey": event["id"],
        }
        for i, event in enumerate(make_events(records, max(1, records // 4)))
    ]
    pages = [orjson.dumps({"Records": wire[i : i + PAGE]}) for i in range(0, records, PAGE)]
    del wire
    started_with = len(gc.get_objects())
    if mode == "tuned":
        tune_for_throughput()
    decoder = KinesisDecoder("bench", "json")
    best = float("inf")
    for _ in range(3):
        queue = []
        started = time.process_time()
        for page in pages:
            raws = [KinesisShardReader._raw_record(r) for r in orjson.loads(page)["Records"]]
            queue.append(decode_page(decoder, "shardId-000000000000", raws))
            if len(queue) > 8:
                queue.pop(0)
        best = min(best, time.process_time() - started)
    del clients
    return best / records * 1e6, started_with


def main(argv: Sequence[str] | None = None) -> int:
    """Run both sides in alternating children and print the medians."""
    parser = argparse.ArgumentParser(prog="python -m bench gc", description=__doc__)
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", choices=("default", "tuned"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        per_record, tracked = child(args.child, args.records)
        print(per_record, tracked)
        return 0
    figures: dict[str, list[float]] = {"default": [], "tuned": []}
    tracked = 0
    for _ in range(args.rounds):
        for mode in figures:
            out = subprocess.run(
                [sys.executable, "-m", "bench", "gc", "--child", mode, "--records",
                 str(args.records)],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            per_record, objects = out.stdout.split()[-2:]
            figures[mode].append(float(per_record))
            tracked = int(objects)
    default, tuned = (statistics.median(figures[m]) for m in ("default", "tuned"))
    print(f"parse + decode of {args.records} Kinesis JSON records, CPU us/record, median of "
          f"{args.rounds} children each; {tracked:,} objects tracked after start-up "
          "(the input pages are bytes, not tracked)")  # fmt: skip
    for mode, values in figures.items():
        runs = " / ".join(f"{v:.2f}" for v in values)
        print(f"  {mode:<8} {statistics.median(values):6.2f}   ({runs})")
    print(f"  tuned / default: {tuned / default:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
