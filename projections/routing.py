"""Single-table designs: dispatch each record to the handler of its entity, by rule.

One DynamoDB table holds many entity types (`PK = USER#…, SK = METADATA`, `SK = REPO#…`,
`EntityType = "REPOSITORY"`, …). A `Router` is one projection made of routes; each route is a
rule (entity type, PK/SK prefixes, SK equals, an optional extra filter) and a handler
projection. A record goes to the first route whose rule matches; records no route wants count
as `filtered`. Each handler receives its records in shard order.

TTL expiries (REMOVEs made by the TTL service) are not user deletes: a route sets
`ttl_expiry = "ignore"` to drop them (counted as filtered) or keeps the default "include" and
reads `record.ttl_expiry` itself.

When one handler fails, its records are reported failed and the batch is retried from the
first of them, so the other handlers may see records they already applied again: every handler
must be guarded (docs/design.md invariant 4), which makes that harmless.

    [[projections]]
    name = "app"
    class = "projections.routing:Router"
    [[projections.settings.routes]]
    name = "products"
    entity_type = "PRODUCT"
    pk_prefix = "PRODUCT#"
    sk = "METADATA"
    class = "projections.scenarios.inventory_alerts:InventoryAlertsProjection"
    settings = { topic_arn = "arn:aws:sns:…" }
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from consumer.record import ChangeRecord
from projections.filter import FilterSettings, RecordFilter, build_filter
from projections.loader import build_projection
from projections.projection import BaseProjection, Projection, Resources, attempt
from projections.results import Results
from projections.settings import ProjectionSettings, SettingsError, Text


class RouteRule(ProjectionSettings):
    """Which records a route takes: entity type (on the newest image), key prefixes, a filter."""

    entity_type: Text | Annotated[list[Text], Field(min_length=1)] | None = None
    pk_prefix: Text | None = None
    sk_prefix: Text | None = None
    sk: Text | None = None
    ttl_expiry: Literal["include", "ignore"] = "include"
    filter: FilterSettings = Field(default_factory=FilterSettings)

    @model_validator(mode="after")
    def _one_sort_key_rule(self) -> RouteRule:
        if self.sk_prefix is not None and self.sk is not None:
            raise ValueError("set sk_prefix or sk, not both")
        return self


class RouteSettings(RouteRule):
    """One `[[projections.settings.routes]]` table: a name, a rule, a handler and its settings."""

    name: Text
    class_: Text = Field(alias="class")
    settings: dict[str, Any] = Field(default_factory=dict)


class RouterSettings(ProjectionSettings):
    """The routes, in order, and the names of the attributes the rules read."""

    routes: Annotated[list[RouteSettings], Field(min_length=1)]
    partition_key: Text = "PK"
    sort_key: Text = "SK"
    entity_type_attribute: Text = "EntityType"

    @field_validator("routes")
    @classmethod
    def _unique_names(cls, routes: list[RouteSettings]) -> list[RouteSettings]:
        names = [route.name for route in routes]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"duplicate route name(s) {duplicates}")
        return routes


@dataclass(frozen=True, slots=True)
class Route:
    """A rule and the projection that handles the records it matches."""

    name: str
    rule: RecordFilter
    handler: Projection


def rule_filter(
    rule: RouteRule,
    partition_key: str = "PK",
    sort_key: str = "SK",
    entity_type_attribute: str = "EntityType",
) -> RecordFilter:
    """A RecordFilter for a route's rule; a SettingsError locates a bad condition of its filter."""
    extra = rule.filter
    keys: dict[str, Any] = dict(extra.keys)
    image: dict[str, Any] = dict(extra.image)
    if rule.pk_prefix is not None:
        keys[partition_key] = {"prefix": rule.pk_prefix}
    if rule.sk_prefix is not None:
        keys[sort_key] = {"prefix": rule.sk_prefix}
    if rule.sk is not None:
        keys[sort_key] = {"equals": rule.sk}
    if rule.entity_type is not None:
        kinds = [rule.entity_type] if isinstance(rule.entity_type, str) else rule.entity_type
        image[entity_type_attribute] = {"one_of": kinds}
    ttl = False if rule.ttl_expiry == "ignore" else extra.ttl_expiry
    merged = extra.model_copy(update={"keys": keys, "image": image, "ttl_expiry": ttl})
    try:
        return build_filter(merged)
    except SettingsError as exc:
        raise exc.under("filter") from exc


class Router(BaseProjection):
    """Dispatches records to the first matching route's handler; counts the rest as filtered."""

    settings_model = RouterSettings

    def __init__(self, name: str, routes: Sequence[Route]) -> None:
        super().__init__(name)
        self.routes = list(routes)

    @classmethod
    def from_settings(cls, name: str, settings: RouterSettings, resources: Resources) -> Router:
        """Build each route's handler by import path (named `<router>.<route>`) and its rule."""
        routes: list[Route] = []
        for index, route in enumerate(settings.routes):
            try:
                rule = rule_filter(
                    route,
                    settings.partition_key,
                    settings.sort_key,
                    settings.entity_type_attribute,
                )
                handler = build_projection(
                    route.class_, f"{name}.{route.name}", route.settings, resources
                )
            except SettingsError as exc:
                raise exc.under("routes", index) from exc
            routes.append(Route(route.name, rule, handler))
        return cls(name, routes)

    def route_index(self, record: ChangeRecord) -> int | None:
        """The index of the first route whose rule matches `record`, or None."""
        for index, route in enumerate(self.routes):
            if route.rule.matches(record):
                return index
        return None

    def apply(self, records: Sequence[ChangeRecord]) -> Results:
        """Split the batch by route (order kept within each) and apply each part.

        A handler that fails does not stop the others: its records are reported failed.
        """
        parts: list[list[ChangeRecord]] = [[] for _ in self.routes]
        results = Results()
        for record in records:
            index = self.route_index(record)
            if index is None:
                results.filtered(record)
            else:
                parts[index].append(record)
        for route, part in zip(self.routes, parts, strict=True):
            if part:
                results.merge(attempt(route.handler, part))
        return results

    def migrate(self) -> None:
        """Migrate every handler."""
        for route in self.routes:
            route.handler.migrate()

    def ready(self) -> bool:
        """Ready when every handler is."""
        return all(route.handler.ready() for route in self.routes)

    def close(self) -> None:
        """Close every handler."""
        for route in self.routes:
            route.handler.close()
