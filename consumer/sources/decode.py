"""Decoders: a fetched RawRecord in the wire shape, to normalized ChangeRecords.

One decoder per source, called once per record on the hot path: payloads arrive already
parsed by orjson (DynamoDB Streams) or as base64 text (Kinesis), and nothing is copied that a
ChangeRecord does not keep.
"""

from __future__ import annotations

import binascii
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol

import orjson

from consumer.errors import ConfigError, DecodeError
from consumer.record import ChangeRecord, RawRecord
from consumer.sources.attribute_values import from_image
from consumer.sources.kpl import MAGIC, deaggregate

KinesisFormat = Literal["auto", "dynamodb", "json"]
VIEW_TYPES = frozenset({"KEYS_ONLY", "NEW_IMAGE", "OLD_IMAGE", "NEW_AND_OLD_IMAGES"})
EVENT_NAMES = frozenset({"INSERT", "MODIFY", "REMOVE"})
_NEW_VIEWS = frozenset({"NEW_IMAGE", "NEW_AND_OLD_IMAGES"})
_OLD_VIEWS = frozenset({"OLD_IMAGE", "NEW_AND_OLD_IMAGES"})
TTL_PRINCIPAL = "dynamodb.amazonaws.com"


class Decoder(Protocol):
    """Turns one fetched record into the change records it carries (several for KPL)."""

    def decode(self, raw: RawRecord, shard_id: str) -> list[ChangeRecord]:
        """The change records in `raw`, in order. Raises DecodeError (poison) when malformed."""
        ...


def table_from_stream_arn(stream_arn: str) -> str:
    """`arn:aws:dynamodb:<region>:<account>:table/<Table>/stream/<label>` -> `<Table>`."""
    parts = stream_arn.split(":", 5)
    resource = parts[5].split("/") if len(parts) == 6 else []
    if (
        len(parts) != 6
        or parts[0] != "arn"
        or parts[2] != "dynamodb"
        or len(resource) < 4
        or resource[0] != "table"
        or resource[2] != "stream"
        or not resource[1]
    ):
        raise ConfigError(f"stream_arn is not a DynamoDB stream ARN: {stream_arn!r}")
    return resource[1]


def decoder_for(
    kind: str, stream: str, fmt: KinesisFormat = "auto", key_fields: Sequence[str] = ()
) -> Decoder:
    """The decoder of a stream as `[source]` configures it (a stream ARN or a Kinesis name)."""
    if kind == "dynamodb":
        return DynamoDBStreamsDecoder(stream)
    return KinesisDecoder(stream, fmt=fmt, key_fields=key_fields)


class DynamoDBStreamsDecoder:
    """Decodes DynamoDB Streams records (GetRecords JSON, one record's object per payload)."""

    def __init__(self, stream_arn: str) -> None:
        self.stream_arn = stream_arn
        self.table = table_from_stream_arn(stream_arn)

    def decode(self, raw: RawRecord, shard_id: str) -> list[ChangeRecord]:
        """One ChangeRecord for one stream record."""
        payload = raw.payload
        change, event_name, keys = _change_parts(payload, "DynamoDB stream record")
        view_type = change.get("StreamViewType")
        new_image = old_image = None
        # An image is decoded only where the view type carries one (KEYS_ONLY: none at all).
        if view_type is None or view_type in _NEW_VIEWS:
            image = change.get("NewImage")
            if image is not None:
                new_image = _image(image, "NewImage")
        if view_type is None or view_type in _OLD_VIEWS:
            image = change.get("OldImage")
            if image is not None:
                old_image = _image(image, "OldImage")
        if view_type is not None and view_type not in VIEW_TYPES:
            raise DecodeError(f"DynamoDB stream record has an unknown view type {view_type!r}")
        if view_type is not None:
            _require_images(event_name, view_type, new_image, old_image, "DynamoDB stream record")
        return [
            ChangeRecord(
                source="dynamodb",
                stream=self.stream_arn,
                shard_id=shard_id,
                sequence_number=raw.sequence_number,
                event_name=event_name,
                keys=_image(keys, "Keys"),
                new_image=new_image,
                old_image=old_image,
                approximate_creation_time=_seconds(change.get("ApproximateCreationDateTime")),
                event_id=payload.get("eventID", ""),
                table=self.table,
                view_type=view_type,
                ttl_expiry=event_name == "REMOVE" and _is_ttl(payload.get("userIdentity")),
                size_bytes=change.get("SizeBytes") or raw.size_bytes,
                raw=payload,
            )
        ]


