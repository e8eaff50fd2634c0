"""What a projection did with each record of a batch, as data: applied, stale, filtered, failed.

A projection returns one `Results` per `apply` call, in the spirit of Powertools' batch
processor: every record gets an explicit outcome, so the pipeline can tell which records took
effect before a failure and count each record once with the outcome it really had, however
many retries and bisections it took (docs/projections.md, "Results").

Records are identified by the object passed to `apply`, not by position or key: a backfill
feeds many records at one position, and two records may share a key.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum

from consumer.errors import PoisonError
from consumer.record import ChangeRecord


class Outcome(StrEnum):
    """What became of one record in one projection."""

    APPLIED = "applied"  # its change took effect
    STALE = "stale"  # the guard refused it: newer state (or this very change) was there already
    FILTERED = "filtered"  # it means nothing to this projection
    FAILED = "failed"  # it did not take effect; `error` says why, and the batch is retried


# Final outcomes: a record with one of these never needs to be applied again.
SETTLED = frozenset({Outcome.APPLIED, Outcome.STALE, Outcome.FILTERED})


@dataclass(frozen=True, slots=True)
class RecordResult:
    """One record's outcome, with the error when it failed."""

    record: ChangeRecord
    outcome: Outcome
    error: BaseException | None = None

    @property
    def settled(self) -> bool:
        """The record took its final outcome (applied, stale or filtered)."""
        return self.outcome in SETTLED


@dataclass(frozen=True, slots=True)
class Counts:
    """How many records had each outcome."""

    applied: int = 0
    stale: int = 0
    filtered: int = 0
    failed: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(
            self.applied + other.applied,
            self.stale + other.stale,
            self.filtered + other.filtered,
            self.failed + other.failed,
        )

    @property
    def total(self) -> int:
        """Records accounted for."""
        return self.applied + self.stale + self.filtered + self.failed


# How Results keeps one record's outcome: (record, outcome, error).
_Entry = tuple[ChangeRecord, Outcome, BaseException | None]


class Results:
    """Outcomes per record of one `apply` call; a later outcome for a record replaces one before.

    A record the projection did not mention was not attempted: the pipeline retries it.
    """

    __slots__ = ("_by_record",)

    def __init__(self, results: Iterable[RecordResult] = ()) -> None:
        # Keyed by id(); each entry holds its record, so no id is reused meanwhile. Entries are
        # plain (record, outcome, error) tuples, made per record on the hot path: a RecordResult
        # per record cost about 1 us more (bench/records_bench.py); they are built when asked.
        self._by_record: dict[int, _Entry] = {}
        for result in results:
            self._by_record[id(result.record)] = (result.record, result.outcome, result.error)

    @classmethod
    def of(
        cls,
        records: Iterable[ChangeRecord],
        outcome: Outcome,
        error: BaseException | None = None,
    ) -> Results:
        """The same outcome for every record (a transaction that committed, or failed whole)."""
        _check(outcome, error)
        results = cls()
        results._by_record = {id(record): (record, outcome, error) for record in records}
        return results

    def add(
        self, record: ChangeRecord, outcome: Outcome, error: BaseException | None = None
    ) -> None:
        """Record `record`'s outcome; FAILED needs the error that explains it."""
        _check(outcome, error)
        self._by_record[id(record)] = (record, outcome, error)

    def applied(self, record: ChangeRecord) -> None:
        """Its change took effect."""
        self._by_record[id(record)] = (record, Outcome.APPLIED, None)

    def stale(self, record: ChangeRecord) -> None:
        """The guard refused it: the read model already holds this change or a newer one."""
        self._by_record[id(record)] = (record, Outcome.STALE, None)

    def filtered(self, record: ChangeRecord) -> None:
        """It is not for this projection."""
        self._by_record[id(record)] = (record, Outcome.FILTERED, None)

    def failed(self, record: ChangeRecord, error: BaseException) -> None:
        """It did not take effect because of `error` (classified like a raised one)."""
        self.add(record, Outcome.FAILED, error)

    def merge(self, other: Results) -> Results:
        """Add `other`'s outcomes to these (they win for records in both); returns self."""
        self._by_record.update(other._by_record)
        return self

    def get(self, record: ChangeRecord) -> RecordResult | None:
        """The outcome of `record`, or None when the projection did not report it."""
        entry = self._by_record.get(id(record))
        return None if entry is None else RecordResult(*entry)

    def outcome(self, record: ChangeRecord) -> Outcome | None:
        """Only the outcome of `record` (None when not reported): `get` without building it."""
        entry = self._by_record.get(id(record))
        return None if entry is None else entry[1]

    def __iter__(self) -> Iterator[RecordResult]:
        return (RecordResult(*entry) for entry in self._by_record.values())

    def __len__(self) -> int:
        return len(self._by_record)

    def __repr__(self) -> str:
        return f"Results({self.counts()})"

    def counts(self) -> Counts:
        """How many records had each outcome."""
        tally = dict.fromkeys(Outcome, 0)
        for _, outcome, _ in self._by_record.values():
            tally[outcome] += 1
        return Counts(
            tally[Outcome.APPLIED],
            tally[Outcome.STALE],
            tally[Outcome.FILTERED],
            tally[Outcome.FAILED],
        )

    def failures(self) -> list[RecordResult]:
        """The records that failed, in the order they were reported."""
        return [
            RecordResult(*entry) for entry in self._by_record.values() if entry[1] not in SETTLED
        ]

    def errors_for(self, records: Sequence[ChangeRecord], projection: str) -> list[BaseException]:
        """Why some of `records` are not settled, in record order: empty when all are.

        The errors of the failed records (each error once); when none failed but some were left
        out, a PoisonError naming the first of those (a projection reports every record it was
        given, or raises).
        """
        errors: dict[int, BaseException] = {}
        missing: ChangeRecord | None = None
        by_record = self._by_record
        for record in records:
            entry = by_record.get(id(record))
            if entry is None:
                missing = missing or record
            elif entry[2] is not None:
                errors.setdefault(id(entry[2]), entry[2])
        if errors or missing is None:
            return list(errors.values())
        return [
            PoisonError(
                f"projection {projection} reported no outcome for record {missing.sequence_number}"
            )
        ]


def _check(outcome: Outcome, error: BaseException | None) -> None:
    if (outcome is Outcome.FAILED) != (error is not None):
        raise ValueError("an error goes with the FAILED outcome and only with it")
