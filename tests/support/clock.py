"""A clock that moves only when something sleeps on it: waits become exact numbers to assert."""

from __future__ import annotations


class ManualClock:
    """`now()` for a Pacer's clock and `sleep()` for its sleep; `sleeps` records each wait."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self._now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self._now += seconds
