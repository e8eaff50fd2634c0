"""Per-key lanes inside a shard, in memory: order per key, concurrency, poison and outages per lane.

The checkpoint rule (docs/design.md, invariant 1) is the LanedPipeline's return: it returns only
when every lane has applied or dead-lettered its records.
"""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from collections import defaultdict
from collections.abc import Sequence

import pytest

from consumer.errors import DecodeError, TransientError
from consumer.observability.metrics import Metrics
from consumer.pipeline.apply import BatchAbandoned, FailurePolicy, Pipeline
from consumer.pipeline.lanes import (
    LanedPipeline,
    StallTracker,
    item_partition_key,
    kinesis_key,
    lane_of,
    split,
)
from consumer.pipeline.prefetch import FetchedBatch
from consumer.record import ChangeRecord, RawRecord
from projections.projection import BaseProjection
from projections.results import Outcome, Results
from tests.consumer.pipeline.test_apply import FAST, Sink
from tests.fixtures.servers import wait_until


def record(n: int, key: str, bad: bool = False) -> ChangeRecord:
    return ChangeRecord(
        source="kinesis",
        stream="s",
        shard_id="shardId-0",
        sequence_number=str(1000 + n),
        event_name="INSERT",
        keys={"partition_key": key},
        new_image={"n": n, "key": key, "bad": bad},
        old_image=None,
        approximate_creation_time=None,
        partition_key=key,
        raw={"n": n},
    )


def workload(count: int, seed: int = 7) -> list[ChangeRecord]:
    """Many keys with a few records each, and three hot keys with a third of all records."""
    rng = random.Random(seed)
    hot = ["hot-a", "hot-b", "hot-c"]
    return [
        record(n, rng.choice(hot) if rng.random() < 0.33 else f"key-{rng.randrange(200)}")
        for n in range(count)
    ]


class OrderRecording(BaseProjection):
    """Keeps, per key, the record numbers in the order it applied them; thread-safe.

    `together` makes the first applies wait (with a deadline) until that many are in flight at
    once, which only happens when lanes really run concurrently.
    """

    def __init__(self, together: int = 0, work_seconds: float = 0.0, fail_key: str = "") -> None:
        super().__init__("order")
        self.seen: dict[str, list[int]] = defaultdict(list)
        self.applied = 0
        self.active = 0
        self.most_active = 0
        self._together = together
        self._work = work_seconds
        self._fail_key = fail_key
        self.heal = threading.Event()
        self._changed = threading.Condition()

    def apply(self, records: Sequence[ChangeRecord]) -> Results:
        failing = self._fail_key and not self.heal.is_set()
        if failing and any(r.partition_key == self._fail_key for r in records):
            raise TransientError("this key's sink is down")
        if any((r.image or {}).get("bad") for r in records):
            raise ValueError("cannot project this")
        with self._changed:
            self.active += 1
            self.most_active = max(self.most_active, self.active)
            self._changed.notify_all()
            if self._together:
                self._changed.wait_for(lambda: self.active >= self._together, timeout=10)
                self._together = 0
        try:
            for r in records:
                if self._work:
                    time.sleep(self._work)  # stands for a write's latency, not for syncing
                with self._changed:
                    self.seen[key_of(r)].append(number(r))
                    self.applied += 1
        finally:
            with self._changed:
                self.active -= 1
        return Results.of(records, Outcome.APPLIED)


def key_of(r: ChangeRecord) -> str:
    """The ordering key: the Kinesis partition key, or the item's PK on DynamoDB Streams."""
    return str(r.partition_key if r.partition_key is not None else r.keys["PK"])


def number(r: ChangeRecord) -> int:
    return int((r.image or {})["n"])


def expected_order(records: Sequence[ChangeRecord]) -> dict[str, list[int]]:
    order: dict[str, list[int]] = defaultdict(list)
    for r in records:
        order[key_of(r)].append(number(r))
    return dict(order)


def laned(
    projection: OrderRecording,
    lanes: int,
    sink: Sink | None = None,
    abandon: threading.Event | None = None,
    stalled: list[str | None] | None = None,
    policy: FailurePolicy = FAST,
) -> LanedPipeline:
    tracker = StallTracker((stalled if stalled is not None else []).append)
    return LanedPipeline(
        [
            Pipeline(
                stream="s",
                shard_id="shardId-0",
                projections=[projection],
                metrics=Metrics(),
                dead_letters=sink,
                policy=policy,
                abandon=abandon or threading.Event(),
                on_stalled=tracker.for_lane(lane),
            )
            for lane in range(lanes)
        ],
        kinesis_key,
        "shardId-0",
    )


