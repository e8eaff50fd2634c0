"""KPL de-aggregation of records written by aws-kinesis-agg, a real KPL-format producer."""

from __future__ import annotations

from hashlib import md5

import pytest
from aws_kinesis_agg.aggregator import RecordAggregator

from consumer.errors import DecodeError
from consumer.sources.kpl import MAGIC, UserRecord, deaggregate, is_aggregated


def aggregate(records: list[tuple[str, bytes, str | None]]) -> bytes:
    """One KPL aggregate holding `records` (partition key, data, explicit hash key)."""
    aggregator = RecordAggregator()
    for partition_key, data, hash_key in records:
        assert aggregator.add_user_record(partition_key, data, hash_key) is None
    return aggregator.clear_and_get().get_contents()[2]


def test_user_records_come_back_in_order_with_their_keys() -> None:
    records = [(f"pk-{i % 3}", f"event {i}".encode(), None) for i in range(10)]
    records[4] = ("pk-1", b"routed", "170141183460469231731687303715884105728")
    data = aggregate(records)
    assert is_aggregated(data)
    assert deaggregate(data) == [UserRecord(pk, ehk, payload) for pk, payload, ehk in records]


def test_a_sub_record_without_an_explicit_hash_key_has_none() -> None:
    # Protobuf reports index 0 for an absent optional field; that must not become a key.
    data = aggregate([("a", b"1", "99"), ("b", b"2", None)])
    assert [r.explicit_hash_key for r in deaggregate(data)] == ["99", None]


def test_binary_and_empty_payloads_survive() -> None:
    records = [("k", bytes(range(256)), None), ("k", b"", None)]
    assert [r.data for r in deaggregate(aggregate(records))] == [bytes(range(256)), b""]


def test_a_corrupted_checksum_is_a_decode_error() -> None:
    data = bytearray(aggregate([("k", b"payload", None)]))
    data[-1] ^= 0xFF
    with pytest.raises(DecodeError, match="MD5 checksum"):
        deaggregate(bytes(data))


def test_a_corrupted_body_is_a_decode_error() -> None:
    data = bytearray(aggregate([("k", b"payload", None)]))
    data[len(MAGIC) + 3] ^= 0xFF  # the checksum no longer matches the protobuf
    with pytest.raises(DecodeError, match="MD5 checksum"):
        deaggregate(bytes(data))


def test_invalid_protobuf_with_a_valid_checksum_is_a_decode_error() -> None:
    body = b"\x0a\x05ab"  # a string field that claims 5 bytes and has 2
    with pytest.raises(DecodeError, match="not a valid AggregatedRecord"):
        deaggregate(MAGIC + body + md5(body).digest())


def test_a_sub_record_pointing_past_the_key_table_is_a_decode_error() -> None:
    body = b"\x0a\x01a" + b"\x1a\x04\x08\x05\x1a\x00"  # partition key #5 of 1
    with pytest.raises(DecodeError, match="key tables"):
        deaggregate(MAGIC + body + md5(body).digest())


@pytest.mark.parametrize("data", [b"", b"{}", MAGIC + b"short"])
def test_missing_magic_or_too_short_is_a_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        deaggregate(data)
