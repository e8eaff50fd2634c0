"""Inspect and redrive the dead-letter queue: look without taking, re-apply, then delete.

A redrive re-decodes each envelope's record with the source's decoder and applies it through
the current projections it names; their guards (docs/design.md, invariant 4) make a stale change a
no-op, so redriving an old letter can never overwrite newer state. A message is deleted only
after every target projection applied it; anything else leaves it in the queue.
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from consumer.aws import Pacer
from consumer.errors import StreamProjectorError
from consumer.pipeline.apply import ALL_PROJECTIONS, DECODE_STAGE
from consumer.record import ChangeRecord, RawRecord
from consumer.sources.decode import Decoder, DynamoDBStreamsDecoder, KinesisDecoder
from projections.projection import Projection

RECEIVE_BATCH = 10
INSPECT_VISIBILITY_SECONDS = 30
REDRIVE_VISIBILITY_SECONDS = 300
# Passes over the queue while the previous one applied something: a letter that waited on an
# earlier one (a version gap) succeeds on the next pass.
MAX_PASSES = 5
# Formats of `[source] format` as the Kinesis decoder names them.


class RedriveError(StreamProjectorError):
    """A letter cannot be redriven as it stands (unknown projection, record not found)."""


@dataclass(slots=True)
class Letter:
    """One received message: its envelope (loaded from S3 when the body is a pointer)."""

    message_id: str
    receipt_handle: str
    envelope: dict[str, Any]
    pointer: dict[str, str] | None = None

    @property
    def projection(self) -> str:
        """The projection that failed, DECODE_STAGE, or ALL_PROJECTIONS."""
        return str(self.envelope.get("projection", ""))

    @property
    def reason(self) -> str:
        """Why it was dead-lettered: decode_error, projection_error, record_too_old."""
        return str(self.envelope.get("reason", ""))


class DeadLetterQueue:
    """The queue and its bucket, as inspect and redrive use them."""

    def __init__(self, sqs: Any, queue_url: str, s3: Any = None) -> None:
        self._sqs = sqs
        self._s3 = s3
        self.queue_url = queue_url

    def approximate_count(self) -> int:
        """Messages visible now, as SQS estimates them."""
        attrs = self._sqs.get_queue_attributes(
            QueueUrl=self.queue_url, AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]
        return int(attrs.get("ApproximateNumberOfMessages", 0))

    def receive(self, visibility_seconds: int, wait_seconds: int = 1) -> list[Letter]:
        """Up to 10 messages, hidden from others for `visibility_seconds`."""
        response = self._sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=RECEIVE_BATCH,
            VisibilityTimeout=visibility_seconds,
            WaitTimeSeconds=wait_seconds,
            MessageAttributeNames=["All"],
        )
        return [self._letter(m) for m in response.get("Messages", [])]

    def _letter(self, message: Mapping[str, Any]) -> Letter:
        body = orjson.loads(message["Body"])
        pointer = body.get("s3")
        if pointer is not None:
            stored = self._s3.get_object(Bucket=pointer["bucket"], Key=pointer["key"])
            body = orjson.loads(stored["Body"].read())
        return Letter(message["MessageId"], message["ReceiptHandle"], body, pointer)

    def release(self, letters: Sequence[Letter]) -> None:
        """Make messages visible again at once (inspect, and letters a redrive left)."""
        for start in range(0, len(letters), RECEIVE_BATCH):
            chunk = letters[start : start + RECEIVE_BATCH]
            self._sqs.change_message_visibility_batch(
                QueueUrl=self.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": letter.receipt_handle, "VisibilityTimeout": 0}
                    for i, letter in enumerate(chunk)
                ],
            )

    def delete(self, letter: Letter) -> None:
        """Delete the message, then its stored envelope (an orphaned object is harmless)."""
        self._sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=letter.receipt_handle)
        if letter.pointer is not None and self._s3 is not None:
            self._s3.delete_object(Bucket=letter.pointer["bucket"], Key=letter.pointer["key"])


# -- inspect ---------------------------------------------------------------------------------


@dataclass(slots=True)
class InspectReport:
    """What the queue holds, by reason and projection, with a few whole envelopes."""

    seen: int = 0
    approximate_total: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)
    by_projection: Counter[str] = field(default_factory=Counter)
    samples: list[dict[str, Any]] = field(default_factory=list)


def inspect(queue: DeadLetterQueue, max_messages: int = 100, samples: int = 3) -> InspectReport:
    """Look at up to `max_messages` without deleting any; every one is made visible again."""
    report = InspectReport(approximate_total=queue.approximate_count())
    held: list[Letter] = []
    seen_ids: set[str] = set()
    try:
        while report.seen < max_messages:
            fresh = [
                letter
                for letter in queue.receive(INSPECT_VISIBILITY_SECONDS)
                if letter.message_id not in seen_ids
            ]
            if not fresh:
                break
            for letter in fresh[: max_messages - report.seen]:
                seen_ids.add(letter.message_id)
                report.seen += 1
                report.by_reason[letter.reason] += 1
                report.by_projection[letter.projection] += 1
                if len(report.samples) < samples:
                    report.samples.append(letter.envelope)
            held.extend(fresh)
    finally:
        queue.release(held)
    return report


# -- redrive ---------------------------------------------------------------------------------


def restore(value: Any) -> Any:
    """Undo the envelope's JSON encoding of bytes ({"$base64": ...})."""
    if isinstance(value, dict):
        if len(value) == 1 and "$base64" in value:
            return base64.b64decode(value["$base64"])
        return {k: restore(v) for k, v in value.items()}
    if isinstance(value, list):
        return [restore(v) for v in value]
    return value


