"""The pipeline's failure handling, in memory: transient waits, poison is bisected and
dead-lettered, an undelivered dead letter holds the batch (docs/design.md, invariants 1 and 5)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from botocore.exceptions import ClientError

from consumer.dead_letters.letter import DeadLetter
from consumer.errors import DecodeError, TransientError
from consumer.observability.metrics import Metrics
from consumer.pipeline.apply import ALL_PROJECTIONS, BatchAbandoned, FailurePolicy, Pipeline
from consumer.pipeline.classify import classify
from consumer.pipeline.prefetch import FetchedBatch
from consumer.record import ChangeRecord, RawRecord
from projections.projection import BaseProjection
from projections.results import Outcome, Results
from tests.fixtures.servers import wait_until

FAST = FailurePolicy(max_attempts=3, backoff_base_seconds=0.001, backoff_cap_seconds=0.01)


def record(n: int, bad: bool = False, created: float | None = None) -> ChangeRecord:
    return ChangeRecord(
        source="kinesis",
        stream="s",
        shard_id="shardId-0",
        sequence_number=str(1000 + n),
        event_name="INSERT",
        keys={"n": n},
        new_image={"n": n, "bad": bad},
        old_image=None,
        approximate_creation_time=created,
        raw={"n": n},
    )


class Transactional(BaseProjection):
    """All or nothing per batch, like a PostgreSQL projection; raises on a bad record."""

    name = "tx"

    def __init__(self, transient_failures: int = 0) -> None:
        self.applied: list[int] = []
        self.calls = 0
        self.transient_failures = transient_failures

    def apply(self, records: Sequence[ChangeRecord]) -> Results:
        self.calls += 1
        if self.calls <= self.transient_failures:
            raise TransientError("database is down")
        if any(r.new_image and r.new_image["bad"] for r in records):
            raise ValueError("cannot project this")
        self.applied.extend(r.new_image["n"] for r in records if r.new_image)
        return Results.of(records, Outcome.APPLIED)


class Sink:
    """Collects letters; fails while `down` is set."""

    def __init__(self) -> None:
        self.letters: list[DeadLetter] = []
        self.down = threading.Event()
        self.calls = 0

    def send(self, letters: Sequence[DeadLetter]) -> None:
        self.calls += 1
        if self.down.is_set():
            raise ConnectionError("sqs unreachable")
        self.letters.extend(letters)


def pipeline(
    projection: Transactional,
    sink: Sink | None,
    policy: FailurePolicy = FAST,
    abandon: threading.Event | None = None,
    stalled: list[str | None] | None = None,
) -> Pipeline:
    return Pipeline(
        stream="s",
        shard_id="shardId-0",
        projections=[projection],
        metrics=Metrics(),
        dead_letters=sink,
        policy=policy,
        abandon=abandon or threading.Event(),
        on_stalled=(stalled.append if stalled is not None else lambda reason: None),
    )


def test_a_transient_failure_is_retried_past_max_attempts_and_never_dead_lettered() -> None:
    projection, sink = Transactional(transient_failures=10), Sink()
    stalled: list[str | None] = []
    pipeline(projection, sink, stalled=stalled).process(FetchedBatch([record(n) for n in range(5)]))
    assert projection.applied == list(range(5))
    assert sink.letters == []
    assert projection.calls == 11
    # While it waits, the shard says what for (readiness shows it); then it runs again.
    assert stalled[0] is not None and stalled[0].startswith(f"{projection.name}: ")
    assert stalled[-1] is None


def test_poison_is_bisected_down_to_exactly_the_bad_records() -> None:
    bad = {3, 40, 41, 63}
    projection, sink = Transactional(), Sink()
    batch = FetchedBatch([record(n, bad=n in bad) for n in range(64)])
    pipeline(projection, sink).process(batch)
    assert sorted(projection.applied) == sorted(set(range(64)) - bad)
    assert [letter.record["n"] for letter in sink.letters] == sorted(bad)
    for letter in sink.letters:
        assert letter.reason == "projection_error"
        assert letter.projection == "tx"
        assert letter.error_type == "ValueError"
        assert letter.attempts == FAST.max_attempts
        assert letter.first_failure_time <= letter.last_failure_time


def test_an_undelivered_dead_letter_holds_the_batch_until_the_sink_is_back() -> None:
    projection, sink = Transactional(), Sink()
    sink.down.set()
    done = threading.Event()
    batch = FetchedBatch([record(0), record(1, bad=True), record(2)])
    thread = threading.Thread(
        target=lambda: (pipeline(projection, sink).process(batch), done.set()), daemon=True
    )
    thread.start()
    wait_until(lambda: sink.calls >= 5, timeout=10, what="several failed sends")
    assert not done.is_set()  # process() has not returned, so nothing can be checkpointed
    sink.down.clear()
    wait_until(done.is_set, timeout=10, what="batch done once the sink is back")
    thread.join()
    assert [letter.record["n"] for letter in sink.letters] == [1]


def test_a_stop_while_the_sink_is_down_abandons_the_batch_unacknowledged() -> None:
    projection, sink, abandon = Transactional(), Sink(), threading.Event()
    sink.down.set()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            pipeline(projection, sink, abandon=abandon).process(FetchedBatch([record(1, True)]))
        except BatchAbandoned as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    wait_until(lambda: sink.calls >= 2, timeout=10, what="failed sends")
    abandon.set()
    thread.join(10)
    assert len(errors) == 1 and sink.letters == []


def test_without_a_dead_letter_sink_a_poison_record_stalls_and_is_never_skipped() -> None:
    projection, abandon = Transactional(), threading.Event()
    stalled: list[str | None] = []
    errors: list[BaseException] = []
    stuck = pipeline(projection, None, abandon=abandon, stalled=stalled)

    def run() -> None:
        try:
            stuck.process(FetchedBatch([record(0), record(1, bad=True)]))
        except BatchAbandoned as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    wait_until(lambda: len(stalled) >= 3, timeout=10, what="stalled")
    abandon.set()
    thread.join(10)
    assert len(errors) == 1
    assert projection.applied == [0]
    assert None not in stalled
    assert "no dead_letter.queue_url" in str(stalled[0])


def test_undecodable_records_are_dead_lettered_with_reason_decode_error() -> None:
    projection, sink = Transactional(), Sink()
    raw = RawRecord("999", None, {"Data": "!!"})
    batch = FetchedBatch([record(0)], undecodable=[(raw, DecodeError("not base64"))])
    pipeline(projection, sink).process(batch)
    (letter,) = sink.letters
    assert (letter.reason, letter.projection, letter.source) == (
        "decode_error",
        "(decode)",
        "kinesis",
    )
    assert letter.record == {"Data": "!!"} and letter.error_message == "not base64"
    assert projection.applied == [0]


def test_records_older_than_the_maximum_age_are_dead_lettered_not_applied() -> None:
    now = time.time()
    batch = FetchedBatch([record(0, created=now - 3600), record(1, created=now), record(2)])
    projection, sink = Transactional(), Sink()
    aged = FailurePolicy(backoff_base_seconds=0.001, max_record_age_seconds=60)
    pipeline(projection, sink, policy=aged).process(batch)
    assert projection.applied == [1, 2]
    (letter,) = sink.letters
    assert (letter.reason, letter.projection, letter.record) == (
        "record_too_old",
        ALL_PROJECTIONS,
        {"n": 0},
    )
    off, sink_off = Transactional(), Sink()
    pipeline(off, sink_off).process(batch)  # the default: no maximum age
    assert off.applied == [0, 1, 2] and sink_off.letters == []


def test_classification_defaults_and_extra_transient_codes() -> None:
    def client_error(code: str, status: int) -> ClientError:
        meta = {"HTTPStatusCode": status}
        return ClientError({"Error": {"Code": code}, "ResponseMetadata": meta}, "Op")

    assert classify(client_error("ProvisionedThroughputExceededException", 400)) == "transient"
    assert classify(client_error("ThrottlingException", 400)) == "transient"
    assert classify(client_error("Whatever", 503)) == "transient"
    assert classify(client_error("ValidationException", 400)) == "poison"
    assert classify(client_error("TableBusy", 400)) == "poison"
    assert classify(client_error("TableBusy", 400), {"TableBusy"}) == "transient"
    assert classify(DecodeError("x")) == "poison"
    assert classify(ConnectionRefusedError()) == "transient"
    assert classify(KeyError("x")) == "poison"


class LeakyProjection:
    """Fails with a driver message that quotes a connection string, password and all."""

    name = "leaky"

    def apply(self, records: Sequence[ChangeRecord]) -> Results:
        raise ValueError('invalid URI: "postgresql://app:Pa55-w0rd@[fd00::1/db"')


def test_a_dead_letter_never_carries_a_secret_of_the_error() -> None:
    sink = Sink()
    Pipeline(
        stream="s",
        shard_id="shardId-0",
        projections=[LeakyProjection()],
        metrics=Metrics(),
        dead_letters=sink,
        policy=FAST,
        abandon=threading.Event(),
    ).process(FetchedBatch([record(0)]))
    (letter,) = sink.letters
    assert "Pa55-w0rd" not in letter.error_message
    assert "postgresql://app:***@" in letter.error_message
