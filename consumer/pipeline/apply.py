"""Apply one batch through every projection: wait out outages, isolate and dead-letter poison.

A batch is done when every projection has durably applied each record or the record has been
durably dead-lettered; only then may the shard loop checkpoint past it (docs/design.md, inv. 1, 5).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import structlog

from consumer.config import RetrySettings
from consumer.dead_letters.letter import DeadLetter, DeadLetterSink
from consumer.errors import DecodeError, StreamProjectorError
from consumer.observability.metrics import Metrics
from consumer.observability.redact import redact
from consumer.pipeline import record_age
from consumer.pipeline.classify import classify
from consumer.pipeline.prefetch import FetchedBatch
from consumer.pipeline.retry import Backoff, pause
from consumer.pipeline.tally import Tally
from consumer.record import ChangeRecord, RawRecord
from projections.projection import Projection, attempt

log = structlog.get_logger(__name__)

DECODE_STAGE = "(decode)"
NO_QUEUE = "poison record and no dead_letter.queue_url configured"
# The `projection` of a letter that no projection has applied yet (record_too_old): a redrive
# applies it through every projection.
ALL_PROJECTIONS = "*"


class BatchAbandoned(StreamProjectorError):
    """The shard was told to stop while the batch still waited on a retry: not checkpointed."""


@dataclass(frozen=True, slots=True)
class FailurePolicy:
    """How poison is told apart from bad luck: attempts on one record before it is dead-lettered."""

    max_attempts: int = 3
    backoff_base_seconds: float = 0.1
    backoff_cap_seconds: float = 30.0
    transient_error_codes: frozenset[str] = frozenset()
    max_record_age_seconds: float = 0.0

    @classmethod
    def from_settings(cls, retry: RetrySettings) -> FailurePolicy:
        """The policy of the `[retry]` table."""
        return cls(
            max_attempts=retry.max_attempts,
            backoff_base_seconds=retry.base_seconds,
            backoff_cap_seconds=retry.cap_seconds,
            transient_error_codes=frozenset(retry.transient_error_codes),
            max_record_age_seconds=retry.max_record_age_seconds,
        )


@dataclass(slots=True)
class _Failure:
    error: BaseException
    attempts: int
    first: float
    last: float


class Pipeline:
    """Runs a shard's batches through its projections, one batch at a time, in order."""

    def __init__(
        self,
        *,
        stream: str,
        shard_id: str,
        projections: Sequence[Projection],
        metrics: Metrics,
        dead_letters: DeadLetterSink | None,
        policy: FailurePolicy,
        abandon: threading.Event,
        on_stalled: Callable[[str | None], None] = lambda reason: None,
    ) -> None:
        self._stream = stream
        self._shard_id = shard_id
        self._projections = list(projections)
        self._metrics = metrics
        self._dead_letters = dead_letters
        self._policy = policy
        self._abandon = abandon
        self._on_stalled = on_stalled

    def process(self, batch: FetchedBatch) -> None:
        """Apply the batch everywhere, or raise BatchAbandoned; never skip a record silently."""
        if batch.undecodable:
            self._dead_letter_undecodable(batch.undecodable)
        records = batch.records
        if self._policy.max_record_age_seconds > 0:
            records, too_old = record_age.split_by_age(
                records, self._policy.max_record_age_seconds, time.time()
            )
            if too_old:
                self._dead_letter_too_old(too_old)
        for projection in self._projections:
            tally = Tally(partial(self._metrics.record_outcomes, projection.name))
            self._apply_isolating(projection, records, tally, leaf_attempts=True)
        self._on_stalled(None)

    # -- projections ------------------------------------------------------------------------

    def _apply_isolating(
        self,
        projection: Projection,
        records: Sequence[ChangeRecord],
        tally: Tally,
        *,
        leaf_attempts: bool,
    ) -> None:
        """Apply; on a deterministic failure bisect until the poison record stands alone.

        The whole batch gets `max_attempts` tries first (a fluke passes on retry); the halves of
        a bisection get one try each, since the failure is already shown to be deterministic;
        a single record gets `max_attempts` again before it is dead-lettered.
        """
        failed = self._retry(projection, records, tally, leaf_attempts=leaf_attempts)
        if failed is None:
            return
        pending, failure = failed
        if len(pending) > 1:
            middle = len(pending) // 2
            log.info("bisecting a failing batch", projection=projection.name, size=len(pending))
            self._apply_isolating(projection, pending[:middle], tally, leaf_attempts=False)
            self._apply_isolating(projection, pending[middle:], tally, leaf_attempts=False)
            return
        self._dead_letter_record(projection.name, pending[0], failure)
        tally.dead_lettered(pending[0])

    def _retry(
        self,
        projection: Projection,
        records: Sequence[ChangeRecord],
        tally: Tally,
        *,
        leaf_attempts: bool,
    ) -> tuple[Sequence[ChangeRecord], _Failure] | None:
        """Attempt until every record is settled (None), or poison used up its attempts.

        Each try starts at the first record not yet settled, and poison attempts count against
        that record: when it goes through, the next one starts afresh. Transient failures are
        waited out and never count. Returns the records still unsettled and the last failure.
        """
        pending = tally.unsettled_from(records)
        backoff = self._backoff()
        failure: _Failure | None = None
        while pending:
            results = attempt(projection, pending)
            tally.settle(results, pending)
            remaining = tally.unsettled_from(pending)
            if remaining and remaining[0] is not pending[0]:
                failure = None
                backoff.reset()
            pending = remaining
            errors = results.errors_for(pending, projection.name)
            if not errors:
                continue
            transient = [e for e in errors if self._classify(e) == "transient"]
            if transient:
                self._metrics.record_retry("transient")
                self._wait(backoff, projection.name, transient[0], stalled=True)
                continue
            now = time.time()
            failure = (
                _Failure(errors[0], 1, now, now)
                if failure is None
                else _Failure(errors[0], failure.attempts + 1, failure.first, now)
            )
            self._metrics.record_retry("poison")
            allowed = self._policy.max_attempts if (leaf_attempts or len(pending) == 1) else 1
            if failure.attempts >= allowed:
                return pending, failure
            self._wait(backoff, projection.name, errors[0], stalled=False)
        return None

    def _classify(self, error: BaseException) -> str:
        return classify(error, self._policy.transient_error_codes)

    def _dead_letter_record(self, projection: str, record: ChangeRecord, failure: _Failure) -> None:
        letter = _letter(
            record,
            projection,
            "projection_error",
            failure.error,
            failure.attempts,
            failure.first,
            failure.last,
        )
        self._send([letter])
        self._metrics.record_dead_letter(projection, letter.reason)

    def _dead_letter_too_old(self, records: list[ChangeRecord]) -> None:
        now = time.time()
        error = record_age.RecordTooOldError(
            f"older than retry.max_record_age_seconds={self._policy.max_record_age_seconds}"
        )
        letters = [
            _letter(record, ALL_PROJECTIONS, record_age.REASON, error, 0, now, now)
            for record in records
        ]
        self._send(letters)
        for letter in letters:
            self._metrics.record_dead_letter(ALL_PROJECTIONS, letter.reason)

    def _dead_letter_undecodable(self, failures: list[tuple[RawRecord, DecodeError]]) -> None:
        now = time.time()
        letters = [
            DeadLetter(
                source=source_of(self._stream),
                stream=self._stream,
                shard_id=self._shard_id,
                sequence_number=raw.sequence_number,
                sub_sequence_number=0,
                event_id="",
                approximate_creation_time=raw.approximate_arrival,
                projection=DECODE_STAGE,
                reason="decode_error",
                error_type=type(error).__name__,
                error_message=redact(str(error))[:2000],
                attempts=1,
                first_failure_time=now,
                last_failure_time=now,
                record=raw.payload,
            )
            for raw, error in failures
        ]
        self._send(letters)
        for letter in letters:
            self._metrics.record_dead_letter(DECODE_STAGE, letter.reason)

    # -- delivery and waiting ---------------------------------------------------------------

    def _send(self, letters: list[DeadLetter]) -> None:
        """Deliver dead letters; until that succeeds the shard stalls (it never skips)."""
        backoff = self._backoff()
        while True:
            if self._dead_letters is None:
                # Without a dead-letter queue, skipping would lose data: stall visibly instead.
                log.error(
                    f"{NO_QUEUE}: the shard stalls",
                    sequence_number=letters[0].sequence_number,
                    projection=letters[0].projection,
                    error_type=letters[0].error_type,
                    error=letters[0].error_message,
                )
                self._wait(backoff, letters[0].projection, None, stalled=True)
                continue
            try:
                self._dead_letters.send(letters)
            except Exception as exc:  # any delivery failure is an outage of the dead-letter sink
                self._metrics.record_retry("transient")
                self._wait(backoff, "(dead-letter)", exc, stalled=True)
                continue
            for letter in letters:
                log.warning(
                    "record dead-lettered",
                    sequence_number=letter.sequence_number,
                    projection=letter.projection,
                    reason=letter.reason,
                    error_type=letter.error_type,
                    attempts=letter.attempts,
                )
            return

    def _wait(
        self, backoff: Backoff, projection: str, exc: BaseException | None, *, stalled: bool
    ) -> None:
        delay = backoff.next_delay()
        if stalled:
            # What the shard waits for, as /readyz shows it.
            cause = f"{type(exc).__name__}: {exc}" if exc is not None else NO_QUEUE
            self._on_stalled(f"{projection}: {cause}"[:500])
        if exc is not None:
            log.warning(
                "batch failed; retrying",
                projection=projection,
                kind="transient" if stalled else "poison",
                error_type=type(exc).__name__,
                error=str(exc)[:500],
                attempt=backoff.attempt,
                delay_seconds=round(delay, 3),
            )
        if pause(self._abandon, delay):
            raise BatchAbandoned(f"shard {self._shard_id}: stopped while retrying")

    def _backoff(self) -> Backoff:
        return Backoff(self._policy.backoff_base_seconds, self._policy.backoff_cap_seconds)


def source_of(stream: str) -> str:
    """ "dynamodb" for a DynamoDB stream ARN, "kinesis" for anything else (a name or an ARN)."""
    return "dynamodb" if ":dynamodb:" in stream else "kinesis"


def _letter(
    record: ChangeRecord,
    projection: str,
    reason: str,
    error: BaseException,
    attempts: int,
    first: float,
    last: float,
) -> DeadLetter:
    return DeadLetter(
        source=record.source,
        stream=record.stream,
        shard_id=record.shard_id,
        sequence_number=record.sequence_number,
        sub_sequence_number=record.sub_sequence_number,
        event_id=record.event_id,
        approximate_creation_time=record.approximate_creation_time,
        projection=projection,
        reason=reason,
        error_type=type(error).__name__,
        error_message=redact(str(error))[:2000],
        attempts=attempts,
        first_failure_time=first,
        last_failure_time=last,
        record=record.raw,
    )
