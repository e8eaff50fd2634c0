"""Capped exponential backoff with full jitter, and waits that a stop request cuts short."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field


@dataclass(slots=True)
class Backoff:
    """Delay before attempt n: uniform(0, min(cap, base * 2**n)) — AWS's "full jitter".

    Full jitter spreads the retries of many shards and replicas hitting the same throttled
    table, where equal delays would make them collide again in lockstep.
    """

    base: float = 0.1
    cap: float = 30.0
    attempt: int = 0
    _random: random.Random = field(default_factory=random.Random)

    def next_delay(self) -> float:
        """The delay before the next attempt; each call doubles the ceiling up to `cap`."""
        ceiling = min(self.cap, self.base * (2 ** min(self.attempt, 32)))
        self.attempt += 1
        return self._random.uniform(0, ceiling)

    def reset(self) -> None:
        """After a success: the next failure starts from the base again."""
        self.attempt = 0


def pause(stop: threading.Event, seconds: float) -> bool:
    """Sleep up to `seconds`, returning True at once if `stop` is set meanwhile."""
    return stop.wait(seconds) if seconds > 0 else stop.is_set()
