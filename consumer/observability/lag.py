"""How far behind a shard is where it matters, where records are applied.

A page of records is fetched ahead of processing and may wait behind a batch that takes long
(a slow sink, retries): age measured at fetch time then reads 0 while records are still
unapplied. Here a shard's lag follows each fetched page until its checkpoint is written: while
pages wait, the age is that of the oldest unapplied record (and grows while it waits); after a
checkpoint, it is the age of the batch's last record at that moment; once a GetRecords finds
nothing more and nothing waits, it is 0.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class _Page:
    records: int
    oldest_arrival: float | None
    newest_arrival: float | None


class ShardLag:
    """One shard's pages fetched but not yet checkpointed, in order; not thread-safe (the
    caller holds a lock)."""

    def __init__(self) -> None:
        self._pages: deque[_Page] = deque()
        self._applied_age = 0.0
        self._caught_up = False

    def fetched(self, records: int, oldest: float | None, newest: float | None) -> None:
        """A GetRecords returned `records` records (arrival times of the first and last)."""
        if records:
            self._pages.append(_Page(records, oldest, newest))
        else:
            self._caught_up = True

    def applied(self, now: float) -> None:
        """The oldest waiting page was applied and its checkpoint written at `now`."""
        if not self._pages:
            return  # a checkpoint without records (SHARD_END)
        page = self._pages.popleft()
        if page.newest_arrival is not None:
            self._applied_age = max(0.0, now - page.newest_arrival)
        # Until a GetRecords finds the tip again, the last checkpoint's age stands.
        self._caught_up = False

    def age(self, now: float) -> float:
        """Seconds the shard's applied state is behind the stream, at `now`."""
        for page in self._pages:
            if page.oldest_arrival is not None:
                # Clock skew between the stream and this host must not show as negative lag.
                return max(0.0, now - page.oldest_arrival)
        if self._pages or not self._caught_up:
            return self._applied_age
        return 0.0

    @property
    def pending(self) -> int:
        """Records fetched and not yet checkpointed."""
        return sum(page.records for page in self._pages)
