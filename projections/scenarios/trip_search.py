"""Trip search (scenario 1): TripTable changes → one denormalized document per trip.

TripTable items are `PK = TRIP#<id>` with `SK = FLIGHT#… | HOTEL#… | PAYMENT#…`. Each
component owns its fields in the `TripSearchTable` document (keyed `trip_id`) and is guarded
by its own source position (`flight_position`, `hotel_position`, `payment_position`), so the
three arrive in any interleaving, each updates only its own fields, and a stale or repeated
change never overwrites newer state. Each write carries the component's full state: a field
absent from the new image is removed, which is what lets the sink coalesce safely.

REMOVE of a component (user delete or TTL expiry alike) removes that component's fields and
keeps its guard as a tombstone at the REMOVE's position, so a replayed older INSERT/MODIFY
cannot resurrect it while a genuinely newer re-creation still can. A TTL expiry is treated
like a delete on purpose: the item is gone from the write model, so searching must not find
it. The trip document itself stays (with the other components and the tombstones) even when
every component is gone; deleting it would drop the tombstones that make replays harmless.

`updated_at` is the change's approximate creation time (ISO 8601 UTC) of the last write that
applied; it is shared by the components, so across components the last applied write wins.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from pydantic import Field

from projections.api import (
    BaseProjection,
    ChangeRecord,
    ConfigError,
    DynamoDBSink,
    GuardedUpdate,
    ProjectionSettings,
    Resources,
    Results,
    Text,
    Write,
)
from projections.sinks.dynamodb import DEFAULT_MAX_WORKERS, ensure_table

log = structlog.get_logger(__name__)

DEFAULT_TABLE = "TripSearchTable"
STATUS_INDEX = "flight_status-departure_time-index"
TRIP_PREFIX = "TRIP#"


@dataclass(frozen=True, slots=True)
class Component:
    """One TripTable entity type: its SK prefix, guard, and source → document field map."""

    sk_prefix: str
    guard: str
    fields: tuple[tuple[str, str], ...]  # (source attribute, document attribute)

    @property
    def document_fields(self) -> tuple[str, ...]:
        """The document attributes this component owns."""
        return tuple(target for _, target in self.fields)


COMPONENTS = (
    Component(
        "FLIGHT#",
        "flight_position",
        (
            ("flight_number", "flight_number"),
            ("departure_time", "departure_time"),
            ("arrival_time", "arrival_time"),
            ("status", "flight_status"),
        ),
    ),
    Component(
        "HOTEL#",
        "hotel_position",
        (
            ("hotel_name", "hotel_name"),
            ("check_in_date", "check_in_date"),
            ("check_out_date", "check_out_date"),
            ("status", "hotel_status"),
        ),
    ),
    Component(
        "PAYMENT#",
        "payment_position",
        (
            ("amount", "total_amount"),
            ("currency", "currency"),
            ("status", "payment_status"),
        ),
    ),
)
GUARD_ATTRIBUTES = frozenset(component.guard for component in COMPONENTS)


def component_of(sort_key: object) -> Component | None:
    """The component an SK belongs to, or None for other entity types (TRIP#, …)."""
    if not isinstance(sort_key, str):
        return None
    for component in COMPONENTS:
        if sort_key.startswith(component.sk_prefix):
            return component
    return None


def iso_utc(epoch_seconds: float | None) -> str:
    """ISO 8601 UTC with a Z; whole seconds when the stream gives whole seconds."""
    if epoch_seconds is None:
        # Every DynamoDB Streams record has a creation time; a hand-built record may not.
        moment = datetime.now(UTC)
    else:
        moment = datetime.fromtimestamp(epoch_seconds, UTC)
    spec = "seconds" if moment.microsecond == 0 else "milliseconds"
    return moment.isoformat(timespec=spec).replace("+00:00", "Z")


class TripSearchSettings(ProjectionSettings):
    """`table`: the search table; `max_workers`: keys written at once."""

    table: Text = DEFAULT_TABLE
    max_workers: int = Field(DEFAULT_MAX_WORKERS, ge=1)


class TripSearchProjection(BaseProjection):
    """Projects TripTable FLIGHT/HOTEL/PAYMENT changes into TripSearchTable documents."""

    settings_model = TripSearchSettings

    def __init__(
        self,
        client: Any,
        table: str = DEFAULT_TABLE,
        name: str = "trip_search",
        max_workers: int = DEFAULT_MAX_WORKERS,
    ) -> None:
        super().__init__(name)
        self.client = client
        self.table = table
        self.sink = DynamoDBSink(client, table, max_workers=max_workers)
        self._warned_no_image = False

    @classmethod
    def from_settings(
        cls, name: str, settings: TripSearchSettings, resources: Resources
    ) -> TripSearchProjection:
        """Built on the shared DynamoDB client."""
        return cls(
            resources.aws_client("dynamodb"),
            table=settings.table,
            name=name,
            max_workers=settings.max_workers,
        )

    def migrate(self) -> None:
        """Create TripSearchTable and its GSI if absent."""
        create_table(self.client, self.table)

    def close(self) -> None:
        """Release the sink's worker threads."""
        self.sink.close()

    def apply(self, records: Sequence[ChangeRecord]) -> Results:
        """Project `records` (shard order); filtered records never reach DynamoDB."""
        results = Results()
        writes: list[Write] = []
        for record in records:
            update = self.update_for(record)
            if update is None:
                results.filtered(record)
            else:
                writes.append((record, update))
        return results.merge(self.sink.write(writes))

    def update_for(self, record: ChangeRecord) -> GuardedUpdate | None:
        """The guarded write one change means, or None when it is not ours to project."""
        keys = record.keys or record.image or {}
        partition_key, sort_key = keys.get("PK"), keys.get("SK")
        component = component_of(sort_key)
        if (
            component is None
            or not isinstance(partition_key, str)
            or not partition_key.startswith(TRIP_PREFIX)
        ):
            return None
        trip_id = partition_key[len(TRIP_PREFIX) :]
        updated_at = {"updated_at": iso_utc(record.approximate_creation_time)}
        if record.event_name == "REMOVE":
            return GuardedUpdate(
                {"trip_id": trip_id},
                component.guard,
                record.position,
                assign=updated_at,
                remove=component.document_fields,
            )
        image = record.new_image
        if image is None:
            self._warn_no_image(record)
            return None
        assign: dict[str, Any] = {}
        remove: list[str] = []
        for source, target in component.fields:
            value = image.get(source)
            # None (NULL) and "" cannot be GSI key values and mean "not set" here anyway.
            if value is None or value == "":
                remove.append(target)
            else:
                assign[target] = value
        assign.update(updated_at)
        return GuardedUpdate(
            {"trip_id": trip_id}, component.guard, record.position, assign, tuple(remove)
        )

    def _warn_no_image(self, record: ChangeRecord) -> None:
        # Once per projection: the view type is a property of the stream, not of the record.
        if not self._warned_no_image:
            self._warned_no_image = True
            log.warning(
                "trip_search.no_new_image",
                projection=self.name,
                stream=record.stream,
                view_type=record.view_type,
                hint="TripTable's stream needs NEW_IMAGE or NEW_AND_OLD_IMAGES",
            )


def create_table(client: Any, table: str = DEFAULT_TABLE) -> None:
    """Create the search table (on demand, key trip_id, the status GSI) unless it exists.

    Waits until the table is ACTIVE. An existing table without the GSI is a ConfigError.
    """
    ensure_table(
        client,
        {
            "TableName": table,
            "BillingMode": "PAY_PER_REQUEST",
            "AttributeDefinitions": [
                {"AttributeName": "trip_id", "AttributeType": "S"},
                {"AttributeName": "flight_status", "AttributeType": "S"},
                {"AttributeName": "departure_time", "AttributeType": "S"},
            ],
            "KeySchema": [{"AttributeName": "trip_id", "KeyType": "HASH"}],
            "GlobalSecondaryIndexes": [
                {
                    "IndexName": STATUS_INDEX,
                    "KeySchema": [
                        {"AttributeName": "flight_status", "KeyType": "HASH"},
                        {"AttributeName": "departure_time", "KeyType": "RANGE"},
                    ],
                    "Projection": {"ProjectionType": "ALL"},
                }
            ],
        },
    )
    description = client.describe_table(TableName=table)["Table"]
    indexes = {index["IndexName"] for index in description.get("GlobalSecondaryIndexes", [])}
    if STATUS_INDEX not in indexes:
        raise ConfigError(f"table {table} exists without the GSI {STATUS_INDEX}")