def decoder_for(kind: str, fmt: str, envelope: Mapping[str, Any]) -> Decoder:
    """The decoder the daemon uses for the envelope's stream (`[source] kind` and `format`)."""
    if kind == "dynamodb":
        return DynamoDBStreamsDecoder(str(envelope["stream"]))
    # `[source] format` is validated at start-up to the decoder's own names.
    return KinesisDecoder(str(envelope["stream"]), fmt=fmt)  # type: ignore[arg-type]


def _epoch(iso: Any) -> float | None:
    return datetime.fromisoformat(iso).timestamp() if isinstance(iso, str) else None


def records_of(envelope: Mapping[str, Any], decoder: Decoder) -> list[ChangeRecord]:
    """The change records to re-apply: the failed one, or all of an undecodable record."""
    raw = RawRecord(
        sequence_number=str(envelope["sequence_number"]),
        approximate_arrival=_epoch(envelope.get("approximate_creation_time")),
        payload=restore(envelope["record"]),
    )
    decoded = decoder.decode(raw, str(envelope["shard_id"]))
    if envelope.get("projection") == DECODE_STAGE:
        return decoded
    # A KPL aggregate decodes into all its user records; the letter is about one of them.
    sub = int(envelope.get("sub_sequence_number", 0))
    chosen = [r for r in decoded if r.sub_sequence_number == sub]
    if not chosen:
        raise RedriveError(f"sub-record {sub} not found in the letter's record")
    return chosen


def targets(letter: Letter, projections: Mapping[str, Projection]) -> list[Projection]:
    """The projections a letter must go through: the one that failed, or every one."""
    if letter.projection in (DECODE_STAGE, ALL_PROJECTIONS):
        return list(projections.values())
    if letter.projection not in projections:
        raise RedriveError(f"no projection named {letter.projection!r} in the config")
    return [projections[letter.projection]]


@dataclass(slots=True)
class RedriveReport:
    """Counts of one redrive, and why the letters left in the queue failed."""

    applied: int = 0
    would_apply: int = 0
    skipped: int = 0
    failed: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Redrive:
    """One redrive run over a queue, with its options."""

    queue: DeadLetterQueue
    projections: Mapping[str, Projection]
    decoder: Callable[[Mapping[str, Any]], Decoder]
    dry_run: bool = False
    rate: float | None = None
    only_projection: str | None = None
    on_letter: Callable[[], None] = lambda: None

    def run(self) -> RedriveReport:
        """Passes over the queue until one applies nothing; leftovers are made visible again."""
        report = RedriveReport()
        pacer = Pacer(1.0 / self.rate) if self.rate else None
        held: dict[str, Letter] = {}
        try:
            for _ in range(1 if self.dry_run else MAX_PASSES):
                applied_before = report.applied
                for letter in self._new_letters(held):
                    if pacer is not None:
                        pacer.wait()
                    self._one(letter, report, held)
                    self.on_letter()
                if report.applied == applied_before or not report.failed:
                    break
                # Retry the failures: what they waited on may have been applied in this pass.
                self.queue.release(list(held.values()))
                held.clear()
                report.failed.clear()
        finally:
            self.queue.release(list(held.values()))
        return report

    def _new_letters(self, held: dict[str, Letter]) -> Iterator[Letter]:
        while True:
            received = self.queue.receive(REDRIVE_VISIBILITY_SECONDS)
            fresh = []
            for letter in received:
                if letter.message_id in held:
                    held[letter.message_id] = letter  # its visibility ran out: newest handle
                else:
                    fresh.append(letter)
            if not fresh:
                return
            yield from fresh

    def _one(self, letter: Letter, report: RedriveReport, held: dict[str, Letter]) -> None:
        if self.only_projection is not None and letter.projection != self.only_projection:
            report.skipped += 1
            held[letter.message_id] = letter
            return
        try:
            chosen = targets(letter, self.projections)
            records = records_of(letter.envelope, self.decoder(letter.envelope))
            if not self.dry_run:
                for projection in chosen:
                    projection.apply(records)
        except Exception as exc:  # not swallowed: reported, and the letter stays in the queue
            report.failed[letter.message_id] = f"{type(exc).__name__}: {exc}"
            held[letter.message_id] = letter
            return
        if self.dry_run:
            report.would_apply += 1
            held[letter.message_id] = letter
            return
        self.queue.delete(letter)
        report.applied += 1
