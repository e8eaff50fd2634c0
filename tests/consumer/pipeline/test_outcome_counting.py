"""Each record is counted once per projection, with the outcome it really had, however many
retries and bisections it took: applied, stale, filtered or dead-lettered (issue 11).

The projection here keeps its read model in memory and reports record by record, like a sink
that writes keys independently; the last test runs the real trip search on moto's DynamoDB.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import boto3
from botocore.config import Config

from consumer.dead_letters.letter import DeadLetter
from consumer.errors import PoisonError, ThrottledError
from consumer.observability.metrics import Metrics
from consumer.pipeline.apply import FailurePolicy, Pipeline
from consumer.pipeline.prefetch import FetchedBatch
from consumer.record import ChangeRecord, position_of
from projections.projection import BaseProjection
from projections.results import Results
from projections.scenarios.trip_search import TripSearchProjection
from tests.consumer.pipeline.test_apply import record
from tests.fixtures.aws import REGION
from tests.projections.scenarios.test_trip_search import Stream, successful_saga
from tests.support.canned import inject_error

FAST = FailurePolicy(max_attempts=3, backoff_base_seconds=0.001, backoff_cap_seconds=0.01)


class Guarded(BaseProjection):
    """One entry per key n, guarded by position; reports each record on its own.

    `transient[n]` is how many attempts fail record n with throttling before it goes through;
    records in `poison` always fail, those in `skip` are not for it. A failure does not stop
    the other records (other keys).
    """

    def __init__(
        self,
        name: str = "guarded",
        transient: dict[int, int] | None = None,
        poison: frozenset[int] = frozenset(),
        raises: bool = False,
        skip: frozenset[int] = frozenset(),
    ) -> None:
        super().__init__(name)
        self.stored: dict[int, str] = {}
        self.sent: list[list[int]] = []
        self.transient = dict(transient or {})
        self.poison = poison
        self.raises = raises
        self.skip = skip

    def apply(self, records: Sequence[ChangeRecord]) -> Results:
        numbers = [number(r) for r in records]
        self.sent.append(numbers)
        if self.raises and self.poison & set(numbers):
            # All or nothing, like a transaction: nothing took effect.
            raise PoisonError(f"cannot project {sorted(self.poison & set(numbers))}")
        results = Results()
        for change in records:
            n = number(change)
            if n in self.skip:
                results.filtered(change)
            elif n in self.poison:
                results.failed(change, PoisonError(f"cannot project {n}"))
            elif self.transient.get(n, 0) > 0:
                self.transient[n] -= 1
                results.failed(change, ThrottledError(f"throttled writing {n}"))
            elif self.stored.get(n, "") >= change.position:
                results.stale(change)
            else:
                self.stored[n] = change.position
                results.applied(change)
        return results


class Letters:
    def __init__(self) -> None:
        self.letters: list[DeadLetter] = []

    def send(self, letters: Sequence[DeadLetter]) -> None:
        self.letters.extend(letters)


def number(r: ChangeRecord) -> int:
    return int(r.keys["n"])


def run(*projections: Any, batch: list[ChangeRecord]) -> tuple[Metrics, Letters]:
    metrics, letters = Metrics(), Letters()
    Pipeline(
        stream="s",
        shard_id="shardId-0",
        projections=list(projections),
        metrics=metrics,
        dead_letters=letters,
        policy=FAST,
        abandon=threading.Event(),
    ).process(FetchedBatch(batch))
    return metrics, letters


def counted(metrics: Metrics, projection: str = "guarded") -> dict[str, float]:
    """The records_total samples of one projection, by outcome (zeros left out)."""
    found: dict[str, float] = {}
    for outcome in ("applied", "stale_skipped", "filtered", "dead_lettered"):
        value = metrics.registry.get_sample_value(
            "stream_projector_records_total", {"projection": projection, "outcome": outcome}
        )
        if value:
            found[outcome] = value
    return found


def test_records_written_before_a_failure_count_as_applied_once_not_stale() -> None:
    # Records 0-3 are written by the first attempt, which fails on record 4 (throttled).
    projection = Guarded(transient={4: 1})
    metrics, letters = run(projection, batch=[record(n) for n in range(8)])
    assert counted(metrics) == {"applied": 8}
    # The retry starts at the first record not settled: 0-3 are not sent again.
    assert projection.sent == [list(range(8)), list(range(4, 8))]
    assert letters.letters == []


def test_stale_records_count_as_stale_once_across_retries() -> None:
    projection = Guarded(transient={2: 2})
    projection.stored = {0: position_of("9999"), 3: position_of("9999")}  # newer state exists
    metrics, _ = run(projection, batch=[record(n) for n in range(4)])
    assert counted(metrics) == {"applied": 2, "stale_skipped": 2}
    assert len(projection.sent) == 3


def test_filtered_records_count_as_filtered_once_across_retries() -> None:
    projection = Guarded(transient={3: 1}, skip=frozenset({0, 2, 4}))
    metrics, _ = run(projection, batch=[record(n) for n in range(5)])
    assert counted(metrics) == {"applied": 2, "filtered": 3}


def test_after_bisection_the_poison_is_dead_lettered_and_every_other_record_counted_once() -> None:
    projection = Guarded(poison=frozenset({5}), transient={1: 1})
    metrics, letters = run(projection, batch=[record(n) for n in range(10)])
    assert counted(metrics) == {"applied": 9, "dead_lettered": 1}
    assert [letter.record for letter in letters.letters] == [{"n": 5}]
    # Nothing settled is sent again: every later attempt starts at record 5.
    assert all(sent[0] == 5 for sent in projection.sent[2:])


def test_a_transactional_projection_bisected_counts_each_good_record_applied_once() -> None:
    # Raising means nothing of the batch took effect; bisection re-sends the good halves.
    projection = Guarded(poison=frozenset({2, 6}), raises=True)
    metrics, letters = run(projection, batch=[record(n) for n in range(8)])
    assert counted(metrics) == {"applied": 6, "dead_lettered": 2}
    assert sorted(letter.record["n"] for letter in letters.letters) == [2, 6]


def test_a_record_left_out_of_the_results_is_dead_lettered_naming_the_projection() -> None:
    class ForgetsOdd(Guarded):
        def apply(self, records: Sequence[ChangeRecord]) -> Results:
            results = super().apply(records)
            return Results(r for r in results if number(r.record) != 3)

    metrics, letters = run(ForgetsOdd(), batch=[record(n) for n in range(5)])
    assert counted(metrics) == {"applied": 4, "dead_lettered": 1}
    (letter,) = letters.letters
    assert letter.record == {"n": 3}
    assert letter.error_message == "projection guarded reported no outcome for record 1003"


def test_a_transient_failure_beside_a_poison_one_is_waited_out_not_bisected() -> None:
    # Throttled on record 1 for 5 attempts, more than max_attempts: poison on record 4 must
    # not count an attempt while record 1 waits, and is dead-lettered only once 1 is through.
    projection = Guarded(poison=frozenset({4}), transient={1: 5})
    metrics, letters = run(projection, batch=[record(n) for n in range(6)])
    assert counted(metrics) == {"applied": 5, "dead_lettered": 1}
    assert [letter.record for letter in letters.letters] == [{"n": 4}]
    assert letters.letters[0].attempts == FAST.max_attempts


def test_each_projection_counts_its_own_outcomes() -> None:
    first, second = Guarded("first", transient={0: 1}), Guarded("second")
    second.stored = {1: position_of("9999")}
    metrics, _ = run(first, second, batch=[record(n) for n in range(3)])
    assert counted(metrics, "first") == {"applied": 3}
    assert counted(metrics, "second") == {"applied": 2, "stale_skipped": 1}


def test_trip_search_after_a_failed_first_attempt_counts_every_record_applied_once(
    moto_endpoint: str, unique_name: Callable[[str], str]
) -> None:
    # Issue 11's report, on the real projection and moto's DynamoDB: the first key's write
    # answers a 500 once; the other keys were written by that first attempt, so the retry
    # (which starts at trip-0) finds them stale, yet they must count applied, once.
    client = boto3.client(
        "dynamodb",
        region_name=REGION,
        endpoint_url=moto_endpoint,
        config=Config(retries={"max_attempts": 0, "mode": "standard"}),  # no botocore retry
    )
    table = unique_name("TripSearchTable")
    projection = TripSearchProjection(client, table=table, name="trip_search", max_workers=1)
    projection.migrate()
    try:
        stream = Stream()
        batch = [r for n in range(4) for r in successful_saga(stream, f"trip-{n}")]
        inject_error(client, "UpdateItem", "InternalServerError", 500)
        metrics, letters = run(projection, batch=batch)
        assert counted(metrics, "trip_search") == {"applied": len(batch)}
        assert letters.letters == []
        retries = metrics.registry.get_sample_value(
            "stream_projector_retries_total", {"kind": "transient"}
        )
        assert retries == 1
    finally:
        projection.close()
        client.delete_table(TableName=table)
