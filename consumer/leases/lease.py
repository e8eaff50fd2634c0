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

    @property
    def finished(self) -> bool:
        """The shard was read to its end and every record applied."""
        return self.checkpoint == SENTINEL_SHARD_END

    def with_(self, **changes: object) -> Lease:
        """A copy with some attributes changed."""
        return replace(self, **changes)  # type: ignore[arg-type]
