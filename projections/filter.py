"""Which records a projection wants, in the spirit of Lambda's event filter criteria.

A filter is parsed once from a projection's `[projections.settings.filter]` table:

    [projections.settings.filter]
    table = ["DynamoDBShop"]                 # source table name(s)
    event_name = ["MODIFY"]                  # INSERT / MODIFY / REMOVE
    ttl_expiry = false                       # drop REMOVEs made by the TTL service
    keys.PK = {prefix = "PRODUCT#"}          # conditions on the record's keys
    keys.SK = "METADATA"                     # a bare value means equals
    new.EntityType = "PRODUCT"               # ... on the new image
    old.Stock = {gte = 10}                   # ... on the old image
    image.Status = ["OPEN", "PENDING"]       # ... on the newest image (a list means one of)

A condition is a value (equals), a list (one of), or a table of operators, all of which must
hold: `equals`, `not_equals`, `one_of`, `prefix`, `exists` (bool), `gt`, `gte`, `lt`, `lte`.
Every part given must match (AND). A condition on an image the record does not carry fails,
so on KEYS_ONLY streams filter on `keys` only (image_fetch fetches images afterwards).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from consumer.errors import ConfigError
from consumer.record import ChangeRecord
from projections.projection import Projection, Resources, attempt
from projections.results import Results
from projections.wrapper import WrappingProjection

EVENT_NAMES = frozenset({"INSERT", "MODIFY", "REMOVE"})
SCOPES = ("keys", "new", "old", "image")
OPERATORS = frozenset(
    {"equals", "not_equals", "one_of", "prefix", "exists", "gt", "gte", "lt", "lte"}
)
_MISSING = object()

Test = Callable[[Any], bool]


def _number(value: Any) -> Decimal | None:
    """A comparable number for DynamoDB N values (int or Decimal); None for anything else."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal | float):
        return None
    return Decimal(str(value)) if isinstance(value, float) else Decimal(value)


def _compare(op: str, bound: Decimal) -> Test:
    def test(value: Any) -> bool:
        number = _number(value)
        if number is None:
            return False
        if op == "gt":
            return number > bound
        if op == "gte":
            return number >= bound
        if op == "lt":
            return number < bound
        return number <= bound

    return test


def _equals(expected: Any) -> Test:
    number = _number(expected)
    if number is not None:
        # 10, Decimal("10") and 10.0 are one DynamoDB number.
        return lambda value: value is not _MISSING and _number(value) == number
    return lambda value: (
        value is not _MISSING and type(value) is type(expected) and value == expected
    )


def _one_of(options: Sequence[Any]) -> Test:
    tests = [_equals(option) for option in options]
    return lambda value: any(test(value) for test in tests)


def _operator(op: str, operand: Any, where: str) -> Test:
    if op == "equals":
        return _equals(operand)
    if op == "not_equals":
        equal = _equals(operand)
        return lambda value: value is not _MISSING and not equal(value)
    if op == "one_of":
        if not isinstance(operand, list) or not operand:
            raise ConfigError(f"{where}.one_of must be a non-empty list")
        return _one_of(operand)
    if op == "prefix":
        if not isinstance(operand, str):
            raise ConfigError(f"{where}.prefix must be a string")
        return lambda value: isinstance(value, str) and value.startswith(operand)
    if op == "exists":
        if not isinstance(operand, bool):
            raise ConfigError(f"{where}.exists must be true or false")
        return lambda value: (value is not _MISSING) is operand
    bound = None
    if not isinstance(operand, bool):
        try:
            bound = Decimal(str(operand)) if isinstance(operand, int | float | str) else None
        except InvalidOperation:
            bound = None
    if bound is None:
        raise ConfigError(f"{where}.{op} must be a number")
    return _compare(op, bound)


def parse_condition(spec: Any, where: str) -> Test:
    """A test on one attribute's value (`_MISSING` when absent) from its TOML spec."""
    if isinstance(spec, list):
        if not spec:
            raise ConfigError(f"{where}: an empty list matches nothing")
        return _one_of(spec)
    if isinstance(spec, Mapping):
        unknown = set(spec) - OPERATORS
        if unknown:
            raise ConfigError(
                f"{where}: unknown operator(s) {sorted(unknown)}; use {sorted(OPERATORS)}"
            )
        if not spec:
            raise ConfigError(f"{where}: an empty table has no operator")
        tests = [_operator(op, operand, where) for op, operand in spec.items()]
        return lambda value: all(test(value) for test in tests)
    if isinstance(spec, str | int | float | bool):
        return _equals(spec)
    raise ConfigError(f"{where}: unsupported condition {spec!r}")