def test_split_keeps_shard_order_in_each_lane_and_each_key_in_one_lane() -> None:
    records = workload(500)
    raw = RawRecord("999", None, {"Data": "not json"})
    batch = FetchedBatch(records=records, undecodable=[(raw, DecodeError("bad"))])
    parts = split(batch, 4, kinesis_key)
    assert sum(len(part.records) for part in parts) == 500
    assert parts[0].undecodable == batch.undecodable
    assert all(not part.undecodable for part in parts[1:])
    lanes_of_key: dict[str, set[int]] = defaultdict(set)
    for index, part in enumerate(parts):
        numbers = [int(r.new_image["n"]) for r in part.records]  # type: ignore[index]
        assert numbers == sorted(numbers)  # shard order within the lane
        for r in part.records:
            lanes_of_key[str(r.partition_key)].add(index)
    assert all(len(lanes) == 1 for lanes in lanes_of_key.values())
    assert len({index for lanes in lanes_of_key.values() for index in lanes}) == 4
    assert lane_of("hot-a", 4) == lane_of("hot-a", 4)  # stable across calls and processes


def test_the_item_partition_key_orders_dynamodb_records_not_the_whole_primary_key() -> None:
    key_of = item_partition_key("aggregate_id")
    first = ChangeRecord(
        source="dynamodb",
        stream="s",
        shard_id="shardId-0",
        sequence_number="1",
        event_name="INSERT",
        keys={"aggregate_id": "cart-1", "version": 1},
        new_image=None,
        old_image=None,
        approximate_creation_time=None,
    )
    second = dataclasses.replace(first, keys={"aggregate_id": "cart-1", "version": 2})
    assert key_of(first) == key_of(second) == "cart-1"


def test_lanes_apply_at_the_same_time() -> None:
    projection = OrderRecording(together=4)
    records = workload(400)
    laned(projection, 4).process(FetchedBatch(records=records))
    assert projection.most_active == 4
    assert projection.seen == expected_order(records)


@pytest.mark.parametrize("lanes", [1, 2, 4, 10])
def test_order_per_key_holds_across_batches_with_many_keys_and_hot_keys(lanes: int) -> None:
    projection = OrderRecording(work_seconds=0.0002)
    records = workload(3000)
    pipeline = laned(projection, lanes)
    for start in range(0, len(records), 250):
        pipeline.process(FetchedBatch(records=records[start : start + 250]))
    assert projection.seen == expected_order(records)
    assert projection.applied == len(records)


def test_poison_is_bisected_and_dead_lettered_within_its_lane_only() -> None:
    records = workload(400)
    poison = records[123]
    records[123] = record(123, str(poison.partition_key), bad=True)
    projection = OrderRecording()
    sink = Sink()
    laned(projection, 4, sink).process(FetchedBatch(records=records))
    assert [letter.sequence_number for letter in sink.letters] == [poison.sequence_number]
    clean = [r for r in records if r is not records[123]]
    assert projection.seen == expected_order(clean)


def test_a_transient_failure_in_one_lane_stalls_the_batch_while_the_other_lanes_finish() -> None:
    records = workload(400)
    projection = OrderRecording(fail_key="hot-a")
    stalled: list[str | None] = []
    pipeline = laned(projection, 4, stalled=stalled)
    failing_lane = lane_of("hot-a", 4)
    others = [r for r in records if lane_of(str(r.partition_key), 4) != failing_lane]
    done = threading.Event()
    worker = threading.Thread(
        target=lambda: (pipeline.process(FetchedBatch(records=records)), done.set())
    )
    worker.start()
    try:
        wait_until(lambda: projection.applied == len(others), what="the healthy lanes")
        wait_until(
            lambda: any(reason and "sink is down" in reason for reason in stalled),
            what="the shard reported stalled, with the lane's reason",
        )
        assert not done.is_set()  # not checkpointable while one lane still waits
    finally:
        projection.heal.set()
        worker.join(30)
    assert done.is_set()
    assert stalled[-1] is None
    assert projection.seen == expected_order(records)


def test_a_stop_while_a_lane_waits_out_an_outage_abandons_the_batch() -> None:
    records = workload(200)
    projection = OrderRecording(fail_key="hot-b")
    abandon = threading.Event()
    pipeline = laned(projection, 4, abandon=abandon)
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            pipeline.process(FetchedBatch(records=records))
        except BatchAbandoned as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    healthy = [r for r in records if lane_of(str(r.partition_key), 4) != lane_of("hot-b", 4)]
    wait_until(lambda: projection.applied == len(healthy), what="the healthy lanes")
    abandon.set()
    worker.join(30)
    assert len(outcome) == 1  # BatchAbandoned: the shard loop will not checkpoint this batch
