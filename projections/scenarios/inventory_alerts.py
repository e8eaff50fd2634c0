"""Inventory alerts (scenario 3): product stock crossing a threshold downward, or reaching 0.

Source items are the shop's product metadata (`PK = PRODUCT#<id>`, `SK = METADATA`,
`EntityType = PRODUCT`, `Stock`, `Name`, `ProductId`) on a NEW_AND_OLD_IMAGES stream. For
each MODIFY:
- LOW_STOCK when stock crosses the threshold downward: old >= threshold > new (default 10:
  from 10 or more to 9 or less; the seed's Go handler used old > 10 >= new, one unit later);
- OUT_OF_STOCK when stock reaches zero: old > 0 >= new.
A drop from 15 to 0 raises both: they are different alerts for different people.

Each alert is published once (projections/sinks/sns.py): its identity is product id + kind +
the change's identity (DynamoDB eventID when the stream has one, which also survives the
duplicates the DynamoDB→Kinesis integration may write; else stream, shard and position).
A genuine second crossing (restocked, then sold down again) is a different change and alerts
again. Outcome per record: applied when it published, stale when its alerts had all been
published before, filtered when it means no alert. A record whose publish fails is reported
failed and the records after it are not attempted (they are retried with it), because the
alerts already published cannot be taken back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import structlog
from pydantic import Field, field_validator

from projections.api import (
    Alert,
    BaseProjection,
    ChangeRecord,
    ConfigError,
    IdempotencyStore,
    ProjectionSettings,
    Resources,
    Results,
    SnsAlertSink,
    Text,
)
from projections.idempotency import DEFAULT_TTL_SECONDS, create_table

log = structlog.get_logger(__name__)

DEFAULT_THRESHOLD = 10
DEFAULT_IDEMPOTENCY_TABLE = "stream-projector-alerts-idempotency"
LOW_STOCK, OUT_OF_STOCK = "LOW_STOCK", "OUT_OF_STOCK"


def _stock(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, Decimal) and value.is_finite():
        return int(value)
    return None


def crossings(old: int, new: int, threshold: int) -> list[str]:
    """The alert kinds a change of stock from `old` to `new` raises."""
    kinds = []
    if old >= threshold > new:
        kinds.append(LOW_STOCK)
    if old > 0 >= new:
        kinds.append(OUT_OF_STOCK)
    return kinds


def change_identity(record: ChangeRecord) -> str:
    """What makes this change unique across redeliveries: eventID, else its stream position."""
    if record.event_id:
        return record.event_id
    return f"{record.stream}/{record.shard_id}/{record.position}"


class InventoryAlertsSettings(ProjectionSettings):
    """The topic, the threshold, the idempotency table and which items are products."""

    topic_arn: str
    create_topic: bool = False
    threshold: int = Field(DEFAULT_THRESHOLD, ge=1)
    idempotency_table: Text = DEFAULT_IDEMPOTENCY_TABLE
    # Must outlive the stream's retention, or a replay older than it alerts again.
    ttl_days: int = Field(DEFAULT_TTL_SECONDS // 86400, ge=1)
    entity_type: Text = "PRODUCT"
    pk_prefix: Text = "PRODUCT#"
    sk: Text = "METADATA"
    stock_attribute: Text = "Stock"

    @field_validator("topic_arn")
    @classmethod
    def _an_arn(cls, value: str) -> str:
        if not value.startswith("arn:"):
            raise ValueError("must be an SNS topic ARN (arn:aws:sns:<region>:<account>:<name>)")
        return value


class InventoryAlertsProjection(BaseProjection):
    """Publishes LOW_STOCK and OUT_OF_STOCK alerts for product stock changes, once each."""

    settings_model = InventoryAlertsSettings

    def __init__(
        self,
        name: str,
        sink: SnsAlertSink,
        threshold: int = DEFAULT_THRESHOLD,
        entity_type: str = "PRODUCT",
        pk_prefix: str = "PRODUCT#",
        sk: str = "METADATA",
        stock_attribute: str = "Stock",
        create_topic: bool = False,
    ) -> None:
        super().__init__(name)
        self.sink = sink
        self.threshold = threshold
        self.entity_type = entity_type
        self.pk_prefix = pk_prefix
        self.sk = sk
        self.stock_attribute = stock_attribute
        self.create_topic = create_topic
        self._warned_no_old_image = False

    @classmethod
    def from_settings(
        cls, name: str, settings: InventoryAlertsSettings, resources: Resources
    ) -> InventoryAlertsProjection:
        """Built on the shared DynamoDB and SNS clients."""
        store = IdempotencyStore(
            resources.aws_client("dynamodb"),
            settings.idempotency_table,
            ttl_seconds=settings.ttl_days * 86400,
        )
        sink = SnsAlertSink(resources.aws_client("sns"), settings.topic_arn, store)
        return cls(
            name,
            sink,
            settings.threshold,
            entity_type=settings.entity_type,
            pk_prefix=settings.pk_prefix,
            sk=settings.sk,
            stock_attribute=settings.stock_attribute,
            create_topic=settings.create_topic,
        )

    def migrate(self) -> None:
        """Create the idempotency table (TTL on) and, with create_topic, the topic."""
        create_table(self.sink.idempotency.client, self.sink.idempotency.table)
        if self.create_topic:
            topic_name = self.sink.topic_arn.rsplit(":", 1)[-1]
            attributes = {"FifoTopic": "true"} if self.sink.fifo else {}
            arn = self.sink.client.create_topic(Name=topic_name, Attributes=attributes)["TopicArn"]
            if arn != self.sink.topic_arn:
                raise ConfigError(
                    f"projections.{self.name}.settings.topic_arn: created {arn}, "
                    f"configured {self.sink.topic_arn} (another account or region?)"
                )

    def alerts_for(self, record: ChangeRecord) -> list[Alert]:
        """The alerts one change raises (none for other items and other events)."""
        if record.event_name != "MODIFY" or not self._is_product(record.keys):
            return []
        new, old = record.new_image, record.old_image
        if new is None or old is None:
            self._warn_no_old_image(record)
            return []
        if new.get("EntityType") != self.entity_type:
            return []
        old_stock = _stock(old.get(self.stock_attribute))
        new_stock = _stock(new.get(self.stock_attribute))
        if old_stock is None or new_stock is None:
            return []
        product_id = new.get("ProductId") or str(record.keys["PK"])[len(self.pk_prefix) :]
        identity = change_identity(record)
        at = record.approximate_creation_time
        return [
            Alert(
                alert_id=f"{product_id}#{kind}#{identity}",
                subject=f"{kind.replace('_', ' ').title()}: {new.get('Name', product_id)}",
                message={
                    "alert": kind,
                    "product_id": product_id,
                    "name": new.get("Name"),
                    "old_stock": old_stock,
                    "new_stock": new_stock,
                    "threshold": self.threshold,
                    "table": record.table,
                    "event_id": record.event_id,
                    "sequence_number": record.sequence_number,
                    "changed_at": None
                    if at is None
                    else datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z"),
                },
                group=str(product_id),
            )
            for kind in crossings(old_stock, new_stock, self.threshold)
        ]

    def apply(self, records: Sequence[ChangeRecord]) -> Results:
        """Publish the batch's alerts in order, each once; stop at the first that fails."""
        results = Results()
        for record in records:
            alerts = self.alerts_for(record)
            if not alerts:
                results.filtered(record)
                continue
            try:
                published = self.sink.publish(alerts).published
            except Exception as error:  # reported, and classified by the pipeline like a raise
                results.failed(record, error)
                break
            if published:
                results.applied(record)
            else:
                results.stale(record)
        return results

    def _is_product(self, keys: Mapping[str, Any]) -> bool:
        pk, sk = keys.get("PK"), keys.get("SK")
        return isinstance(pk, str) and pk.startswith(self.pk_prefix) and sk == self.sk

    def _warn_no_old_image(self, record: ChangeRecord) -> None:
        # Once: the view type is a property of the stream, not of one record.
        if not self._warned_no_old_image:
            self._warned_no_old_image = True
            log.warning(
                "inventory_alerts.needs_old_and_new_images",
                projection=self.name,
                stream=record.stream,
                view_type=record.view_type,
            )
