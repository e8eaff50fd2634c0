"""The batches a shard fetched ahead, bounded in batches and in records.

A bound in batches alone would let memory grow with the page size (up to 10,000 records a
page): the records bound keeps a shard's memory flat whatever the backlog and the page size
(docs/design.md, invariant 6).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Generic, Protocol, TypeVar


class Sized(Protocol):
    """Anything that knows how many records it holds."""

    @property
    def size(self) -> int:
        """Records held (decoded records plus records that failed to decode)."""
        ...


T = TypeVar("T", bound=Sized)


class BatchBuffer(Generic[T]):
    """A FIFO of batches holding at most `max_batches` batches and `max_records` records."""

    def __init__(self, max_batches: int, max_records: int) -> None:
        if max_batches < 1 or max_records < 1:
            raise ValueError("a batch buffer needs room for at least one batch and one record")
        self.max_batches = max_batches
        self.max_records = max_records
        self._items: deque[T] = deque()
        self._records = 0
        self._changed = threading.Condition()

    @property
    def records(self) -> int:
        """Records waiting in the buffer."""
        with self._changed:
            return self._records

    def empty(self) -> bool:
        """No batch waiting."""
        with self._changed:
            return not self._items

    def wait_for_room(self, records: int, stop: threading.Event, poll: float = 0.2) -> bool:
        """Block until a batch of `records` fits (or the buffer is empty); False once stopped.

        A batch larger than `max_records` fits only into an empty buffer, so a page can never
        wait forever, and the bound stays: what is waiting plus the batch being applied.
        """
        with self._changed:
            while True:
                if not self._items or (
                    len(self._items) < self.max_batches
                    and self._records + records <= self.max_records
                ):
                    return True
                if stop.is_set():
                    return False
                self._changed.wait(poll)

    def put(self, batch: T) -> None:
        """Append a batch; the caller made room first with `wait_for_room`."""
        with self._changed:
            self._items.append(batch)
            self._records += batch.size
            self._changed.notify_all()

    def get(self, timeout: float) -> T | None:
        """The oldest batch, or None if none arrives within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not self._items:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._changed.wait(remaining)
            batch = self._items.popleft()
            self._records -= batch.size
            self._changed.notify_all()
            return batch
