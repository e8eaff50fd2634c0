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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from consumer.errors import ConfigError
from consumer.record import ChangeRecord
from projections.filter import RecordFilter, parse_filter
from projections.projection import Projection, Resources, attempt
from projections.results import Results

RULE_KEYS = frozenset({"entity_type", "pk_prefix", "sk_prefix", "sk", "ttl_expiry", "filter"})


@dataclass(frozen=True, slots=True)
class Route:
    """A rule and the projection that handles the records it matches."""

    name: str
    rule: RecordFilter
    handler: Projection


def rule_filter(
    spec: Mapping[str, Any],
    where: str,
    partition_key: str = "PK",
    sort_key: str = "SK",
    entity_type_attribute: str = "EntityType",
) -> RecordFilter:
    """A RecordFilter for a route's rule: entity type (on the newest image), key prefixes."""
    unknown = set(spec) - RULE_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}")
    extra = dict(spec.get("filter") or {})
    keys: dict[str, Any] = dict(extra.pop("keys", {}) or {})
    image: dict[str, Any] = dict(extra.pop("image", {}) or {})
    if "pk_prefix" in spec:
        keys[partition_key] = {"prefix": _text(spec["pk_prefix"], f"{where}.pk_prefix")}
    if "sk_prefix" in spec and "sk" in spec:
        raise ConfigError(f"{where}: set sk_prefix or sk, not both")
    if "sk_prefix" in spec:
        keys[sort_key] = {"prefix": _text(spec["sk_prefix"], f"{where}.sk_prefix")}
    if "sk" in spec:
        keys[sort_key] = {"equals": _text(spec["sk"], f"{where}.sk")}
    if "entity_type" in spec:
        kinds = spec["entity_type"]
        kinds = [kinds] if isinstance(kinds, str) else kinds
        if not isinstance(kinds, list) or not kinds:
            raise ConfigError(f"{where}.entity_type must be a string or a list of strings")
        image[entity_type_attribute] = {"one_of": kinds}
    ttl = spec.get("ttl_expiry", "include")
    if ttl not in ("include", "ignore"):
        raise ConfigError(f"{where}.ttl_expiry must be 'include' or 'ignore'")
    if ttl == "ignore":
        extra["ttl_expiry"] = False
    if keys:
        extra["keys"] = keys
    if image:
        extra["image"] = image
    return parse_filter(extra, where)


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where} must be a non-empty string")
    return value


class Router:
    """Dispatches records to the first matching route's handler; counts the rest as filtered."""

    def __init__(self, name: str, routes: Sequence[Route]) -> None:
        self.name = name
        self.routes = list(routes)

    @classmethod
    def from_config(cls, name: str, settings: Mapping[str, Any], resources: Resources) -> Router:
        """Build from `routes` (a list of tables: name, class, settings and the rule keys)."""
        from consumer.runtimes.projection_loader import load_class

        unknown = set(settings) - {"routes", "partition_key", "sort_key", "entity_type_attribute"}
        if unknown:
            raise ConfigError(f"projections.{name}.settings: unknown key(s) {sorted(unknown)}")
        names = {
            "partition_key": settings.get("partition_key", "PK"),
            "sort_key": settings.get("sort_key", "SK"),
            "entity_type_attribute": settings.get("entity_type_attribute", "EntityType"),
        }
        entries = settings.get("routes")
        if not isinstance(entries, list) or not entries:
            raise ConfigError(f"projections.{name}.settings.routes must be a non-empty list")
        routes: list[Route] = []
        for index, entry in enumerate(entries):
            where = f"projections.{name}.settings.routes[{index}]"
            if not isinstance(entry, Mapping):
                raise ConfigError(f"{where} must be a table")
            route_name = _text(entry.get("name"), f"{where}.name")
            if any(route.name == route_name for route in routes):
                raise ConfigError(f"{where}.name: duplicate route name {route_name!r}")
            path = _text(entry.get("class"), f"{where}.class")
            rule_spec = {k: v for k, v in entry.items() if k not in ("name", "class", "settings")}
            rule = rule_filter(rule_spec, where, **names)
            handler_cls = load_class(path, f"{where}.class")
            handler = handler_cls.from_config(
                f"{name}.{route_name}", entry.get("settings", {}), resources
            )
            routes.append(Route(route_name, rule, handler))
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
        """Migrate every handler that owns tables."""
        for route in self.routes:
            migrate = getattr(route.handler, "migrate", None)
            if migrate is not None:
                migrate()

    def close(self) -> None:
        """Close every handler that holds resources."""
        for route in self.routes:
            close = getattr(route.handler, "close", None)
            if close is not None:
                close()
