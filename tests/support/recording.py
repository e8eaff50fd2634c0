"""A projection for tests: records every change it applies, with when and by whom.

Writes one item per (partition key, position) into a DynamoDB table, so it is idempotent like
a real projection, and a test can check that nothing was lost and in what order shards ran.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

from consumer.record import ChangeRecord
from projections.projection import BaseProjection, Resources
from projections.results import Outcome, Results
from projections.settings import ProjectionSettings


def create_recording_table(client: Any, table: str) -> None:
    """The table the projection writes to: key (record_key, position)."""
    client.create_table(
        TableName=table,
        KeySchema=[
            {"AttributeName": "record_key", "KeyType": "HASH"},
            {"AttributeName": "position", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "record_key", "AttributeType": "S"},
            {"AttributeName": "position", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )


def recorded(client: Any, table: str) -> list[dict[str, str]]:
    """Every recorded change as a flat dict of strings."""
    items: list[dict[str, str]] = []
    kwargs: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
    while True:
        page = client.scan(**kwargs)
        items.extend({k: next(iter(v.values())) for k, v in item.items()} for item in page["Items"])
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


class RecordingSettings(ProjectionSettings):
    """`table` (required) and `fail_on` (an optional marker value)."""

    table: str
    fail_on: str = ""


class RecordingProjection(BaseProjection):
    """Puts one item per record; `fail_on` values in the image make it raise (poison tests)."""

    settings_model = RecordingSettings

    def __init__(self, name: str, client: Any, table: str, fail_on: str = "") -> None:
        super().__init__(name)
        self._client = client
        self._table = table
        self._fail_on = fail_on
        self._worker = os.environ.get("STREAM_PROJECTOR_WORKER_ID", str(os.getpid()))

    @classmethod
    def from_settings(
        cls, name: str, settings: RecordingSettings, resources: Resources
    ) -> RecordingProjection:
        """Built on the shared DynamoDB client."""
        return cls(name, resources.aws_client("dynamodb"), settings.table, settings.fail_on)

    def apply(self, records: Sequence[ChangeRecord]) -> Results:
        """Record each change in order; raise on a record carrying the failure marker."""
        for record in records:
            image = record.image or {}
            if self._fail_on and image.get("marker") == self._fail_on:
                raise ValueError(f"poison marker in record {record.sequence_number}")
            key = str(image.get("key", record.partition_key or record.keys))
            self._client.put_item(
                TableName=self._table,
                Item={
                    "record_key": {"S": key},
                    "position": {"S": record.position},
                    "shard_id": {"S": record.shard_id},
                    "n": {"S": str(image.get("n", ""))},
                    "worker": {"S": self._worker},
                    "applied_ns": {"S": str(time.time_ns())},
                },
            )
        return Results.of(records, Outcome.APPLIED)
