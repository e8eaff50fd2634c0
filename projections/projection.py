"""The projection protocol: a named, idempotent function from a batch of changes to a sink."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from consumer.record import ChangeRecord
from projections.results import Outcome, Results


class Projection(Protocol):
    """Applies a batch durably and idempotently, or raises; never half-applies silently.

    Re-applying a batch it already applied must leave the read model unchanged: every write is
    guarded by a monotonic per-key position (see docs/design.md, invariant 4).
    """

    name: str

    def apply(self, records: Sequence[ChangeRecord]) -> Results:
        """Apply `records` (in shard order); return each record's outcome."""
        ...


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


class Resources(Protocol):
    """What the daemon lends projections: clients and pools, created once and shared."""

    def aws_client(self, service: str) -> Any:
        """A boto3 client for `service` (honours AWS_ENDPOINT_URL and the configured region)."""
        ...

    def postgres_pool(self) -> Any:
        """The shared psycopg_pool.ConnectionPool (raises ConfigError when no DSN is set)."""
        ...


class ProjectionFactory(Protocol):
    """A projection class as named in the TOML file (`class = "module:Class"`)."""

    @classmethod
    def from_config(
        cls, name: str, settings: Mapping[str, Any], resources: Resources
    ) -> Projection:
        """Build from the `[projections.settings]` table; raise ConfigError naming a bad key."""
        ...


class Migratable(Protocol):
    """A projection that owns tables: `stream-projector migrate` calls this; it is idempotent."""

    def migrate(self) -> None:
        """Create what the projection writes to, if absent; change nothing otherwise."""
        ...
