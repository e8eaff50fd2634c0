"""GetRecords over a shard iterator, shared by both sources: pacing, renewal, retention.

What differs between DynamoDB Streams and Kinesis (the GetShardIterator request, the record
shape, what a page says beyond its records) is left to a subclass.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from consumer.aws import Pacer
from consumer.aws_errors import RESOURCE_NOT_FOUND, error_code, raise_translated
from consumer.errors import ExpiredIteratorError, TrimmedDataError
from consumer.record import RawRecord
from consumer.sources.position import StartPosition
from consumer.sources.reader import Batch


class IteratorShardReader:
    """Reads one shard page by page; renews an expired iterator after the last record read."""

    def __init__(
        self, client: Any, shard_id: str, start: StartPosition, *, max_records: int, pacer: Pacer
    ) -> None:
        self._client = client
        self._shard_id = shard_id
        self._start = start
        self._max_records = max_records
        self._pacer = pacer
        self._last_sequence_number: str | None = None
        self._iterator: str | None = self._get_iterator(start)

    # -- what a source supplies ---------------------------------------------------------------

    def _iterator_request(self, start: StartPosition) -> dict[str, Any]:
        """GetShardIterator's arguments for `start`."""
        raise NotImplementedError

    def _confirm_stream_exists(self) -> None:
        """Raise if the stream itself is gone (then a missing shard is no ended shard)."""
        raise NotImplementedError

    @staticmethod
    def _raw_record(item: dict[str, Any]) -> RawRecord:
        """One wire record as a RawRecord."""
        raise NotImplementedError

    def _batch(self, records: list[RawRecord], response: dict[str, Any]) -> Batch:
        """The page as a Batch; Kinesis adds millis-behind-latest and the child shards."""
        return Batch(records=records, shard_end=self._iterator is None)

    # -- the shared part ----------------------------------------------------------------------

    @property
    def last_sequence_number(self) -> str | None:
        """The sequence number of the last record returned, if any."""
        return self._last_sequence_number

    def next_batch(self, limit: int | None = None) -> Batch:
        """The next page; shard_end once GetRecords returns no NextShardIterator."""
        if self._iterator is None:
            return Batch(records=(), shard_end=True)
        response = self._get_records_renewing(limit or self._max_records)
        records = [self._raw_record(item) for item in response.get("Records", ())]
        if records:
            self._last_sequence_number = records[-1].sequence_number
        self._iterator = response.get("NextShardIterator")
        return self._batch(records, response)

    def close(self) -> None:
        """Nothing to release: an iterator simply expires."""
        self._iterator = None

    def _get_records_renewing(self, limit: int) -> dict[str, Any]:
        # One renewal per call: an iterator that expires again at once is not a stale iterator.
        try:
            return self._get_records(limit)
        except ExpiredIteratorError:
            self._iterator = self._get_iterator(self._resume_position())
            return self._get_records(limit)

    def _get_records(self, limit: int) -> dict[str, Any]:
        self._pacer.wait()
        try:
            response: dict[str, Any] = self._client.get_records(
                ShardIterator=self._iterator, Limit=limit
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
        what = f"GetShardIterator {self._shard_id} {start.iterator_type}"
        try:
            response = self._client.get_shard_iterator(**self._iterator_request(start))
            return str(response["ShardIterator"])
        except ClientError as exc:
            # A closed shard older than the retention period is deleted with its records:
            # from a sequence number that is data lost upstream; from a sentinel, an ended shard.
            if error_code(exc) == RESOURCE_NOT_FOUND:
                if start.sequence_number is not None:
                    raise TrimmedDataError(f"{what}: the shard no longer exists") from exc
                self._confirm_stream_exists()
                return None
            raise_translated(exc, what)
        except BotoCoreError as exc:
            raise_translated(exc, what)
