"""A projection for dead-letter tests: the last change per key wins, guarded by stream
position; until `fixed`, values starting with "bug" raise (a bad deploy)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from consumer.record import ChangeRecord
from projections.projection import BaseProjection, Resources
from projections.results import Results
from projections.settings import ProjectionSettings


class GuardedItemsSettings(ProjectionSettings):
    """The table, and whether the deploy is fixed (no "bug" value raises)."""

    table: str
    fixed: bool


class GuardedItems(BaseProjection):
    """Puts {key, value, position} unless the stored position is newer (stale)."""

    settings_model = GuardedItemsSettings

    def __init__(self, name: str, settings: GuardedItemsSettings, resources: Resources) -> None:
        super().__init__(name)
        self._client = resources.aws_client("dynamodb")
        self._table = settings.table
        self._fixed = settings.fixed

    def apply(self, records: Sequence[ChangeRecord]) -> Results:
        """Guarded puts, in order; raises on a "bug" value while not fixed."""
        results = Results()
        for record in records:
            image = record.new_image or {}
            if not self._fixed and str(image["value"]).startswith("bug"):
                raise ValueError(f"cannot handle {image['value']}")
            try:
                self._client.put_item(
                    TableName=self._table,
                    Item={
                        "key": {"S": image["key"]},
                        "value": {"S": image["value"]},
                        "position": {"S": record.position},
                    },
                    ConditionExpression="attribute_not_exists(#k) OR #p < :p",
                    ExpressionAttributeNames={"#k": "key", "#p": "position"},
                    ExpressionAttributeValues={":p": {"S": record.position}},
                )
                results.applied(record)
            except self._client.exceptions.ConditionalCheckFailedException:
                results.stale(record)
        return results


def create_table(dynamodb: Any, table: str) -> None:
    """The table GuardedItems writes: key `key`."""
    dynamodb.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "key", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "key", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )


def table_state(dynamodb: Any, table: str) -> dict[str, str]:
    """key -> value of every item."""
    items = dynamodb.scan(TableName=table, ConsistentRead=True)["Items"]
    return {item["key"]["S"]: item["value"]["S"] for item in items}
