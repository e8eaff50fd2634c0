"""Kinesis Data Streams as a StreamSource: shards from ListShards, pages from GetRecords."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from consumer import fast_get_records
from consumer.aws import Pacer, error_code, raise_translated
from consumer.errors import ConfigError, ExpiredIteratorError, TrimmedDataError
from consumer.position import StartPosition
from consumer.record import RawRecord
from consumer.shard import ShardInfo
from consumer.shard_reader import Batch

RESOURCE_NOT_FOUND_CODE = "ResourceNotFoundException"


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
    ) -> None:
        if stream_name is None and stream_arn is None:
            raise ConfigError("source.stream: set a Kinesis stream name or ARN")
        fast_get_records.install(client)
        self._client = client
        # Both identify the stream; the API wants exactly one of them.
        self._stream = {"StreamARN": stream_arn} if stream_arn else {"StreamName": stream_name}
        self._stream_id = str(stream_name or stream_arn)
        self._max_records = max_records
        self._min_interval = min_interval_seconds
        self._list_page_size = list_page_size

    @property
    def stream_id(self) -> str:
        """The stream's name (or its ARN when built from one)."""
        return self._stream_id

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
            shards.extend(_shard_info(shard) for shard in response.get("Shards", ()))
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
        )


def _shard_info(shard: dict[str, Any]) -> ShardInfo:
    numbers = shard.get("SequenceNumberRange", {})
    parents = tuple(
        parent
        for parent in (shard.get("ParentShardId"), shard.get("AdjacentParentShardId"))
        if parent
    )
    return ShardInfo(
        shard_id=shard["ShardId"],
        parent_shard_ids=parents,
        starting_sequence_number=numbers.get("StartingSequenceNumber"),
        ending_sequence_number=numbers.get("EndingSequenceNumber"),
    )


class KinesisShardReader:
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
    ) -> None:
        self._client = client
        self._stream = stream
        self._shard_id = shard_id
        self._start = start
        self._max_records = max_records
        self._pacer = pacer
        self._last_sequence_number: str | None = None
        self._iterator: str | None = self._get_iterator(start)

    @property
    def last_sequence_number(self) -> str | None:
        """The sequence number of the last record returned, if any."""
        return self._last_sequence_number

    def next_batch(self) -> Batch:
        """The next page; at the end of a closed shard, shard_end and the child shards."""
        if self._iterator is None:
            return Batch(records=(), shard_end=True)
        response = self._get_records_renewing()
        records = [_raw_record(item) for item in response.get("Records", ())]
        if records:
            self._last_sequence_number = records[-1].sequence_number
        self._iterator = response.get("NextShardIterator")
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

    def close(self) -> None:
        """Nothing to release: an iterator simply expires."""
        self._iterator = None

    def _get_records_renewing(self) -> dict[str, Any]:
        # One renewal per call: an iterator that expires again at once is not a stale iterator.
        try:
            return self._get_records()
        except ExpiredIteratorError:
            self._iterator = self._get_iterator(self._resume_position())
            return self._get_records()

    def _get_records(self) -> dict[str, Any]:
        self._pacer.wait()
        try:
            response: dict[str, Any] = self._client.get_records(
                ShardIterator=self._iterator, Limit=self._max_records
            )
        except (BotoCoreError, ClientError) as exc:
            raise_translated(exc, f"GetRecords {self._shard_id}")
        return response

    def _resume_position(self) -> StartPosition:
        # With nothing read yet, the original start is still right: no record was skipped.
        if self._last_sequence_number is None:
            return self._start
        return StartPosition.after(self._last_sequence_number)

    def _get_iterator(self, start: StartPosition) -> str | None:
        """An iterator at `start`; None when the whole shard is past retention (nothing left)."""
        request: dict[str, Any] = {
            **self._stream,
            "ShardId": self._shard_id,
            "ShardIteratorType": start.iterator_type,
        }
        if start.sequence_number is not None:
            request["StartingSequenceNumber"] = start.sequence_number
        if start.timestamp is not None:
            request["Timestamp"] = datetime.fromtimestamp(start.timestamp, tz=UTC)
        what = f"GetShardIterator {self._shard_id} {start.iterator_type}"
        try:
            return str(self._client.get_shard_iterator(**request)["ShardIterator"])
        except ClientError as exc:
            # A closed shard older than the retention period is deleted with its records.
            if error_code(exc) == RESOURCE_NOT_FOUND_CODE:
                if start.sequence_number is not None:
                    raise TrimmedDataError(f"{what}: the shard no longer exists") from exc
                # A missing stream is a configuration error, not an ended shard: this raises.
                self._client.describe_stream_summary(**self._stream)
                return None
            raise_translated(exc, what)
        except BotoCoreError as exc:
            raise_translated(exc, what)


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
