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

from consumer.errors import ConfigError
from consumer.record import ChangeRecord
from projections.idempotency import DEFAULT_TTL_SECONDS, IdempotencyStore, create_table
from projections.projection import Resources
from projections.results import Results
from projections.sinks.sns import Alert, SnsAlertSink

log = structlog.get_logger(__name__)

DEFAULT_THRESHOLD = 10
DEFAULT_IDEMPOTENCY_TABLE = "stream-projector-alerts-idempotency"
LOW_STOCK, OUT_OF_STOCK = "LOW_STOCK", "OUT_OF_STOCK"
SETTINGS = frozenset(
    {
        "topic_arn",
        "create_topic",
        "threshold",
        "idempotency_table",
        "ttl_days",
        "entity_type",
        "pk_prefix",
        "sk",
        "stock_attribute",
    }
)


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


class InventoryAlertsProjection:
    """Publishes LOW_STOCK and OUT_OF_STOCK alerts for product stock changes, once each."""

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
        self.name = name
        self.sink = sink
        self.threshold = threshold
        self.entity_type = entity_type
        self.pk_prefix = pk_prefix
        self.sk = sk
        self.stock_attribute = stock_attribute
        self.create_topic = create_topic
        self._warned_no_old_image = False

    @classmethod
    def from_config(
        cls, name: str, settings: Mapping[str, Any], resources: Resources
    ) -> InventoryAlertsProjection:
        """Settings: topic_arn (required), create_topic, threshold, idempotency_table, ttl_days,
        entity_type, pk_prefix, sk, stock_attribute."""
        where = f"projections.{name}.settings"
        unknown = set(settings) - SETTINGS
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}")
        topic_arn = settings.get("topic_arn")
        if not isinstance(topic_arn, str) or not topic_arn.startswith("arn:"):
            raise ConfigError(f"{where}.topic_arn must be an SNS topic ARN")
        threshold = settings.get("threshold", DEFAULT_THRESHOLD)
        if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
            raise ConfigError(f"{where}.threshold must be an integer >= 1")
        ttl_days = settings.get("ttl_days", DEFAULT_TTL_SECONDS // 86400)
        if isinstance(ttl_days, bool) or not isinstance(ttl_days, int) or ttl_days < 1:
            raise ConfigError(f"{where}.ttl_days must be an integer >= 1")
        strings = {}
        for key, default in (
            ("idempotency_table", DEFAULT_IDEMPOTENCY_TABLE),
            ("entity_type", "PRODUCT"),
            ("pk_prefix", "PRODUCT#"),
            ("sk", "METADATA"),
            ("stock_attribute", "Stock"),
        ):
            value = settings.get(key, default)
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{where}.{key} must be a non-empty string")
            strings[key] = value
        create = settings.get("create_topic", False)
        if not isinstance(create, bool):
            raise ConfigError(f"{where}.create_topic must be true or false")
        store = IdempotencyStore(
            resources.aws_client("dynamodb"),
            strings.pop("idempotency_table"),
            ttl_seconds=ttl_days * 86400,
        )
        sink = SnsAlertSink(resources.aws_client("sns"), topic_arn, store)
        return cls(name, sink, threshold, create_topic=create, **strings)

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
