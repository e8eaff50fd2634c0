"""`dlq inspect`: read the whole queue (or `--max` letters), group duplicates, decode records.

Everything received is made visible again before the command ends, even when it fails, so
looking hides nothing from a redrive or another operator. Malformed messages are reported
and left alone, or moved to a quarantine queue when one is given.
"""

from __future__ import annotations

import base64
import binascii
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson

from consumer.dead_letters.queue import DeadLetterQueue, Message

# Received messages stay hidden this long; they are released at the end anyway.
VISIBILITY_SECONDS = 300
# SQS allows about 120,000 messages in flight on a standard queue: stay well below it.
DEFAULT_MAX = 10_000


@dataclass(slots=True)
class LetterGroup:
    """One distinct letter (one failure of one record) and the messages that carry it."""

    envelope: dict[str, Any]
    message_ids: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The letter without its record: what a list of letters shows."""
        keys = ("projection", "reason", "shard_id", "sequence_number", "error_type")
        return {
            "message_ids": self.message_ids,
            **{key: self.envelope.get(key) for key in keys},
            "error_message": str(self.envelope.get("error_message", ""))[:200],
        }


@dataclass(slots=True)
class InspectReport:
    """What the queue holds: distinct letters by reason and projection, and what is wrong."""

    messages: int = 0
    approximate_total: int = 0
    letters: dict[str, LetterGroup] = field(default_factory=dict)
    by_reason: Counter[str] = field(default_factory=Counter)
    by_projection: Counter[str] = field(default_factory=Counter)
    # message id -> why it is not a usable letter (malformed, or a refused S3 pointer)
    defects: dict[str, str] = field(default_factory=dict)
    quarantined: list[str] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def duplicates(self) -> int:
        """Messages beyond the first of each letter (dead letters are at-least-once)."""
        return sum(len(group.message_ids) - 1 for group in self.letters.values())

    def as_json(self) -> dict[str, Any]:
        """The report as `--json` prints it."""
        return {
            "messages": self.messages,
            "distinct_letters": len(self.letters),
            "duplicates": self.duplicates,
            "approximate_total": self.approximate_total,
            "by_reason": dict(self.by_reason),
            "by_projection": dict(self.by_projection),
            "defects": self.defects,
            "quarantined": self.quarantined,
            "letters": [group.summary() for group in self.letters.values()],
            "samples": self.samples,
        }


def inspect(
    queue: DeadLetterQueue,
    max_letters: int = DEFAULT_MAX,
    samples: int = 3,
    quarantine: str | None = None,
    visibility_seconds: int = VISIBILITY_SECONDS,
) -> InspectReport:
    """Look at the queue until it is exhausted or `max_letters` distinct letters were seen."""
    report = InspectReport(approximate_total=queue.approximate_count())
    drain = queue.drain(visibility_seconds)
    try:
        for message in drain:
            report.messages += 1
            if message.defect is not None:
                report.defects[message.message_id] = message.defect
                if quarantine is not None and message.defect_kind == "malformed":
                    queue.move(message, quarantine)
                    drain.done(message)
                    report.quarantined.append(message.message_id)
                continue
            _count(report, message, samples)
            if len(report.letters) >= max_letters:
                break
    finally:
        drain.release()
    return report


def _count(report: InspectReport, message: Message, samples: int) -> None:
    assert message.envelope is not None
    group = report.letters.get(message.identity)
    if group is None:
        group = report.letters[message.identity] = LetterGroup(message.envelope)
        report.by_reason[message.reason] += 1
        report.by_projection[message.projection] += 1
        if len(report.samples) < samples:
            report.samples.append({"message_id": message.message_id, **readable(message.envelope)})
    group.message_ids.append(message.message_id)


def readable(envelope: dict[str, Any]) -> dict[str, Any]:
    """The envelope with its record's payload decoded: JSON as JSON, base64 only if binary.

    A Kinesis record's `Data` (base64) becomes the JSON it holds, or stays base64 with
    `"data_encoding": "base64"` when the bytes are not UTF-8 JSON (a KPL aggregate, say).
    """
    record = envelope.get("record")
    if not isinstance(record, dict) or not isinstance(record.get("Data"), str):
        return envelope
    try:
        data = base64.b64decode(record["Data"], validate=True)
        decoded = orjson.loads(data)
    except (binascii.Error, ValueError):
        return {**envelope, "record": {**record, "data_encoding": "base64"}}
    return {**envelope, "record": {**record, "Data": decoded, "data_encoding": "json"}}
