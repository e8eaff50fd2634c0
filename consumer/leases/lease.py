"""A lease: one worker's claim on one shard, stored as a KCL-compatible item."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

# KCL checkpoint sentinels, stored in the `checkpoint` attribute like a sequence number.
SENTINEL_TRIM_HORIZON = "TRIM_HORIZON"
SENTINEL_LATEST = "LATEST"
SENTINEL_AT_TIMESTAMP = "AT_TIMESTAMP"
SENTINEL_SHARD_END = "SHARD_END"


@dataclass(frozen=True, slots=True)
class Lease:
    """The lease item: attribute names follow the KCL so a team can switch either way."""

    lease_key: str
    lease_owner: str | None = None
    lease_counter: int = 0
    checkpoint: str = SENTINEL_TRIM_HORIZON
    checkpoint_sub_sequence_number: int = 0
    owner_switches_since_checkpoint: int = 0
    parent_shard_ids: frozenset[str] = field(default_factory=frozenset)
    # Where AT_TIMESTAMP starts (epoch seconds), set by `leases reset --to AT_TIMESTAMP T`; the
    # configured source.initial_timestamp applies when it is None.
    checkpoint_timestamp: float | None = None
    # When a stream-projector worker last moved the counter (epoch seconds, its wall clock);
    # None when the counter was last moved by someone else (the KCL) or never. Metadata for
    # operators only: workers judge expiry by their own observation (consumer/leases/taker.py).
    last_renewal: float | None = field(default=None, compare=False)

    @property
    def finished(self) -> bool:
        """The shard was read to its end and every record applied."""
        return self.checkpoint == SENTINEL_SHARD_END

    def with_(self, **changes: object) -> Lease:
        """A copy with some attributes changed."""
        return replace(self, **changes)  # type: ignore[arg-type]

    def renewal_age(self, now: float) -> float | None:
        """Seconds since the last renewal, when a stream-projector worker stamped it."""
        return None if self.last_renewal is None else max(0.0, now - self.last_renewal)

    def looks_expired(self, now: float, failover_seconds: float) -> bool:
        """Owned, but not renewed for failover_seconds as the lease's renewal stamp shows.

        The operator tools' view of what workers decide by watching the counter: a lease whose
        renewal time is unknown is never called expired.
        """
        age = self.renewal_age(now)
        return self.lease_owner is not None and age is not None and age > failover_seconds


def _rank(checkpoint: str) -> tuple[int, int]:
    """Order of checkpoints: any sentinel before a record, records by number, SHARD_END last."""
    if checkpoint == SENTINEL_SHARD_END:
        return (2, 0)
    if checkpoint.isdigit():
        return (1, int(checkpoint))
    return (0, 0)


def covers(checkpoint: str, sequence_number: str) -> bool:
    """True when a shard checkpointed at `checkpoint` has read past `sequence_number`.

    Sequence numbers of one shard grow (as numbers, not as strings: they vary in length); a
    sentinel such as TRIM_HORIZON or LATEST covers no record at all.
    """
    return sequence_number.isdigit() and _rank(checkpoint) >= (1, int(sequence_number))


def furthest(first: str, second: str) -> str:
    """The checkpoint further along of two checkpoints of the same shard."""
    return first if _rank(first) >= _rank(second) else second