class KinesisDecoder:
    """Decodes Kinesis records: DynamoDB change records (the Kinesis integration), plain JSON
    application events, and KPL aggregates of either.

    `fmt` names the user records' format: "dynamodb" (integration records only), "json"
    (any JSON object), or "auto" (integration when the object has "dynamodb" and "eventName",
    plain JSON otherwise). KPL aggregation is recognized by its magic bytes in every format.
    Plain events are keyed by `key_fields` of the object when given, else by partition key.
    """

    def __init__(
        self,
        stream_name: str,
        fmt: KinesisFormat = "auto",
        key_fields: Sequence[str] | None = None,
    ) -> None:
        if fmt not in ("auto", "dynamodb", "json"):
            raise ConfigError(f"kinesis format must be auto, dynamodb or json, not {fmt!r}")
        self.stream_name = stream_name
        self.fmt = fmt
        self.key_fields = tuple(key_fields) if key_fields else None

    def decode(self, raw: RawRecord, shard_id: str) -> list[ChangeRecord]:
        """The change records in one Kinesis record: one, or one per KPL user record."""
        payload = raw.payload
        try:
            data = payload["Data"]
            partition_key = payload.get("PartitionKey")
        except (KeyError, TypeError) as exc:
            raise DecodeError(f"Kinesis record lacks {_missing(exc)}") from None
        if type(data) is str:
            try:
                data = binascii.a2b_base64(data, strict_mode=True)
            except binascii.Error as exc:
                raise DecodeError(f"Kinesis record Data is not valid base64: {exc}") from None
        elif not isinstance(data, bytes | bytearray | memoryview):
            raise DecodeError(f"Kinesis record Data is a {type(data).__name__}, not base64 text")
        if data[:4] != MAGIC:
            return [self._user_record(raw, shard_id, data, partition_key, 0)]
        return [
            self._user_record(raw, shard_id, sub.data, sub.partition_key, index)
            for index, sub in enumerate(deaggregate(bytes(data)))
        ]

    def _user_record(
        self, raw: RawRecord, shard_id: str, data: bytes, partition_key: str | None, sub: int
    ) -> ChangeRecord:
        try:
            body = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise DecodeError(_json_problem(data, exc)) from None
        if type(body) is not dict:
            raise DecodeError(f"Kinesis record is JSON but not an object: a {type(body).__name__}")
        fmt = self.fmt
        if fmt == "dynamodb" or (fmt == "auto" and "dynamodb" in body and "eventName" in body):
            return self._integration(raw, shard_id, body, partition_key, sub)
        return self._plain(raw, shard_id, body, partition_key, sub, len(data))

    def _integration(
        self,
        raw: RawRecord,
        shard_id: str,
        body: dict[str, Any],
        partition_key: str | None,
        sub: int,
    ) -> ChangeRecord:
        """A DynamoDB change record that the Kinesis Data Streams integration wrote."""
        change, event_name, keys = _change_parts(body, "DynamoDB change record in Kinesis")
        new_image = change.get("NewImage")
        old_image = change.get("OldImage")
        # The integration carries the new image of every INSERT and MODIFY.
        if event_name != "REMOVE" and new_image is None:
            raise DecodeError(f"DynamoDB change record in Kinesis: {event_name} lacks NewImage")
        return ChangeRecord(
            source="kinesis",
            stream=self.stream_name,
            shard_id=shard_id,
            # The Kinesis sequence number orders records within the shard, so guards use it.
            sequence_number=raw.sequence_number,
            sub_sequence_number=sub,
            event_name=event_name,
            keys=_image(keys, "Keys"),
            new_image=None if new_image is None else _image(new_image, "NewImage"),
            old_image=None if old_image is None else _image(old_image, "OldImage"),
            approximate_creation_time=_integration_time(change),
            event_id=body.get("eventID", ""),
            table=body.get("tableName"),
            ttl_expiry=event_name == "REMOVE" and _is_ttl(body.get("userIdentity")),
            partition_key=partition_key,
            size_bytes=change.get("SizeBytes") or raw.size_bytes,
            raw=raw.payload,
        )

    def _plain(
        self,
        raw: RawRecord,
        shard_id: str,
        body: dict[str, Any],
        partition_key: str | None,
        sub: int,
        size: int,
    ) -> ChangeRecord:
        """An application's own JSON event: an INSERT whose new image is the object."""
        if self.key_fields is None:
            keys: dict[str, Any] = {"partition_key": partition_key}
        else:
            try:
                keys = {name: body[name] for name in self.key_fields}
            except KeyError as exc:
                raise DecodeError(f"JSON event lacks the key field {exc.args[0]!r}") from None
        return ChangeRecord(
            source="kinesis",
            stream=self.stream_name,
            shard_id=shard_id,
            sequence_number=raw.sequence_number,
            sub_sequence_number=sub,
            event_name="INSERT",
            keys=keys,
            new_image=body,
            old_image=None,
            approximate_creation_time=_seconds(raw.approximate_arrival),
            partition_key=partition_key,
            size_bytes=size,
            raw=raw.payload,
        )


