"""An in-memory projection for loop tests: keeps what it applied, can hold a batch in flight."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from consumer.record import ChangeRecord
from projections.projection import BaseProjection
from projections.results import Outcome, Results


class CollectingProjection(BaseProjection):
    """Keeps what it applied in memory; can be paused to hold a batch in flight."""

    name = "collect"

    def __init__(self) -> None:
        self.applied: list[int] = []
        self.sequences: list[str] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def apply(self, records: Sequence[ChangeRecord]) -> Results:
        self.entered.set()
        self.gate.wait(60)
        self.applied.extend(int(r.new_image["n"]) for r in records if r.new_image)
        self.sequences.extend(r.sequence_number for r in records)
        return Results.of(records, Outcome.APPLIED)
