"""Records as Lambda and the KCL MultiLangDaemon hand them over, turned into RawRecords.

The decoders read the GetRecords wire shapes; these adapters only rename and move fields, so a
record decodes the same whichever runtime delivered it. `decode_records` then builds the
FetchedBatch the Pipeline applies, keeping malformed records aside for the dead-letter queue.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from consumer.errors import DecodeError
from consumer.pipeline.prefetch import FetchedBatch
from consumer.record import RawRecord, SourceKind
from consumer.sources.decode import Decoder

# Lambda's DynamoDB events carry no shard id; dead letters and logs say so instead.
UNKNOWN_SHARD = "unknown"


@dataclass(frozen=True, slots=True)
class SourcedRecords:
    """Consecutive records of one Lambda event from the same stream and shard."""

    kind: SourceKind
    stream: str
    shard_id: str
    raws: list[RawRecord]


def kinesis_stream_name(stream_arn: str) -> str:
    """`arn:aws:kinesis:<region>:<account>:stream/<name>` -> `<name>` (the ARN if no match)."""
    _, _, resource = stream_arn.rpartition(":")
    kind, _, name = resource.partition("/")
    return name if kind == "stream" and name else stream_arn


def raw_from_lambda_dynamodb(record: Mapping[str, Any]) -> RawRecord:
    """A Lambda DynamoDB Streams record is the GetRecords record plus event source fields."""
    change = record.get("dynamodb")
    change = change if isinstance(change, Mapping) else {}
    created = change.get("ApproximateCreationDateTime")
    return RawRecord(
        sequence_number=str(change.get("SequenceNumber") or ""),
        approximate_arrival=float(created) if isinstance(created, int | float) else None,
        payload=record,
        size_bytes=int(change.get("SizeBytes") or 0),
    )


def raw_from_lambda_kinesis(record: Mapping[str, Any]) -> RawRecord:
    """Lambda's `kinesis` object in camelCase -> the GetRecords shape the decoder reads."""
    kinesis = record.get("kinesis")
    kinesis = kinesis if isinstance(kinesis, Mapping) else {}
    arrival = kinesis.get("approximateArrivalTimestamp")
    payload: dict[str, Any] = {
        "SequenceNumber": kinesis.get("sequenceNumber"),
        "ApproximateArrivalTimestamp": arrival,
        "PartitionKey": kinesis.get("partitionKey"),
    }
    if "data" in kinesis:
        payload["Data"] = kinesis["data"]
    return RawRecord(
        sequence_number=str(kinesis.get("sequenceNumber") or ""),
        approximate_arrival=float(arrival) if isinstance(arrival, int | float) else None,
        payload=payload,
    )


def raw_from_kcl(record: Mapping[str, Any]) -> RawRecord:
    """A MultiLang `record` (base64 data, arrival in epoch millis) -> the GetRecords shape."""
    millis = record.get("approximateArrivalTimestamp")
    arrival = millis / 1000 if isinstance(millis, int | float) else None
    payload: dict[str, Any] = {
        "SequenceNumber": record.get("sequenceNumber"),
        "ApproximateArrivalTimestamp": arrival,
        "PartitionKey": record.get("partitionKey"),
        "SubSequenceNumber": record.get("subSequenceNumber") or 0,
    }
    if "data" in record:
        payload["Data"] = record["data"]
    return RawRecord(
        sequence_number=str(record.get("sequenceNumber") or ""),
        approximate_arrival=arrival,
        payload=payload,
    )


def lambda_source(record: Mapping[str, Any]) -> tuple[SourceKind, str, str]:
    """(kind, stream, shard) of a Lambda stream record; stream is "" when the record names none.

    DynamoDB records name their stream by ARN and carry no shard; Kinesis records name the
    shard in eventID (`shardId-…:<sequence>`). A test event without eventSource is recognized
    by its `dynamodb` or `kinesis` object.
    """
    source = record.get("eventSource")
    arn = str(record.get("eventSourceARN") or "")
    if source == "aws:kinesis" or (source is None and "kinesis" in record):
        shard, _, _ = str(record.get("eventID") or "").partition(":")
        return "kinesis", kinesis_stream_name(arn), shard or UNKNOWN_SHARD
    return "dynamodb", arn, UNKNOWN_SHARD


def group_lambda_records(
    records: Sequence[Mapping[str, Any]], default_stream: str = ""
) -> list[SourcedRecords]:
    """Split an event's records into runs of one source, keeping their order.

    An event source mapping delivers one shard per invocation, so this is one run in practice;
    a hand-made test event may lack eventSourceARN, and then `default_stream` names it.
    """
    runs: list[SourcedRecords] = []
    for record in records:
        kind, stream, shard = lambda_source(record)
        stream = stream or default_stream
        adapt = raw_from_lambda_kinesis if kind == "kinesis" else raw_from_lambda_dynamodb
        raw = adapt(record)
        last = runs[-1] if runs else None
        if last is not None and (last.kind, last.stream, last.shard_id) == (kind, stream, shard):
            last.raws.append(raw)
        else:
            runs.append(SourcedRecords(kind, stream, shard, [raw]))
    return runs


def decode_records(
    decoder: Decoder | None,
    shard_id: str,
    raws: Sequence[RawRecord],
    sub_sequences: Sequence[int] | None = None,
) -> FetchedBatch:
    """Decode in order; a record that cannot be decoded (or ordered) is kept aside, not dropped.

    `sub_sequences` come from the KCL, which de-aggregates KPL records itself: each user record
    keeps its own sub-sequence number, so guards order the user records of one aggregate.
    A record without a sequence number cannot be guarded (docs/design.md, invariant 4), so it is
    undecodable, and so is every record when there is no decoder (no stream to decode it for).
    """
    batch = FetchedBatch(records=[])
    for index, raw in enumerate(raws):
        try:
            if not raw.sequence_number:
                raise DecodeError("record has no sequence number, so it cannot be ordered")
            if decoder is None:
                raise DecodeError("record names no stream it can be decoded for")
            decoded = decoder.decode(raw, shard_id)
        except DecodeError as exc:
            batch.undecodable.append((raw, exc))
            continue
        sub = sub_sequences[index] if sub_sequences is not None else 0
        if sub and len(decoded) == 1:
            decoded = [dataclasses.replace(decoded[0], sub_sequence_number=sub)]
        batch.records.extend(decoded)
    if raws:
        batch.last_sequence = raws[-1].sequence_number
        if sub_sequences is not None:
            batch.last_sub_sequence = sub_sequences[-1]
        elif batch.records and batch.records[-1].sequence_number == batch.last_sequence:
            batch.last_sub_sequence = batch.records[-1].sub_sequence_number
    return batch
