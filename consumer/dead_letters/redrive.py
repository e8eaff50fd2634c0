"""`dlq redrive`: re-apply dead letters through the current projections, then delete them.

A redrive re-decodes each envelope's record with the source's decoder and applies it through
the current projections it names; their guards (docs/design.md, invariant 4) make a stale
change a no-op, so redriving an old letter can never overwrite newer state. Before anything
is applied, a letter must pass `LetterCheck` (consumer/dead_letters/validation.py): signed,
ours, of a shard we read, not ahead of its checkpoint. A message is deleted only after every
target projection applied it; anything else (refused, malformed, failed, skipped) is made
visible again when the run ends, and counted with its reason.
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from consumer.aws import Pacer
from consumer.config import SourceSettings
from consumer.dead_letters.ledger import DeadLetterLedger
from consumer.dead_letters.queue import DeadLetterQueue, Message
from consumer.dead_letters.validation import LetterCheck
from consumer.errors import StreamProjectorError
from consumer.pipeline.apply import ALL_PROJECTIONS, DECODE_STAGE
from consumer.record import ChangeRecord, RawRecord
from consumer.sources.decode import Decoder, decoder_for
from projections.projection import Projection, attempt

REDRIVE_VISIBILITY_SECONDS = 300
# Passes over the queue while the previous one applied something: a letter that waited on an
# earlier one (a version gap) succeeds on the next pass.
MAX_PASSES = 5


class RedriveError(StreamProjectorError):
    """A letter cannot be redriven as it stands (unknown projection, record not found)."""


def restore(value: Any) -> Any:
    """Undo the envelope's JSON encoding of bytes ({"$base64": ...})."""
    if isinstance(value, dict):
        if len(value) == 1 and "$base64" in value:
            return base64.b64decode(value["$base64"])
        return {k: restore(v) for k, v in value.items()}
    if isinstance(value, list):
        return [restore(v) for v in value]
    return value


def envelope_decoder(source: SourceSettings, envelope: Mapping[str, Any]) -> Decoder:
    """The decoder the daemon uses for the envelope's stream (`[source]` as configured)."""
    return decoder_for(source.kind, str(envelope["stream"]), source.format, source.key_fields)


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


def targets(message: Message, projections: Mapping[str, Projection]) -> list[Projection]:
    """The projections a letter must go through: the one that failed, or every one."""
    if message.projection in (DECODE_STAGE, ALL_PROJECTIONS):
        return list(projections.values())
    if message.projection not in projections:
        raise RedriveError(f"no projection named {message.projection!r} in the config")
    return [projections[message.projection]]


@dataclass(slots=True)
class RedriveReport:
    """Counts of one redrive, and why each letter left in the queue is there."""

    applied: int = 0
    would_apply: int = 0
    skipped: int = 0
    # message id -> why: failed to apply, refused by a check, or not a dead letter at all
    failed: dict[str, str] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    malformed: dict[str, str] = field(default_factory=dict)
    refused_by: Counter[str] = field(default_factory=Counter)
    quarantined: list[str] = field(default_factory=list)

    @property
    def left_with_a_problem(self) -> int:
        """Letters a person must look at: failed, refused or malformed (and not moved)."""
        return len(self.failed) + len(self.refused) + len(self.malformed)


@dataclass(slots=True)
class Redrive:
    """One redrive run over a queue, with its options."""

    queue: DeadLetterQueue
    projections: Mapping[str, Projection]
    decoder: Callable[[Mapping[str, Any]], Decoder]
    check: LetterCheck
    ledger: DeadLetterLedger | None = None
    dry_run: bool = False
    rate: float | None = None
    only_projection: str | None = None
    quarantine: str | None = None
    on_letter: Callable[[], None] = lambda: None

    def run(self) -> RedriveReport:
        """Passes over the queue until one applies nothing; leftovers are made visible again."""
        pacer = Pacer(1.0 / self.rate) if self.rate else None
        report = RedriveReport()
        for _ in range(1 if self.dry_run else MAX_PASSES):
            applied_before = report.applied
            # Each pass counts what is left afresh; what was applied or moved adds up.
            report = RedriveReport(applied=report.applied, quarantined=report.quarantined)
            drain = self.queue.drain(REDRIVE_VISIBILITY_SECONDS)
            try:
                for message in drain:
                    if pacer is not None:
                        pacer.wait()
                    if self._one(message, report):
                        drain.done(message)
                    self.on_letter()
            finally:
                drain.release()
            # Failures are retried while a pass applies something: what they waited on (a
            # version gap, say) may have been applied in this pass.
            if not report.failed or report.applied == applied_before:
                break
        return report

    def _one(self, message: Message, report: RedriveReport) -> bool:
        """Handle one message; True when it left the queue (applied and deleted, or moved)."""
        refusal = self.check.refusal(message)
        if refusal is not None and refusal.kind == "malformed":
            if self.quarantine is not None:
                self.queue.move(message, self.quarantine)
                report.quarantined.append(message.message_id)
                return True
            report.malformed[message.message_id] = refusal.detail
            return False
        if self.only_projection is not None and message.projection != self.only_projection:
            report.skipped += 1
            return False
        if refusal is not None:
            report.refused[message.message_id] = str(refusal)
            report.refused_by[refusal.kind] += 1
            return False
        assert message.envelope is not None
        try:
            chosen = targets(message, self.projections)
            records = records_of(message.envelope, self.decoder(message.envelope))
            if not self.dry_run:
                for projection in chosen:
                    errors = attempt(projection, records).errors_for(records, projection.name)
                    if errors:
                        raise errors[0]
        except Exception as exc:  # not swallowed: reported, and the letter stays in the queue
            report.failed[message.message_id] = f"{type(exc).__name__}: {exc}"
            return False
        if self.dry_run:
            report.would_apply += 1
            return False
        self.queue.delete(message)
        if self.ledger is not None:
            # Gone from the queue: if the record fails again later, that is a new letter.
            self.ledger.forget(message.identity)
        report.applied += 1
        return True
