"""Where a backfill remembers how far each scan segment got: a small `<application>-backfill` table.

Not the lease table: the lease taker treats every item of the lease table as a shard lease
(it would take `backfill#…` items, start a reader on a shard that does not exist, and never
report caught up), and the KCL would do the same. One item per (run, segment) holds the
segment's LastEvaluatedKey, exactly as Scan returned it, so a resumed scan starts at the next
page. A run is named by the source table and the projections it feeds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from consumer.aws_errors import RESOURCE_IN_USE, error_code, raise_translated
from consumer.errors import ConfigError

PROGRESS_KEY = "backfillKey"


@dataclass(frozen=True, slots=True)
class SegmentProgress:
    """One segment's place: the key to resume after (None = from the start), and whether done."""

    segment: int
    total_segments: int
    last_key: dict[str, Any] | None = None
    done: bool = False
    items: int = 0


def run_name(table: str, projections: list[str]) -> str:
    """The progress of one source table into one set of projections."""
    return f"{table}#{'+'.join(sorted(projections))}"


class BackfillProgressStore:
    """Segment progress items in DynamoDB; every write is a plain PutItem of the whole item."""

    def __init__(self, client: Any, table_name: str) -> None:
        self._client = client
        self.table_name = table_name

    def ensure_table(self) -> None:
        """Create the table (on demand) if absent and wait until it is usable."""
        try:
            self._client.create_table(
                TableName=self.table_name,
                AttributeDefinitions=[{"AttributeName": PROGRESS_KEY, "AttributeType": "S"}],
                KeySchema=[{"AttributeName": PROGRESS_KEY, "KeyType": "HASH"}],
                BillingMode="PAY_PER_REQUEST",
            )
        except ClientError as exc:
            # Created by an earlier run, or by a concurrent one: the same outcome.
            if error_code(exc) != RESOURCE_IN_USE:
                raise_translated(exc, f"CreateTable {self.table_name}")
        self._client.get_waiter("table_exists").wait(
            TableName=self.table_name, WaiterConfig={"Delay": 1, "MaxAttempts": 120}
        )

    def load(self, run: str, total_segments: int) -> dict[int, SegmentProgress]:
        """Stored progress of `run`; ConfigError if it was recorded with another segment count."""
        found: dict[int, SegmentProgress] = {}
        for item in self._items(run):
            progress = _from_item(item)
            if progress.total_segments != total_segments:
                raise ConfigError(
                    f"--segments: the backfill of {run} was started with "
                    f"{progress.total_segments} segments; resume with --segments "
                    f"{progress.total_segments}, or start over with --reset"
                )
            found[progress.segment] = progress
        return found

    def save(self, run: str, progress: SegmentProgress) -> None:
        """Record a segment's progress (after its page was durably applied)."""
        item: dict[str, Any] = {
            PROGRESS_KEY: {"S": f"{run}#{progress.segment}"},
            "run": {"S": run},
            "segment": {"N": str(progress.segment)},
            "totalSegments": {"N": str(progress.total_segments)},
            "done": {"BOOL": progress.done},
            "items": {"N": str(progress.items)},
            "updatedAt": {"N": str(int(time.time()))},
        }
        if progress.last_key is not None:
            item["lastEvaluatedKey"] = {"M": progress.last_key}
        try:
            self._client.put_item(TableName=self.table_name, Item=item)
        except (BotoCoreError, ClientError) as exc:
            raise_translated(exc, f"PutItem {self.table_name}")

    def reset(self, run: str) -> int:
        """Forget `run`'s progress; the number of segment items removed."""
        items = self._items(run)
        for item in items:
            self._client.delete_item(
                TableName=self.table_name, Key={PROGRESS_KEY: item[PROGRESS_KEY]}
            )
        return len(items)

    def _items(self, run: str) -> list[dict[str, Any]]:
        # The table holds a handful of items per run: a filtered scan is cheaper than an index.
        try:
            pages = self._client.get_paginator("scan").paginate(
                TableName=self.table_name,
                ConsistentRead=True,
                FilterExpression="#run = :run",
                ExpressionAttributeNames={"#run": "run"},
                ExpressionAttributeValues={":run": {"S": run}},
            )
            return [item for page in pages for item in page.get("Items", ())]
        except (BotoCoreError, ClientError) as exc:
            raise_translated(exc, f"Scan {self.table_name}")


def _from_item(item: dict[str, Any]) -> SegmentProgress:
    last = item.get("lastEvaluatedKey")
    return SegmentProgress(
        segment=int(item["segment"]["N"]),
        total_segments=int(item["totalSegments"]["N"]),
        last_key=last["M"] if last is not None else None,
        done=bool(item.get("done", {}).get("BOOL", False)),
        items=int(item.get("items", {}).get("N", "0")),
    )
