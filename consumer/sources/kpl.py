"""KPL de-aggregation: one Kinesis record holding many user records (the KPL aggregated format).

The format: 4 magic bytes, a protobuf `AggregatedRecord`, then the MD5 digest of the protobuf.
The schema is declared here and parsed by the protobuf runtime (upb, in C): measured 1.8x
aws-kinesis-agg's deaggregator (`python -m bench decode`, docs/benchmarks.md), which also
passes bad checksums through as plain records and reports an absent explicit hash key as the
first one; a consumer that dead-letters poison must not do either.
"""

from __future__ import annotations

from dataclasses import dataclass
from hashlib import md5
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message, message_factory

from consumer.errors import DecodeError

MAGIC = b"\xf3\x89\x9a\xc2"
DIGEST_SIZE = 16
_PACKAGE = "stream_projector.kpl"


@dataclass(frozen=True, slots=True)
class UserRecord:
    """One record a producer put, unpacked from an aggregate; its index is its sub-sequence."""

    partition_key: str
    explicit_hash_key: str | None
    data: bytes


def _aggregated_record_class() -> Any:
    """The KPL's messages.proto (AggregatedRecord, Record, Tag), built in a private pool.

    A private pool, so that aws-kinesis-agg's generated module (same message names) can be
    imported in the same process without a duplicate-symbol clash.
    """
    field = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="stream_projector/kpl.proto", package=_PACKAGE, syntax="proto2"
    )

    def add(name: str, *fields: tuple[int, str, int, int, str]) -> None:
        declared = proto.message_type.add(name=name)
        for number, field_name, label, kind, type_name in fields:
            entry = declared.field.add(name=field_name, number=number, label=label, type=kind)
            if type_name:
                entry.type_name = f".{_PACKAGE}.{type_name}"

    required, optional, repeated = field.LABEL_REQUIRED, field.LABEL_OPTIONAL, field.LABEL_REPEATED
    add(
        "Tag",
        (1, "key", required, field.TYPE_STRING, ""),
        (2, "value", optional, field.TYPE_STRING, ""),
    )
    add(
        "Record",
        (1, "partition_key_index", required, field.TYPE_UINT64, ""),
        (2, "explicit_hash_key_index", optional, field.TYPE_UINT64, ""),
        (3, "data", required, field.TYPE_BYTES, ""),
        (4, "tags", repeated, field.TYPE_MESSAGE, "Tag"),
    )
    add(
        "AggregatedRecord",
        (1, "partition_key_table", repeated, field.TYPE_STRING, ""),
        (2, "explicit_hash_key_table", repeated, field.TYPE_STRING, ""),
        (3, "records", repeated, field.TYPE_MESSAGE, "Record"),
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName(f"{_PACKAGE}.AggregatedRecord")
    )


_AggregatedRecord = _aggregated_record_class()


def is_aggregated(data: bytes) -> bool:
    """True when `data` starts with the KPL magic (checksum and body are checked on unpacking)."""
    return data[:4] == MAGIC


def deaggregate(data: bytes) -> list[UserRecord]:
    """The user records of a KPL aggregate, in order. DecodeError on a bad digest or protobuf."""
    if not is_aggregated(data):
        raise DecodeError("not a KPL aggregated record: the magic bytes are missing")
    if len(data) < len(MAGIC) + DIGEST_SIZE:
        raise DecodeError(f"KPL aggregated record too short ({len(data)} bytes)")
    body = data[len(MAGIC) : -DIGEST_SIZE]
    if md5(body, usedforsecurity=False).digest() != data[-DIGEST_SIZE:]:
        raise DecodeError("KPL aggregated record fails its MD5 checksum")
    try:
        aggregate = _AggregatedRecord.FromString(body)
    except message.DecodeError as exc:
        raise DecodeError(f"KPL aggregated record is not a valid AggregatedRecord: {exc}") from None
    partition_keys = aggregate.partition_key_table
    hash_keys = aggregate.explicit_hash_key_table
    try:
        return [
            UserRecord(
                partition_keys[sub.partition_key_index],
                # Absent means "none", not index 0 (a default the protobuf runtime reports).
                hash_keys[sub.explicit_hash_key_index]
                if sub.HasField("explicit_hash_key_index")
                else None,
                sub.data,
            )
            for sub in aggregate.records
        ]
    except IndexError:
        raise DecodeError("KPL sub-record points past the aggregate's key tables") from None