def _change_parts(record: Any, what: str) -> tuple[dict[str, Any], Any, Any]:
    """The `dynamodb` object, eventName and Keys every DynamoDB change record must have."""
    try:
        change = record["dynamodb"]
        event_name = record["eventName"]
        keys = change["Keys"]
    except (KeyError, TypeError) as exc:
        raise DecodeError(f"{what} lacks {_missing(exc)}") from None
    if event_name not in EVENT_NAMES:
        raise DecodeError(f"{what} has an unknown eventName {event_name!r}")
    return change, event_name, keys


def _require_images(
    event_name: str, view_type: str, new_image: Any, old_image: Any, what: str
) -> None:
    """An image the view type promises for this event must be there (KEYS_ONLY has none)."""
    if view_type in _NEW_VIEWS and event_name != "REMOVE" and new_image is None:
        raise DecodeError(f"{what}: {event_name} with view type {view_type} lacks NewImage")
    if view_type in _OLD_VIEWS and event_name != "INSERT" and old_image is None:
        raise DecodeError(f"{what}: {event_name} with view type {view_type} lacks OldImage")


def _image(image: Any, name: str) -> dict[str, Any]:
    try:
        return from_image(image)
    except DecodeError as exc:
        raise DecodeError(f"{name}: {exc}") from None


def _is_ttl(identity: Any) -> bool:
    """A REMOVE made by the TTL service, not by a user (documented identity, either casing)."""
    if type(identity) is not dict:
        return False
    kind = identity.get("Type", identity.get("type"))
    principal = identity.get("PrincipalId", identity.get("principalId"))
    return kind == "Service" and principal == TTL_PRINCIPAL


def _seconds(value: Any) -> float | None:
    if value is None:
        return None
    if type(value) is float or type(value) is int:
        return float(value)
    raise DecodeError(f"a timestamp must be epoch seconds, got {value!r:.40}")


def _integration_time(change: Mapping[str, Any]) -> float | None:
    """The integration writes epoch milliseconds, or microseconds when so configured."""
    value = change.get("ApproximateCreationDateTime")
    if value is None:
        return None
    if type(value) is not int and type(value) is not float:
        raise DecodeError(f"ApproximateCreationDateTime must be a number, got {value!r:.40}")
    if change.get("ApproximateCreationDateTimePrecision") == "MICROSECOND":
        return value / 1_000_000
    return value / 1_000


def _json_problem(data: bytes, exc: orjson.JSONDecodeError) -> str:
    try:
        bytes(data).decode("utf-8")
    except UnicodeDecodeError as bad:
        return f"Kinesis record Data is not UTF-8 (byte {bad.start}) and neither JSON nor KPL"
    return f"Kinesis record Data is not valid JSON: {exc}"


def _missing(exc: KeyError | TypeError) -> str:
    if isinstance(exc, KeyError):
        return f"the field {exc.args[0]!r}"
    return "the expected JSON object shape"
