"""The projection protocol: a named, idempotent function from a batch of changes to a sink."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from consumer.record import ChangeRecord


@dataclass(slots=True)
class Outcome:
    """Counts of what a projection did with a batch, per record."""

    applied: int = 0
    stale_skipped: int = 0
    filtered: int = 0

    def __iadd__(self, other: Outcome) -> Outcome:
        self.applied += other.applied
        self.stale_skipped += other.stale_skipped
        self.filtered += other.filtered
        return self

    @property
    def total(self) -> int:
        """Records accounted for."""
        return self.applied + self.stale_skipped + self.filtered


class Projection(Protocol):
    """Applies a batch durably and idempotently, or raises; never half-applies silently.

    Re-applying a batch it already applied must leave the read model unchanged: every write is
    guarded by a monotonic per-key position (see DESIGN.md, invariant 4).
    """

    name: str

    def apply(self, records: Sequence[ChangeRecord]) -> Outcome:
        """Apply `records` (in shard order); return the outcome counts."""
        ...
