"""Where a shard reader starts: a sentinel, a timestamp, or a sequence number."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

IteratorType = Literal[
    "TRIM_HORIZON", "LATEST", "AT_TIMESTAMP", "AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER"
]


@dataclass(frozen=True, slots=True)
class StartPosition:
    """The arguments of GetShardIterator, as a value."""

    iterator_type: IteratorType
    sequence_number: str | None = None
    timestamp: float | None = None

    @classmethod
    def after(cls, sequence_number: str) -> StartPosition:
        """Resume right after a checkpointed sequence number."""
        return cls("AFTER_SEQUENCE_NUMBER", sequence_number=sequence_number)


TRIM_HORIZON = StartPosition("TRIM_HORIZON")
LATEST = StartPosition("LATEST")
