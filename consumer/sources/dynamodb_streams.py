"""DynamoDB Streams as a StreamSource: shards from DescribeStream, pages from GetRecords."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from consumer.aws import Pacer
from consumer.aws_errors import RESOURCE_NOT_FOUND, error_code, raise_translated
from consumer.errors import ConfigError
from consumer.record import RawRecord
from consumer.sources import fast_get_records
from consumer.sources.iterator import IteratorShardReader
from consumer.sources.position import StartPosition
from consumer.sources.shard import ShardInfo

# DescribeStream allows 10 calls/s per stream; 4/s leaves room for other replicas.
DESCRIBE_STREAM_INTERVAL_SECONDS = 0.25
# GetRecords returns at most this many records per call (and 1 MB).
PAGE_LIMIT = 1000


def describe_table(dynamodb_client: Any, table_name: str, setting: str) -> dict[str, Any]:
    """DescribeTable's `Table`; a missing table is a ConfigError naming `setting`."""
    try:
        table: dict[str, Any] = dynamodb_client.describe_table(TableName=table_name)["Table"]
    except ClientError as exc:
        if error_code(exc) == RESOURCE_NOT_FOUND:
            raise ConfigError(f"{setting}: table {table_name!r} does not exist") from exc
        raise_translated(exc, f"DescribeTable {table_name}")
    return table


def stream_arn_of_table(dynamodb_client: Any, table_name: str) -> str:
    """The table's LatestStreamArn; ConfigError naming `source.table` if there is none."""
    table = describe_table(dynamodb_client, table_name, "source.table")
    stream_arn = table.get("LatestStreamArn")
    stream_enabled = table.get("StreamSpecification", {}).get("StreamEnabled", False)
    if not stream_arn or not stream_enabled:
        raise ConfigError(f"source.table: table {table_name!r} has no stream enabled")
    return str(stream_arn)


def table_of_stream_arn(stream_arn: str) -> str:
    """The table's name in a stream ARN (`arn:aws:dynamodb:R:A:table/NAME/stream/LABEL`)."""
    resource = stream_arn.split(":", 5)[-1]
    parts = resource.split("/")
    if len(parts) < 2 or parts[0] != "table":
        raise ConfigError(f"source.stream_arn: {stream_arn!r} is not a DynamoDB stream ARN")
    return parts[1]


def partition_key_attribute(dynamodb_client: Any, table_name: str) -> str:
    """The name of the table's partition (HASH) key attribute, from DescribeTable."""
    table = describe_table(dynamodb_client, table_name, "source")
    return next(str(k["AttributeName"]) for k in table["KeySchema"] if k["KeyType"] == "HASH")


class DynamoDBStreamsSource:
    """A DynamoDB table's stream, named by its ARN or found from the table name."""

    def __init__(
        self,
        streams_client: Any,
        dynamodb_client: Any = None,
        *,
        stream_arn: str | None = None,
        table_name: str | None = None,
        max_records: int = 1000,
        min_interval_seconds: float = 0.2,
        describe_page_size: int | None = None,
        describe_interval_seconds: float = DESCRIBE_STREAM_INTERVAL_SECONDS,
    ) -> None:
        if stream_arn is None:
            if table_name is None:
                raise ConfigError("source.table: set a table name or a stream ARN")
            if dynamodb_client is None:
                raise ConfigError(f"source.table: {table_name!r} needs a DynamoDB client")
            stream_arn = stream_arn_of_table(dynamodb_client, table_name)
        fast_get_records.install(streams_client)
        self._client = streams_client
        self._stream_arn = stream_arn
        # The service rejects a larger Limit; the setting allows Kinesis' 10,000 everywhere.
        self._max_records = min(max_records, PAGE_LIMIT)
        self._min_interval = min_interval_seconds
        self._describe_page_size = describe_page_size
        self._describe_pacer = Pacer(describe_interval_seconds)

    @property
    def stream_id(self) -> str:
        """The stream ARN."""
        return self._stream_arn

    @property
    def page_limit(self) -> int:
        """DynamoDB Streams GetRecords returns at most 1,000 records (and 1 MB)."""
        return PAGE_LIMIT

    def list_shards(self) -> list[ShardInfo]:
        """Every shard DescribeStream reports, following LastEvaluatedShardId page by page."""
        shards: list[ShardInfo] = []
        request: dict[str, Any] = {"StreamArn": self._stream_arn}
        if self._describe_page_size is not None:
            request["Limit"] = self._describe_page_size
        while True:
            self._describe_pacer.wait()
            try:
                description = self._client.describe_stream(**request)["StreamDescription"]
            except (BotoCoreError, ClientError) as exc:
                raise_translated(exc, f"DescribeStream {self._stream_arn}")
            shards.extend(ShardInfo.from_wire(shard) for shard in description.get("Shards", ()))
            last = description.get("LastEvaluatedShardId")
            if not last:
                return shards
            request["ExclusiveStartShardId"] = last

    def open_reader(self, shard_id: str, start: StartPosition) -> DynamoDBStreamsShardReader:
        """A reader of one shard, with an iterator already obtained at `start`."""
        return DynamoDBStreamsShardReader(
            self._client,
            self._stream_arn,
            shard_id,
            start,
            max_records=self._max_records,
            pacer=Pacer(self._min_interval),
        )


class DynamoDBStreamsShardReader(IteratorShardReader):
    """Reads one DynamoDB Streams shard; renews its iterator when it expires (after 15 min)."""

    def __init__(
        self,
        client: Any,
        stream_arn: str,
        shard_id: str,
        start: StartPosition,
        *,
        max_records: int,
        pacer: Pacer,
    ) -> None:
        self._stream_arn = stream_arn
        super().__init__(client, shard_id, start, max_records=max_records, pacer=pacer)

    def _iterator_request(self, start: StartPosition) -> dict[str, Any]:
        request: dict[str, Any] = {
            "StreamArn": self._stream_arn,
            "ShardId": self._shard_id,
            "ShardIteratorType": start.iterator_type,
        }
        if start.sequence_number is not None:
            request["SequenceNumber"] = start.sequence_number
        return request

    def _confirm_stream_exists(self) -> None:
        self._client.describe_stream(StreamArn=self._stream_arn, Limit=1)

    @staticmethod
    def _raw_record(item: dict[str, Any]) -> RawRecord:
        change = item["dynamodb"]
        created = change.get("ApproximateCreationDateTime")
        return RawRecord(
            sequence_number=change["SequenceNumber"],
            approximate_arrival=float(created) if created is not None else None,
            payload=item,
            size_bytes=int(change.get("SizeBytes", 0)),
        )
