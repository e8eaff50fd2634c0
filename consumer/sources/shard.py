"""A shard as a source describes it: its id, lineage and whether it is closed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ShardInfo:
    """One shard of a stream, with its parents (a split has one, a merge two)."""

    shard_id: str
    parent_shard_ids: tuple[str, ...] = ()
    starting_sequence_number: str | None = None
    ending_sequence_number: str | None = None

    @classmethod
    def from_wire(cls, shard: dict[str, Any]) -> ShardInfo:
        """From a DescribeStream / ListShards shard; only Kinesis merges have a second parent."""
        numbers = shard.get("SequenceNumberRange", {})
        parents = (shard.get("ParentShardId"), shard.get("AdjacentParentShardId"))
        return cls(
            shard_id=shard["ShardId"],
            parent_shard_ids=tuple(parent for parent in parents if parent),
            starting_sequence_number=numbers.get("StartingSequenceNumber"),
            ending_sequence_number=numbers.get("EndingSequenceNumber"),
        )

    @property
    def closed(self) -> bool:
        """A shard with an ending sequence number takes no new records."""
        return self.ending_sequence_number is not None
