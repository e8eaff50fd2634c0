"""The seam between a stream and the shard loop: read one shard, batch by batch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from consumer.record import RawRecord
from consumer.sources.position import StartPosition
from consumer.sources.shard import ShardInfo


@dataclass(frozen=True, slots=True)
class Batch:
    """One GetRecords page: the records, and what the service said about the shard."""

    records: Sequence[RawRecord]
    shard_end: bool = False
    millis_behind_latest: int | None = None
    child_shards: tuple[ShardInfo, ...] = field(default=())


class ShardReader(Protocol):
    """Reads one shard in order; its only state is its iterator and its last position."""

    def next_batch(self, limit: int | None = None) -> Batch:
        """Fetch the next page of at most `limit` records (default: the source's setting).

        Raises ThrottledError, TrimmedDataError or TransientError.
        """
        ...

    def close(self) -> None:
        """Release anything held; the reader is not used again."""
        ...


class StreamSource(Protocol):
    """A stream as a set of shards, each readable from a start position."""

    @property
    def stream_id(self) -> str:
        """The stream's ARN (DynamoDB Streams) or name (Kinesis), used in labels and logs."""
        ...

    def list_shards(self) -> list[ShardInfo]:
        """Every shard the stream currently reports, with lineage (paginated under the hood)."""
        ...

    def open_reader(self, shard_id: str, start: StartPosition) -> ShardReader:
        """A reader positioned at `start`."""
        ...

    @property
    def page_limit(self) -> int:
        """The most records one GetRecords may return (the service's own limit)."""
        ...
