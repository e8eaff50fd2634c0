"""What a backfill reads: one Scan segment, page by page, as synthetic INSERT change records.

Two orders:
- `item`: every item is one record, in scan order. Right for change-image read models (trip
  search), whose guards compare positions per source item, so order between items is moot.
- `aggregate`: for event stores (partition key = aggregate id, a numeric version), whose
  projection needs each aggregate's events in version order, which a Scan does not promise.
  The segment is scanned for the first event of each aggregate only (a filter on the version),
  so each aggregate is found exactly once across all segments without remembering ids; its
  events are then read with a paginated Query. When the version is the sort key, Query
  returns them in version order and memory stays at one scan page of ids plus one Query page
  of events; when the sort key is something else (an event id, a timestamp), the aggregate's
  events are collected and sorted by version, so memory is one aggregate's events.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from botocore.exceptions import BotoCoreError, ClientError

from consumer.aws_errors import RESOURCE_NOT_FOUND, error_code, raise_translated
from consumer.errors import ConfigError
from consumer.record import ChangeRecord
from consumer.sources.attribute_values import from_image

Order = Literal["item", "aggregate"]

# The sequence number of every scanned record. Its position ("0…0.0…0") is below that of any
# real stream record (sequence numbers start at 1), so a guard `stored < position` refuses a
# scanned state wherever the stream has applied anything, and a stream record always wins
# over a scanned one. Re-feeding the same scan is stale too (0 < 0 is false).
SCAN_SEQUENCE_NUMBER = "0"


@dataclass(frozen=True, slots=True)
class TableShape:
    """The source table's key attributes, and the read order they imply."""

    table: str
    partition_key: str
    sort_key: str | None
    sort_key_type: str | None
    item_count: int

    @property
    def natural_order(self) -> Order:
        """`aggregate` when the sort key is a number (a version), else `item`."""
        return "aggregate" if self.sort_key_type == "N" else "item"


@dataclass(frozen=True, slots=True)
class Chunk:
    """Records to feed; `page_end` marks the last chunk of a scan page, where `last_key` holds."""

    records: list[ChangeRecord]
    last_key: dict[str, Any] | None
    page_end: bool
    capacity: float = 0.0


def describe_table(client: Any, table: str) -> TableShape:
    """Key schema and (approximate) item count; ConfigError naming source.table if absent."""
    try:
        description = client.describe_table(TableName=table)["Table"]
    except ClientError as exc:
        if error_code(exc) == RESOURCE_NOT_FOUND:
            raise ConfigError(f"source.table: table {table!r} does not exist") from exc
        raise_translated(exc, f"DescribeTable {table}")
    types = {a["AttributeName"]: a["AttributeType"] for a in description["AttributeDefinitions"]}
    keys = {k["KeyType"]: k["AttributeName"] for k in description["KeySchema"]}
    sort_key = keys.get("RANGE")
    return TableShape(
        table=table,
        partition_key=keys["HASH"],
        sort_key=sort_key,
        sort_key_type=types.get(sort_key) if sort_key else None,
        item_count=int(description.get("ItemCount", 0)),
    )


def scanned_record(
    item: dict[str, Any], shape: TableShape, segment: int, read_at: float
) -> ChangeRecord:
    """A synthetic INSERT of an item as read by the scan, at the lowest position there is."""
    image = from_image(item)
    key_names = (shape.partition_key,) + ((shape.sort_key,) if shape.sort_key else ())
    return ChangeRecord(
        source="dynamodb",
        stream=f"backfill:{shape.table}",
        shard_id=f"segment-{segment}",
        sequence_number=SCAN_SEQUENCE_NUMBER,
        event_name="INSERT",
        keys={name: image[name] for name in key_names if name in image},
        new_image=image,
        old_image=None,
        approximate_creation_time=read_at,
        table=shape.table,
        view_type="NEW_IMAGE",
    )


def _call(what: str, call: Callable[..., dict[str, Any]], **request: Any) -> dict[str, Any]:
    try:
        return call(**request)
    except (BotoCoreError, ClientError) as exc:
        raise_translated(exc, what)


