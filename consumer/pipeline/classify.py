"""Is a failure transient (wait it out) or poison (isolate, dead-letter)? docs/design.md inv. 5."""

from __future__ import annotations

from collections.abc import Collection
from typing import Literal

from consumer.aws_errors import NETWORK_ERRORS, is_transient
from consumer.errors import PoisonError, TransientError

Kind = Literal["transient", "poison"]

TRANSIENT_TYPES: tuple[type[BaseException], ...] = (
    TransientError,
    *NETWORK_ERRORS,
    ConnectionError,
    TimeoutError,
)


def _postgres_transient(exc: BaseException) -> bool:
    # psycopg is optional at import time: a daemon without PostgreSQL projections needs none.
    try:
        import psycopg
    except ImportError:
        return False
    if isinstance(exc, psycopg.errors.SerializationFailure | psycopg.errors.DeadlockDetected):
        return True
    return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)


def classify(exc: BaseException, extra_transient_codes: Collection[str] = ()) -> Kind:
    """Transient for throttling, 5xx, network and database availability; poison otherwise.

    An error the code did not foresee counts as poison: it is retried a few times before it is
    dead-lettered, so a true outage of an unforeseen kind still shows up as a stalled shard
    only for those attempts. Projections should raise TransientError for what they know.
    `extra_transient_codes` are AWS error codes the operator adds (`[retry]
    transient_error_codes`), e.g. a sink's own "try again" code.
    """
    if isinstance(exc, PoisonError):
        return "poison"
    if isinstance(exc, TRANSIENT_TYPES) or is_transient(exc, extra_transient_codes):
        return "transient"
    return "transient" if _postgres_transient(exc) else "poison"
