"""A shard as a source describes it: its id, lineage and whether it is closed."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ShardInfo:
    """One shard of a stream, with its parents (a split has one, a merge two)."""

    shard_id: str
    parent_shard_ids: tuple[str, ...] = ()
    starting_sequence_number: str | None = None
    ending_sequence_number: str | None = None

    @property
    def closed(self) -> bool:
        """A shard with an ending sequence number takes no new records."""
        return self.ending_sequence_number is not None
