"""Projections: the protocol the daemon calls, and the base class projections are written on.

The daemon depends on the `Projection` protocol only. `BaseProjection` is what a projection
subclasses: it supplies no-op lifecycle hooks (`migrate`, `ready`, `close`) and builds the
projection from its validated settings model, so a projection writes `apply` and what it needs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Protocol, Self

from consumer.record import ChangeRecord
from projections.results import Outcome, Results
from projections.settings import ProjectionSettings, validate_settings


class Projection(Protocol):
    """Applies a batch durably and idempotently, reporting each record's outcome.

    Re-applying a batch it already applied must leave the read model unchanged: every write is
    guarded by a monotonic per-key position (see docs/design.md, invariant 4).
    """

    name: str

    def apply(self, records: Sequence[ChangeRecord]) -> Results:
        """Apply `records` (in shard order); return each record's outcome."""
        ...

    def migrate(self) -> None:
        """Create what the projection writes to, if absent; change nothing otherwise."""
        ...

    def ready(self) -> bool:
        """Whether the projection can work now (it feeds /readyz)."""
        ...

    def close(self) -> None:
        """Release what the projection holds (threads, connections)."""
        ...


class Resources(Protocol):
    """What the daemon lends projections: clients and pools, created once and shared."""

    def aws_client(self, service: str) -> Any:
        """A boto3 client for `service` (honours AWS_ENDPOINT_URL and the configured region)."""
        ...

    def postgres_pool(self) -> Any:
        """The shared psycopg_pool.ConnectionPool (raises ConfigError when no DSN is set)."""
        ...


class BaseProjection(ABC):
    """The base of every projection: subclass it, set `settings_model`, write `apply`.

    `from_config` validates the `[projections.settings]` table against `settings_model` and
    calls `from_settings`, which by default is `cls(name, settings, resources)`; a class whose
    constructor takes other arguments overrides `from_settings`. `migrate`, `ready` and
    `close` do nothing until overridden.
    """

    settings_model: ClassVar[type[ProjectionSettings]] = ProjectionSettings
    name: str

    def __init__(self, name: str, settings: Any = None, resources: Resources | None = None) -> None:
        self.name = name

    @classmethod
    def from_config(cls, name: str, settings: Mapping[str, Any], resources: Resources) -> Self:
        """Build from the raw settings table; a SettingsError names every bad key."""
        return cls.from_settings(name, validate_settings(cls.settings_model, settings), resources)

    @classmethod
    def from_settings(cls, name: str, settings: Any, resources: Resources) -> Self:
        """Build from validated settings (an instance of `settings_model`)."""
        return cls(name, settings, resources)

    @abstractmethod
    def apply(self, records: Sequence[ChangeRecord]) -> Results:
        """Apply `records` (in shard order); return each record's outcome."""

    # The hooks are optional: a no-op here, so the daemon calls them without probing.
    def migrate(self) -> None:  # noqa: B027
        """Create what the projection writes to; nothing by default."""

    def ready(self) -> bool:
        """Whether the projection can work now; True by default."""
        return True

    def close(self) -> None:  # noqa: B027
        """Release what the projection holds; nothing by default."""


def attempt(projection: Projection, records: Sequence[ChangeRecord]) -> Results:
    """`projection.apply(records)`, with a raised error as every record's failure.

    A projection raises only when none of the records took effect, so failing them all is
    exact; the caller classifies the error from the results (nothing is swallowed).
    """
    try:
        results = projection.apply(records)
    except Exception as exc:  # becomes data: each record's outcome is FAILED with exc
        return Results.of(records, Outcome.FAILED, exc)
    if not isinstance(results, Results):
        error = TypeError(
            f"projection {projection.name}.apply returned {type(results).__name__}, not Results"
        )
        return Results.of(records, Outcome.FAILED, error)
    return results
