"""The normalized change record every source decodes into and every projection reads."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

EventName = Literal["INSERT", "MODIFY", "REMOVE"]
SourceKind = Literal["dynamodb", "kinesis"]

# Kinesis sequence numbers reach 56 digits and DynamoDB Numbers stop at 38, so guards store
# positions as fixed-width digit strings, which compare correctly as strings everywhere
# (DynamoDB condition expressions, PostgreSQL text, Python).
POSITION_WIDTH = 64
SUB_SEQUENCE_WIDTH = 10


def position_of(sequence_number: str, sub_sequence_number: int = 0) -> str:
    """A sortable string for (sequence, sub-sequence): zero-padded, so string order is numeric."""
    return (
        sequence_number.zfill(POSITION_WIDTH)
        + "."
        + str(sub_sequence_number).zfill(SUB_SEQUENCE_WIDTH)
    )


# Not frozen: a frozen dataclass sets each field through object.__setattr__, which made building
# a ChangeRecord (one per record, on the hot path) about 2 us slower (bench/records_bench.py).
# Records are read-only by contract all the same: one object goes to every projection, to each
# retry and to its dead letter, so a projection that changed it would change what they see.
@dataclass(slots=True)
class ChangeRecord:
    """One item-level change, whatever the stream and wire format it came from; read-only.

    Images hold plain Python values: str, int (integral numbers), Decimal (others), bytes,
    bool, None, list, dict, set/frozenset for DynamoDB sets. `raw` is the record exactly as
    received, kept whole so a dead letter can carry it.
    """

    source: SourceKind
    stream: str
    shard_id: str
    sequence_number: str
    event_name: EventName
    keys: Mapping[str, Any]
    new_image: Mapping[str, Any] | None
    old_image: Mapping[str, Any] | None
    approximate_creation_time: float | None
    event_id: str = ""
    table: str | None = None
    view_type: str | None = None
    ttl_expiry: bool = False
    sub_sequence_number: int = 0
    partition_key: str | None = None
    size_bytes: int = 0
    raw: Any = None

    @property
    def position(self) -> str:
        """The record's place in its stream as a fixed-width string (see `position_of`)."""
        return position_of(self.sequence_number, self.sub_sequence_number)

    @property
    def image(self) -> Mapping[str, Any] | None:
        """The newest image there is: NEW_IMAGE for INSERT/MODIFY, OLD_IMAGE for REMOVE."""
        return self.new_image if self.new_image is not None else self.old_image


@dataclass(slots=True)  # not frozen, like ChangeRecord, and read-only the same way
class RawRecord:
    """A record as fetched from a shard, before decoding: what the shard loop checkpoints by."""

    sequence_number: str
    approximate_arrival: float | None
    payload: Any
    size_bytes: int = 0