@dataclass(frozen=True, slots=True)
class Condition:
    """A test on one attribute of one part of the record (keys, new, old or newest image)."""

    scope: str
    attribute: str
    test: Test

    def holds(self, record: ChangeRecord) -> bool:
        """Whether the attribute's value passes; a missing image fails unless `exists = false`."""
        part: Mapping[str, Any] | None
        if self.scope == "keys":
            part = record.keys
        elif self.scope == "new":
            part = record.new_image
        elif self.scope == "old":
            part = record.old_image
        else:
            part = record.image
        value = _MISSING if part is None else part.get(self.attribute, _MISSING)
        return self.test(value)


@dataclass(frozen=True, slots=True)
class RecordFilter:
    """A conjunction of criteria on a record; the empty filter matches everything."""

    tables: frozenset[str] | None = None
    event_names: frozenset[str] | None = None
    ttl_expiry: bool | None = None
    conditions: tuple[Condition, ...] = field(default=())

    def matches(self, record: ChangeRecord) -> bool:
        """True when every criterion holds for `record`."""
        if self.tables is not None and record.table not in self.tables:
            return False
        if self.event_names is not None and record.event_name not in self.event_names:
            return False
        if self.ttl_expiry is not None and record.ttl_expiry is not self.ttl_expiry:
            return False
        return all(condition.holds(record) for condition in self.conditions)

    def split(self, records: Sequence[ChangeRecord]) -> tuple[list[ChangeRecord], int]:
        """The matching records in their order, and how many did not match."""
        kept = [record for record in records if self.matches(record)]
        return kept, len(records) - len(kept)


def _names(value: Any, where: str, allowed: frozenset[str] | None = None) -> frozenset[str]:
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{where} must be a string or a non-empty list of strings")
    if allowed is not None and not set(names) <= allowed:
        raise ConfigError(f"{where}: {sorted(set(names) - allowed)} not in {sorted(allowed)}")
    return frozenset(names)


def parse_filter(spec: Mapping[str, Any] | None, where: str = "filter") -> RecordFilter:
    """A RecordFilter from a `[...filter]` table; ConfigError names the bad key."""
    if not spec:
        return RecordFilter()
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where} must be a table")
    unknown = set(spec) - {"table", "event_name", "ttl_expiry", *SCOPES}
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}")
    tables = _names(spec["table"], f"{where}.table") if "table" in spec else None
    events = (
        _names(spec["event_name"], f"{where}.event_name", EVENT_NAMES)
        if "event_name" in spec
        else None
    )
    ttl = spec.get("ttl_expiry")
    if ttl is not None and not isinstance(ttl, bool):
        raise ConfigError(f"{where}.ttl_expiry must be true or false")
    conditions: list[Condition] = []
    for scope in SCOPES:
        attributes = spec.get(scope)
        if attributes is None:
            continue
        if not isinstance(attributes, Mapping):
            raise ConfigError(f"{where}.{scope} must be a table of attribute conditions")
        for attribute, condition in attributes.items():
            test = parse_condition(condition, f"{where}.{scope}.{attribute}")
            conditions.append(Condition(scope, attribute, test))
    return RecordFilter(tables, events, ttl, tuple(conditions))


class FilteredProjection(WrappingProjection):
    """Any projection behind a filter: records that do not match count as `filtered`.

    Configure it directly (`class = "projections.filter:FilteredProjection"` with settings
    `projection = "module:Class"`, `settings = {...}`, `filter = {...}`) or wrap in code.
    """

    def __init__(self, inner: Projection, record_filter: RecordFilter) -> None:
        self.inner = inner
        self.filter = record_filter
        self.name = inner.name

    @classmethod
    def from_config(
        cls, name: str, settings: Mapping[str, Any], resources: Resources
    ) -> FilteredProjection:
        """Build the inner projection by import path, then wrap it with `filter`."""
        from consumer.runtimes.projection_loader import load_inner_projection

        inner = load_inner_projection(name, settings, resources, {"filter"})
        return cls(inner, parse_filter(settings.get("filter"), f"projections.{name}.filter"))

    def apply(self, records: Sequence[ChangeRecord]) -> Results:
        """Apply the matching records through the inner projection; the rest are filtered."""
        results = Results()
        kept: list[ChangeRecord] = []
        for record in records:
            if self.filter.matches(record):
                kept.append(record)
            else:
                results.filtered(record)
        if kept:
            results.merge(attempt(self.inner, kept))
        return results
