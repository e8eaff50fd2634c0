"""The one retry loop (consumer/pipeline/retry.py): what it retries, how often, and stopping."""

from __future__ import annotations

import threading

import pytest

from consumer.errors import PoisonError, ThrottledError, TransientError
from consumer.pipeline.retry import Backoff, RetryStopped, retry


class Flaky:
    """Fails with the given errors, in order, then returns how many calls it took."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> int:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.calls


def quick() -> Backoff:
    return Backoff(base=0.001, cap=0.002)


def test_transient_failures_are_retried_until_success_and_reported_before_each_wait() -> None:
    flaky = Flaky(ThrottledError("slow down"), TransientError("503"))
    waits: list[tuple[str, float]] = []
    backoff = quick()

    def report(exc: Exception, delay: float) -> None:
        waits.append((str(exc), delay))

    result = retry(flaky, backoff=backoff, on_retry=report)
    assert result == 3 and [w[0] for w in waits] == ["slow down", "503"]
    assert all(0 <= delay <= 0.002 for _, delay in waits)
    assert backoff.attempt == 0  # reset by the success, for a caller that keeps it


def test_a_failure_retry_on_refuses_is_raised_at_once() -> None:
    flaky = Flaky(PoisonError("bad record"))
    with pytest.raises(PoisonError):
        retry(flaky, backoff=quick())
    assert flaky.calls == 1


def test_attempts_bound_the_calls_and_the_last_failure_is_raised() -> None:
    flaky = Flaky(*(TransientError(f"try {n}") for n in range(1, 6)))
    with pytest.raises(TransientError, match="try 3"):
        retry(flaky, backoff=quick(), attempts=3)
    assert flaky.calls == 3


def test_a_stop_during_a_wait_raises_retry_stopped_from_the_failure() -> None:
    stop = threading.Event()
    flaky = Flaky(TransientError("down"), TransientError("down"))

    def stop_now(exc: Exception, delay: float) -> None:
        stop.set()

    with pytest.raises(RetryStopped) as raised:
        retry(flaky, backoff=Backoff(base=60, cap=60), stop=stop, on_retry=stop_now)
    assert flaky.calls == 1 and isinstance(raised.value.__cause__, TransientError)


def test_retry_on_decides_what_is_worth_another_call() -> None:
    flaky = Flaky(KeyError("a"), KeyError("b"))
    assert retry(flaky, backoff=quick(), retry_on=lambda exc: isinstance(exc, KeyError)) == 3