class SegmentReader:
    """Reads one segment of a parallel Scan from a LastEvaluatedKey, in the chosen order."""

    def __init__(
        self,
        client: Any,
        shape: TableShape,
        segment: int,
        total_segments: int,
        order: Order,
        page_size: int,
        first_version: int = 1,
        version_attribute: str | None = None,
    ) -> None:
        numeric_sort_key = shape.sort_key if shape.sort_key_type == "N" else None
        self._version = version_attribute or numeric_sort_key
        if order == "aggregate" and self._version is None:
            raise ConfigError(
                f"--version-attribute: table {shape.table!r} has no numeric sort key; name "
                "the attribute that holds each event's version"
            )
        self._client = client
        self._shape = shape
        self._segment = segment
        self._total = total_segments
        self._order = order
        self._page_size = page_size
        self._first_version = first_version

    def chunks(self, start_key: dict[str, Any] | None) -> Iterator[Chunk]:
        """Chunks from `start_key` (exclusive) to the segment's end; the last has last_key None."""
        key = start_key
        while True:
            page = self._scan_page(key)
            key = page.get("LastEvaluatedKey")
            capacity = float(page.get("ConsumedCapacity", {}).get("CapacityUnits", 0.0))
            items = page.get("Items", [])
            if self._order == "item":
                now = time.time()
                records = [scanned_record(i, self._shape, self._segment, now) for i in items]
                yield Chunk(records, key, page_end=True, capacity=capacity)
            else:
                yield from self._aggregates(items, key, capacity)
            if key is None:
                return

    def _scan_page(self, start_key: dict[str, Any] | None) -> dict[str, Any]:
        request: dict[str, Any] = {
            "TableName": self._shape.table,
            "Segment": self._segment,
            "TotalSegments": self._total,
            # Strongly consistent: every write acknowledged before the scan began is seen,
            # which is what the hand-off rule (consumer/backfill/handoff.py) relies on.
            "ConsistentRead": True,
            "Limit": self._page_size,
            "ReturnConsumedCapacity": "TOTAL",
        }
        if start_key is not None:
            request["ExclusiveStartKey"] = start_key
        if self._order == "aggregate":
            request["FilterExpression"] = "#v = :first"
            request["ProjectionExpression"] = "#pk"
            request["ExpressionAttributeNames"] = {
                "#v": self._version,
                "#pk": self._shape.partition_key,
            }
            request["ExpressionAttributeValues"] = {":first": {"N": str(self._first_version)}}
        what = f"Scan {self._shape.table} segment {self._segment}/{self._total}"
        return _call(what, self._client.scan, **request)

    def _aggregates(
        self, heads: list[dict[str, Any]], page_key: dict[str, Any] | None, capacity: float
    ) -> Iterator[Chunk]:
        pk = self._shape.partition_key
        pending: list[ChangeRecord] = []
        for head in heads:
            for events, used in self._events(head[pk]):
                capacity += used
                pending.extend(events)
                if len(pending) >= self._page_size:
                    yield Chunk(pending, None, page_end=False, capacity=capacity)
                    pending, capacity = [], 0.0
        yield Chunk(pending, page_key, page_end=True, capacity=capacity)

    def _events(self, aggregate_key: dict[str, Any]) -> Iterator[tuple[list[ChangeRecord], float]]:
        """One aggregate's events in ascending version order, with the capacity they cost."""
        pages = self._query(aggregate_key)
        if self._version == self._shape.sort_key:
            yield from pages
            return
        # Query returns the aggregate in sort-key order, which is not version order here.
        version = self._version
        assert version is not None  # aggregate order: __init__ refused a table without one
        events: list[ChangeRecord] = []
        used = 0.0
        for records, capacity in pages:
            events.extend(records)
            used += capacity
        events.sort(key=lambda record: (record.new_image or {}).get(version, 0))
        yield events, used

    def _query(self, aggregate_key: dict[str, Any]) -> Iterator[tuple[list[ChangeRecord], float]]:
        """One aggregate's items, a Query page at a time, in sort-key order."""
        request: dict[str, Any] = {
            "TableName": self._shape.table,
            "KeyConditionExpression": "#pk = :id",
            "ExpressionAttributeNames": {"#pk": self._shape.partition_key},
            "ExpressionAttributeValues": {":id": aggregate_key},
            "ConsistentRead": True,
            "Limit": self._page_size,
            "ReturnConsumedCapacity": "TOTAL",
        }
        while True:
            page = _call(f"Query {self._shape.table}", self._client.query, **request)
            now = time.time()
            records = [
                scanned_record(i, self._shape, self._segment, now) for i in page.get("Items", [])
            ]
            yield records, float(page.get("ConsumedCapacity", {}).get("CapacityUnits", 0.0))
            last = page.get("LastEvaluatedKey")
            if last is None:
                return
            request["ExclusiveStartKey"] = last
