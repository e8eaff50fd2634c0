"""The per-record objects of the hot path: what their shape costs, side by side in one process.

Every record the daemon reads becomes a `RawRecord`, then a `ChangeRecord`, then one outcome
in a projection's `Results`. Two choices there are measured against the way they were made
before:

- **records**: building a `ChangeRecord` (17 fields) and a `RawRecord` (4 fields) as plain
  slotted dataclasses, as the daemon does, against frozen ones (`frozen=True`, which sets each
  field through `object.__setattr__` in `__init__`), with the same fields and arguments.
- **results**: reporting a batch's records applied through `Results.applied` (a tuple per
  record, a `RecordResult` only when asked) and tallying it as the pipeline does, against
  `Results` and the tally as they were (a frozen `RecordResult` made for each record by
  `add`, read back through `get()` and `settled`).

Sides alternate within a round; each figure is the best of `--repeat` timings of a pass over
1,000 records, the median over `--rounds`; the process pins itself to one CPU.

    python -m bench records     # --rounds R --repeat N
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import timeit
from collections.abc import Callable, Sequence
from typing import Any

from consumer.pipeline.tally import Tally
from consumer.record import ChangeRecord, RawRecord
from projections.results import Outcome, RecordResult, Results

RECORDS = 1000


def frozen_twin(cls: type) -> type:
    """The same fields as `cls`, in a frozen slotted dataclass: the shape before."""
    fields = [(f.name, f.type, f) for f in dataclasses.fields(cls)]
    twin: type = dataclasses.make_dataclass(
        f"Frozen{cls.__name__}", fields, frozen=True, slots=True
    )
    return twin


def record_sides() -> dict[str, Callable[[], object]]:
    """Build 1,000 RawRecords and ChangeRecords with either shape."""
    frozen_change, frozen_raw = frozen_twin(ChangeRecord), frozen_twin(RawRecord)
    item = {"Data": "e30=", "PartitionKey": "k"}

    def build(change: type, raw: type) -> Callable[[], object]:
        def run() -> object:
            out = []
            for i in range(RECORDS):
                r = raw(sequence_number="4960", approximate_arrival=1.7e9, payload=item)
                out.append(
                    change(
                        source="kinesis",
                        stream="s",
                        shard_id="shardId-0",
                        sequence_number=r.sequence_number,
                        sub_sequence_number=0,
                        event_name="INSERT",
                        keys={"id": i},
                        new_image=item,
                        old_image=None,
                        approximate_creation_time=1.7e9,
                        partition_key="k",
                        size_bytes=2,
                        raw=item,
                    )
                )
            return out

        return run

    return {"frozen dataclasses": build(frozen_change, frozen_raw),
            "plain slotted (daemon)": build(ChangeRecord, RawRecord)}  # fmt: skip


class ResultsBefore:
    """`Results` as it was: a frozen RecordResult per record, made by `add` on every report."""

    def __init__(self) -> None:
        self._by_record: dict[int, RecordResult] = {}

    def add(
        self, record: ChangeRecord, outcome: Outcome, error: BaseException | None = None
    ) -> None:
        if (outcome is Outcome.FAILED) != (error is not None):
            raise ValueError("an error goes with the FAILED outcome and only with it")
        self._by_record[id(record)] = RecordResult(record, outcome, error)

    def applied(self, record: ChangeRecord) -> None:
        self.add(record, Outcome.APPLIED)

    def get(self, record: ChangeRecord) -> RecordResult | None:
        return self._by_record.get(id(record))


def tally_before(results: ResultsBefore, records: Sequence[ChangeRecord]) -> dict[int, Outcome]:
    """The pipeline's tally as it was: `get()` and `settled` per record."""
    settled: dict[int, Outcome] = {}
    new = dict.fromkeys(Outcome, 0)
    for record in records:
        if id(record) in settled:
            continue
        result = results.get(record)
        if result is not None and result.settled:
            settled[id(record)] = result.outcome
            new[result.outcome] += 1
    return settled


def result_sides(records: Sequence[ChangeRecord]) -> dict[str, Callable[[], object]]:
    """Report every record applied, then tally it, either way."""

    def before() -> object:
        results = ResultsBefore()
        for r in records:
            results.applied(r)
        return tally_before(results, records)

    def daemon() -> object:
        results = Results()
        for r in records:
            results.applied(r)
        Tally(lambda counts: None).settle(results, records)
        return results

    return {"a RecordResult per record": before, "Results tuples (daemon)": daemon}


def measure(sides: dict[str, Callable[[], object]], rounds: int, repeat: int) -> dict[str, float]:
    """Median over rounds of each side's best pass, in microseconds per record."""
    runs: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(rounds):
        for name, run in sides.items():
            best = min(timeit.repeat(run, number=1, repeat=repeat))
            runs[name].append(best / RECORDS * 1e6)
    return {name: statistics.median(values) for name, values in runs.items()}


def main(argv: Sequence[str] | None = None) -> int:
    """Print one table per comparison."""
    parser = argparse.ArgumentParser(prog="python -m bench records", description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    sample: Any = record_sides()["plain slotted (daemon)"]()
    for title, sides in (("records", record_sides()), ("results", result_sides(sample))):
        figures = measure(sides, args.rounds, args.repeat)
        before, after = figures.values()
        print(f"{title}: us per record, median of {args.rounds} rounds")
        for name, value in figures.items():
            print(f"  {name:28s} {value:6.2f}")
        print(f"  saved {before - after:.2f} us per record ({before / after:.1f}x)")
    return 0
