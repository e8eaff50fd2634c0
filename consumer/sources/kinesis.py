"""Kinesis Data Streams as a StreamSource: shards from ListShards, pages from GetRecords."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from consumer.aws import Pacer
from consumer.aws_errors import raise_translated
from consumer.errors import ConfigError
from consumer.record import RawRecord
from consumer.sources import fast_get_records
from consumer.sources.iterator import IteratorShardReader
from consumer.sources.position import StartPosition
from consumer.sources.reader import Batch
from consumer.sources.shard import ShardInfo

# GetRecords returns at most this many records per call.
PAGE_LIMIT = 10_000
# A shard serves 2 MB/s to all its GetRecords consumers together; a call past that is throttled
# (after a 10 MB page, for 5 s).
SHARD_READ_BYTES_PER_SECOND = 2_000_000


class KinesisSource:
    """A Kinesis data stream, named by its name or its ARN."""

    def __init__(
        self,
        client: Any,
        stream_name: str | None = None,
        stream_arn: str | None = None,
        max_records: int = 10000,
        min_interval_seconds: float = 0.2,
        *,
        list_page_size: int | None = None,
        read_bytes_per_second: int = SHARD_READ_BYTES_PER_SECOND,
    ) -> None:
        if stream_name is None and stream_arn is None:
            raise ConfigError("source.stream: set a Kinesis stream name or ARN")
        fast_get_records.install(client)
        self._client = client
        # Both identify the stream; the API wants exactly one of them.
        self._stream = {"StreamARN": stream_arn} if stream_arn else {"StreamName": str(stream_name)}
        self._stream_id = str(stream_name or stream_arn)
        # The service rejects a larger Limit; the setting allows Kinesis' 10,000 everywhere.
        self._max_records = min(max_records, PAGE_LIMIT)
        self._min_interval = min_interval_seconds
        self._list_page_size = list_page_size
        self._read_bytes_per_second = read_bytes_per_second

    @property
    def stream_id(self) -> str:
        """The stream's name (or its ARN when built from one)."""
        return self._stream_id

    @property
    def page_limit(self) -> int:
        """Kinesis GetRecords returns at most 10,000 records (and 10 MB)."""
        return PAGE_LIMIT

    def list_shards(self) -> list[ShardInfo]:
        """Every shard ListShards reports (open and closed), following NextToken."""
        shards: list[ShardInfo] = []
        request: dict[str, Any] = dict(self._stream)
        if self._list_page_size is not None:
            request["MaxResults"] = self._list_page_size
        while True:
            try:
                response = self._client.list_shards(**request)
            except (BotoCoreError, ClientError) as exc:
                raise_translated(exc, f"ListShards {self._stream_id}")
            shards.extend(ShardInfo.from_wire(shard) for shard in response.get("Shards", ()))
            token = response.get("NextToken")
            if not token:
                return shards
            # NextToken already names the stream; sending both is a ValidationException.
            request = {"NextToken": token}
            if self._list_page_size is not None:
                request["MaxResults"] = self._list_page_size

    def open_reader(self, shard_id: str, start: StartPosition) -> KinesisShardReader:
        """A reader of one shard, with an iterator already obtained at `start`."""
        return KinesisShardReader(
            self._client,
            self._stream,
            shard_id,
            start,
            max_records=self._max_records,
            pacer=Pacer(self._min_interval),
            read_bytes_per_second=self._read_bytes_per_second,
        )


class KinesisShardReader(IteratorShardReader):
    """Reads one Kinesis shard; renews its iterator when it expires (after 5 min)."""

    def __init__(
        self,
        client: Any,
        stream: dict[str, str],
        shard_id: str,
        start: StartPosition,
        *,
        max_records: int,
        pacer: Pacer,
        read_bytes_per_second: int = SHARD_READ_BYTES_PER_SECOND,
    ) -> None:
        self._stream = stream
        self._read_bytes_per_second = read_bytes_per_second
        super().__init__(client, shard_id, start, max_records=max_records, pacer=pacer)

    def _iterator_request(self, start: StartPosition) -> dict[str, Any]:
        request: dict[str, Any] = {
            **self._stream,
            "ShardId": self._shard_id,
            "ShardIteratorType": start.iterator_type,
        }
        if start.sequence_number is not None:
            request["StartingSequenceNumber"] = start.sequence_number
        if start.timestamp is not None:
            request["Timestamp"] = datetime.fromtimestamp(start.timestamp, tz=UTC)
        return request

    def _confirm_stream_exists(self) -> None:
        self._client.describe_stream_summary(**self._stream)

    def _batch(self, records: list[RawRecord], response: dict[str, Any]) -> Batch:
        """At the end of a closed shard: shard_end and the child shards."""
        if self._read_bytes_per_second:
            # Paced by bytes as well as by calls: a 10 MB page takes the shard's read
            # capacity for 5 s, and calling sooner would only be throttled.
            size = sum(record.size_bytes for record in records)
            self._pacer.stretch(size / self._read_bytes_per_second)
        children = tuple(
            ShardInfo(shard_id=child["ShardId"], parent_shard_ids=tuple(child["ParentShards"]))
            for child in response.get("ChildShards") or ()
        )
        return Batch(
            records=records,
            shard_end=self._iterator is None,
            millis_behind_latest=response.get("MillisBehindLatest"),
            child_shards=children,
        )

    @staticmethod
    def _raw_record(item: dict[str, Any]) -> RawRecord:
        data: str = item["Data"]
        # Kinesis bills and limits a record by its decoded data plus its partition key.
        padding = 2 if data.endswith("==") else 1 if data.endswith("=") else 0
        arrival = item.get("ApproximateArrivalTimestamp")
        return RawRecord(
            sequence_number=item["SequenceNumber"],
            approximate_arrival=float(arrival) if arrival is not None else None,
            payload=item,
            size_bytes=len(data) * 3 // 4 - padding + len(item.get("PartitionKey", "")),
        )
