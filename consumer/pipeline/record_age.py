"""The optional maximum record age, like Lambda's MaximumRecordAgeInSeconds (default off).

A consumer that fell far behind may prefer to set old records aside (dead-lettered with reason
`record_too_old`, so nothing is lost) and serve fresh ones; redrive applies them later.
"""

from __future__ import annotations

from collections.abc import Sequence

from consumer.errors import PoisonError
from consumer.record import ChangeRecord

REASON = "record_too_old"


class RecordTooOldError(PoisonError):
    """The record is older than `[retry] max_record_age_seconds` (names the error in a letter)."""


def split_by_age(
    records: Sequence[ChangeRecord], max_age_seconds: float, now: float
) -> tuple[list[ChangeRecord], list[ChangeRecord]]:
    """(fresh, too old): a record with no creation time is never too old; 0 disables the check."""
    if max_age_seconds <= 0:
        return list(records), []
    oldest_allowed = now - max_age_seconds
    fresh: list[ChangeRecord] = []
    old: list[ChangeRecord] = []
    for record in records:
        created = record.approximate_creation_time
        (old if created is not None and created < oldest_allowed else fresh).append(record)
    return fresh, old
