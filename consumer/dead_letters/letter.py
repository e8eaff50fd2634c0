"""The dead-letter envelope and the sink protocol: a poison record kept whole, with why."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

# 2: `application` and `signature` (when dead_letter.signing_key is set) were added.
ENVELOPE_VERSION = 2


def letter_id(
    stream: str, shard_id: str, sequence_number: str, sub_sequence_number: int, projection: str
) -> str:
    """A letter's identity: the same record failing in the same projection, hashed.

    The ledger's key and a FIFO queue's deduplication id, so a replay or a race that fails
    the same record again does not make a second letter.
    """
    parts = (stream, shard_id, sequence_number, str(sub_sequence_number), projection)
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def _iso(epoch: float | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat()


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return {"$base64": base64.b64encode(value).decode()}
    if isinstance(value, frozenset | set):
        return sorted((_jsonable(v) for v in value), key=repr)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Everything needed to understand and replay one failed record (see README, "Dead letters")."""

    source: str
    stream: str
    shard_id: str
    sequence_number: str
    sub_sequence_number: int
    event_id: str
    approximate_creation_time: float | None
    projection: str
    reason: str
    error_type: str
    error_message: str
    attempts: int
    first_failure_time: float
    last_failure_time: float
    record: Any

    @property
    def identity(self) -> str:
        """See `letter_id`."""
        return letter_id(
            self.stream,
            self.shard_id,
            self.sequence_number,
            self.sub_sequence_number,
            self.projection,
        )

    def envelope(self) -> dict[str, Any]:
        """The JSON envelope as sent to SQS."""
        body = asdict(self)
        body["version"] = ENVELOPE_VERSION
        body["approximate_creation_time"] = _iso(self.approximate_creation_time)
        body["first_failure_time"] = _iso(self.first_failure_time)
        body["last_failure_time"] = _iso(self.last_failure_time)
        body["record"] = _jsonable(self.record)
        return body

    def to_json(self) -> bytes:
        """The envelope serialized; Decimal and other non-JSON values become strings."""
        return orjson.dumps(self.envelope(), default=str)


class DeadLetterSink(Protocol):
    """Stores dead letters durably; raises TransientError when it cannot (nothing is skipped)."""

    def send(self, letters: Sequence[DeadLetter]) -> None:
        """Deliver every letter, or raise; a partial failure raises after retrying the rest."""
        ...
