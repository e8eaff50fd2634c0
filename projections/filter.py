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
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import Field

from consumer.record import ChangeRecord
from projections.projection import Projection, Resources, attempt
from projections.results import Results
from projections.settings import ProjectionSettings, SettingsError, validate_settings
from projections.wrapper import WrappedSettings, WrappingProjection, build_inner

SCOPES = ("keys", "new", "old", "image")
_MISSING = object()

Test = Callable[[Any], bool]
Scalar = str | int | float | bool
EventName = Literal["INSERT", "MODIFY", "REMOVE"]
Names = str | Annotated[list[str], Field(min_length=1)]


class FilterSettings(ProjectionSettings):
    """A `[...filter]` table; conditions (per scope, per attribute) are checked when built."""

    table: Names | None = None
    event_name: EventName | Annotated[list[EventName], Field(min_length=1)] | None = None
    ttl_expiry: bool | None = None
    keys: dict[str, Any] = Field(default_factory=dict)
    new: dict[str, Any] = Field(default_factory=dict)
    old: dict[str, Any] = Field(default_factory=dict)
    image: dict[str, Any] = Field(default_factory=dict)


class Operators(ProjectionSettings):
    """A condition written as a table of operators, all of which must hold."""

    equals: Scalar | None = None
    not_equals: Scalar | None = None
    one_of: Annotated[list[Scalar], Field(min_length=1)] | None = None
    prefix: str | None = None
    exists: bool | None = None
    gt: int | float | None = None
    gte: int | float | None = None
    lt: int | float | None = None
    lte: int | float | None = None


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


def _not_equals(operand: Any) -> Test:
    equal = _equals(operand)
    return lambda value: value is not _MISSING and not equal(value)


def _prefix(prefix: str) -> Test:
    return lambda value: isinstance(value, str) and value.startswith(prefix)


def _exists(expected: bool) -> Test:
    return lambda value: (value is not _MISSING) is expected


def _operators(spec: Operators) -> list[Test]:
    tests: list[Test] = []
    for op in spec.model_fields_set:
        operand = getattr(spec, op)
        if op == "equals":
            tests.append(_equals(operand))
        elif op == "not_equals":
            tests.append(_not_equals(operand))
        elif op == "one_of":
            tests.append(_one_of(operand))
        elif op == "prefix":
            tests.append(_prefix(operand))
        elif op == "exists":
            tests.append(_exists(operand))
        else:
            tests.append(_compare(op, Decimal(str(operand))))
    return tests


def parse_condition(spec: Any) -> Test:
    """A test on one attribute's value (`_MISSING` when absent) from its TOML spec.

    A value means equals, a list one of, a table a set of operators. A SettingsError locates
    a bad spec relative to the attribute.
    """
    if isinstance(spec, list):
        if not spec:
            raise SettingsError.at((), "an empty list matches nothing")
        return _one_of(spec)
    if isinstance(spec, Mapping):
        operators = validate_settings(Operators, spec)
        if not operators.model_fields_set:
            raise SettingsError.at((), "an empty table has no operator")
        tests = _operators(operators)
        return lambda value: all(test(value) for test in tests)
    if isinstance(spec, str | int | float | bool):
        return _equals(spec)
    raise SettingsError.at((), f"unsupported condition {spec!r}")


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


def _names(value: str | Sequence[str] | None) -> frozenset[str] | None:
    if value is None:
        return None
    return frozenset([value] if isinstance(value, str) else value)


def build_filter(settings: FilterSettings) -> RecordFilter:
    """The RecordFilter of validated filter settings; a SettingsError locates a bad condition."""
    conditions: list[Condition] = []
    for scope in SCOPES:
        attributes: dict[str, Any] = getattr(settings, scope)
        for attribute, spec in attributes.items():
            try:
                test = parse_condition(spec)
            except SettingsError as exc:
                raise exc.under(scope, attribute) from exc
            conditions.append(Condition(scope, attribute, test))
    return RecordFilter(
        _names(settings.table),
        _names(settings.event_name),
        settings.ttl_expiry,
        tuple(conditions),
    )


def parse_filter(spec: Mapping[str, Any] | None) -> RecordFilter:
    """A RecordFilter from a `[...filter]` table; a SettingsError names the bad key."""
    try:
        return build_filter(validate_settings(FilterSettings, spec or {}))
    except SettingsError as exc:
        raise exc.under("filter") from exc


class FilteredSettings(WrappedSettings):
    """`projection` and its `settings`, behind `filter`."""

    filter: FilterSettings = Field(default_factory=FilterSettings)


class FilteredProjection(WrappingProjection):
    """Any projection behind a filter: records that do not match count as `filtered`.

    Configure it directly (`class = "projections.filter:FilteredProjection"` with settings
    `projection = "module:Class"`, `settings = {...}`, `filter = {...}`) or wrap in code.
    """

    settings_model = FilteredSettings

    def __init__(self, inner: Projection, record_filter: RecordFilter) -> None:
        super().__init__(inner.name)
        self.inner = inner
        self.filter = record_filter

    @classmethod
    def from_settings(
        cls, name: str, settings: FilteredSettings, resources: Resources
    ) -> FilteredProjection:
        """Build the inner projection by import path, then wrap it with `filter`."""
        try:
            record_filter = build_filter(settings.filter)
        except SettingsError as exc:
            raise exc.under("filter") from exc
        return cls(build_inner(name, settings, resources), record_filter)

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
