"""Retrying: capped exponential backoff with full jitter, waits a stop request cuts short, and
the one retry loop every caller uses (`retry`)."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from consumer.errors import StreamProjectorError, TransientError

T = TypeVar("T")


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


class RetryStopped(StreamProjectorError):
    """`stop` was set while a retry waited; the failure it waited on is the `__cause__`."""


def is_transient_error(exc: Exception) -> bool:
    """The default of `retry`: retry what was raised as a TransientError (or a subclass)."""
    return isinstance(exc, TransientError)


def _nothing(exc: Exception, delay: float) -> None:
    """The default `on_retry`: nothing to report."""


def retry(
    call: Callable[[], T],
    *,
    backoff: Backoff,
    retry_on: Callable[[Exception], bool] = is_transient_error,
    stop: threading.Event | None = None,
    attempts: int | None = None,
    on_retry: Callable[[Exception, float], None] = _nothing,
) -> T:
    """`call()` until it returns, waiting `backoff` after each failure that `retry_on` accepts.

    A failure `retry_on` refuses, or the one of the last of `attempts` calls (None: no
    limit), is raised as is. `on_retry(failure, delay)` runs before each wait (log, count);
    if `stop` is set during a wait, RetryStopped is raised from the failure. A success
    resets `backoff`, so a caller may keep one across calls.
    """
    stop = stop if stop is not None else threading.Event()
    failures = 0
    while True:
        try:
            result = call()
        except Exception as exc:  # handed to retry_on: re-raised unless it says "retry"
            failures += 1
            if not retry_on(exc) or (attempts is not None and failures >= attempts):
                raise
            delay = backoff.next_delay()
            on_retry(exc, delay)
            if pause(stop, delay):
                raise RetryStopped(f"stopped while retrying after: {exc}") from exc
            continue
        backoff.reset()
        return result
