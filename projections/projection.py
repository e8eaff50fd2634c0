"""The projection protocol: a named, idempotent function from a batch of changes to a sink."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from consumer.record import ChangeRecord


@dataclass(slots=True)
class Outcome:
    """Counts of what a projection did with a batch, per record."""

    applied: int = 0
    stale_skipped: int = 0
    filtered: int = 0

    def __iadd__(self, other: Outcome) -> Outcome:
        self.applied += other.applied
        self.stale_skipped += other.stale_skipped
        self.filtered += other.filtered
        return self

    @property
    def total(self) -> int:
        """Records accounted for."""
        return self.applied + self.stale_skipped + self.filtered


class Projection(Protocol):
    """Applies a batch durably and idempotently, or raises; never half-applies silently.

    Re-applying a batch it already applied must leave the read model unchanged: every write is
    guarded by a monotonic per-key position (see docs/design.md, invariant 4).
    """

    name: str

    def apply(self, records: Sequence[ChangeRecord]) -> Outcome:
        """Apply `records` (in shard order); return the outcome counts."""
        ...


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
