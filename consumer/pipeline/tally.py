"""Each record of a batch counted once per projection, with the first final outcome it reached.

A record applied by an attempt that failed on a later record is really applied: the retry
finds it stale (its guard refuses the repeat), but it is counted applied, once. Retries start
at the first record not yet settled, so records settled before it are not sent again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from consumer.record import ChangeRecord
from projections.results import SETTLED, Counts, Outcome, Results

# Called with the outcomes settled by one attempt (or one dead letter), as they happen.
CountsHook = Callable[[Counts], None]


class Tally:
    """The settled records of one projection over one batch."""

    def __init__(self, on_settled: CountsHook) -> None:
        self._settled: dict[int, Outcome] = {}
        self._on_settled = on_settled

    def settle(self, results: Results, records: Sequence[ChangeRecord]) -> None:
        """Take the final outcomes `results` gives `records`; records settled before keep theirs."""
        new = dict.fromkeys(Outcome, 0)
        settled = self._settled
        for record in records:
            if id(record) in settled:
                continue
            outcome = results.outcome(record)
            if outcome in SETTLED:  # None (not reported) is not
                settled[id(record)] = outcome
                new[outcome] += 1
        if any(new.values()):
            self._on_settled(
                Counts(new[Outcome.APPLIED], new[Outcome.STALE], new[Outcome.FILTERED])
            )

    def dead_lettered(self, record: ChangeRecord) -> None:
        """`record` is settled by its dead letter, or given up on (counted by the caller)."""
        self._settled[id(record)] = Outcome.FAILED

    def unsettled_from(self, records: Sequence[ChangeRecord]) -> Sequence[ChangeRecord]:
        """`records` from the first one not yet settled; empty when all are."""
        for index, record in enumerate(records):
            if id(record) not in self._settled:
                return records[index:]
        return records[len(records) :]
