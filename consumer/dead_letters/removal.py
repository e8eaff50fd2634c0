"""`dlq purge` and `dlq delete`: remove letters for good, with their S3 envelopes and their
ledger entries (so a record that fails again later is dead-lettered again).

Messages are received and deleted one by one rather than with SQS's PurgeQueue, which
would leave the envelopes in S3 and the ledger's entries behind (and may run once a minute).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from consumer.dead_letters.ledger import DeadLetterLedger
from consumer.dead_letters.queue import DeadLetterQueue, Message

VISIBILITY_SECONDS = 120


@dataclass(slots=True)
class RemovalReport:
    """What was deleted, and what was looked at and left."""

    deleted: list[str] = field(default_factory=list)
    kept: int = 0
    not_found: list[str] = field(default_factory=list)


def _remove(queue: DeadLetterQueue, ledger: DeadLetterLedger | None, message: Message) -> None:
    queue.delete(message)
    if ledger is not None and message.envelope is not None:
        ledger.forget(message.identity)


def purge(
    queue: DeadLetterQueue,
    ledger: DeadLetterLedger | None,
    only_projection: str | None = None,
) -> RemovalReport:
    """Delete every message (or only the letters of one projection); the rest stays."""
    report = RemovalReport()
    drain = queue.drain(VISIBILITY_SECONDS)
    try:
        for message in drain:
            if only_projection is not None and (
                message.envelope is None or message.projection != only_projection
            ):
                continue
            _remove(queue, ledger, message)
            drain.done(message)
            report.deleted.append(message.message_id)
        report.kept = len(drain.held)
    finally:
        drain.release()
    return report


def delete(
    queue: DeadLetterQueue, ledger: DeadLetterLedger | None, message_ids: Sequence[str]
) -> RemovalReport:
    """Delete the messages with these ids; ids not found in the queue are reported."""
    wanted = set(message_ids)
    report = RemovalReport()
    drain = queue.drain(VISIBILITY_SECONDS)
    try:
        for message in drain:
            if message.message_id not in wanted:
                continue
            _remove(queue, ledger, message)
            drain.done(message)
            report.deleted.append(message.message_id)
            if len(report.deleted) == len(wanted):
                break
        report.kept = len(drain.held)
    finally:
        drain.release()
    report.not_found = sorted(wanted - set(report.deleted))
    return report
