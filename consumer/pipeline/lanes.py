"""Per-key parallelism inside a shard: a batch split into lanes by key, applied concurrently.

Like Lambda's ParallelizationFactor (`[polling] parallelization_factor`, up to 10): the records
of one ordering key (the Kinesis partition key, or the DynamoDB item's partition key) always go
to the same lane and keep their shard order there, while different keys are applied at the same
time. Each lane is a whole Pipeline: retries, bisection and dead letters work within the lane,
so a poison record is isolated among its lane's records only and never holds the other lanes.

The checkpoint rule stays (docs/design.md, invariant 1): the batch is done, and the shard loop
may checkpoint past it, only when every lane has applied (or dead-lettered) its records. A lane
that waits out an outage holds the checkpoint and the next batch back, and the shard shows as
stalled, while the other lanes' records are already applied; a crash then re-applies them,
which the per-key guards make harmless (invariant 4).
"""

from __future__ import annotations

import contextvars
import threading
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from consumer.pipeline.apply import BatchAbandoned
from consumer.pipeline.prefetch import FetchedBatch
from consumer.pipeline.shard_consumer import BatchProcessor
from consumer.record import ChangeRecord

MAX_LANES = 10

# The ordering key of a record: records with equal keys are applied in shard order.
KeyOf = Callable[[ChangeRecord], str]


def kinesis_key(record: ChangeRecord) -> str:
    """Kinesis orders records per partition key, and so do the lanes."""
    return record.partition_key or ""


def item_partition_key(attribute: str) -> KeyOf:
    """DynamoDB Streams: the value of the table's partition key attribute (one item collection).

    The partition key, not the whole primary key: an event store keys events by aggregate id and
    version, and all the versions of one aggregate must stay in order.
    """

    def key_of(record: ChangeRecord) -> str:
        return _text(record.keys.get(attribute, record.keys))

    return key_of


def _text(value: Any) -> str:
    if isinstance(value, Mapping):
        return repr(sorted(value.items()))
    return value.hex() if isinstance(value, bytes) else str(value)


def lane_of(key: str, lanes: int) -> int:
    """A stable lane for a key (crc32, so the same in every process and run)."""
    return zlib.crc32(key.encode()) % lanes


def split(batch: FetchedBatch, lanes: int, key_of: KeyOf) -> list[FetchedBatch]:
    """The batch as `lanes` batches; each keeps the shard order of its records.

    Records that failed to decode have no key; they go to the first lane, which dead-letters
    them like a single pipeline would.
    """
    parts = [FetchedBatch(records=[]) for _ in range(lanes)]
    parts[0].undecodable = list(batch.undecodable)
    for record in batch.records:
        parts[lane_of(key_of(record), lanes)].records.append(record)
    return parts


class StallTracker:
    """The shard is stalled while any lane is; `report` gets a reason, or None when none is."""

    def __init__(self, report: Callable[[str | None], None]) -> None:
        self._report = report
        self._reasons: dict[int, str] = {}
        self._lock = threading.Lock()

    def for_lane(self, lane: int) -> Callable[[str | None], None]:
        """The `on_stalled` callback of one lane's Pipeline."""

        def on_stalled(reason: str | None) -> None:
            with self._lock:
                if reason:
                    self._reasons[lane] = reason
                else:
                    self._reasons.pop(lane, None)
                first = min(self._reasons, default=None)
                shown = None if first is None else f"lane {first}: {self._reasons[first]}"
            self._report(shown)

        return on_stalled


class LanedPipeline:
    """Runs each batch through its lanes at once, split by key; done when every lane is."""

    def __init__(self, lanes: Sequence[BatchProcessor], key_of: KeyOf, shard_id: str) -> None:
        if not 1 <= len(lanes) <= MAX_LANES:
            raise ValueError(f"between 1 and {MAX_LANES} lanes (got {len(lanes)})")
        self._lanes = list(lanes)
        self._key_of = key_of
        self._shard_id = shard_id

    def process(self, batch: FetchedBatch) -> None:
        """Apply every lane's part concurrently; raise BatchAbandoned if any lane was stopped."""
        parts = split(batch, len(self._lanes), self._key_of)
        work = [
            (lane, part)
            for lane, part in zip(self._lanes, parts, strict=True)
            if part.records or part.undecodable
        ]
        errors: list[BaseException] = []
        threads = []
        for index, (lane, part) in enumerate(work[1:], start=1):
            thread = threading.Thread(
                # Each thread runs in a copy of this context: logs keep stream and shard.
                target=contextvars.copy_context().run,
                args=(self._run_lane, lane, part, errors),
                name=f"lane-{self._shard_id}-{index}",
                daemon=True,
            )
            thread.start()
            threads.append(thread)
        if work:
            self._run_lane(work[0][0], work[0][1], errors)
        for thread in threads:
            thread.join()
        # Every lane has stopped: nothing of this batch is still being applied.
        for error in errors:
            if not isinstance(error, BatchAbandoned):
                raise error
        if errors:
            raise BatchAbandoned(f"shard {self._shard_id}: stopped while a lane was retrying")

    @staticmethod
    def _run_lane(lane: BatchProcessor, part: FetchedBatch, errors: list[BaseException]) -> None:
        try:
            lane.process(part)
        except Exception as exc:  # re-raised by process() once every lane has stopped
            errors.append(exc)
