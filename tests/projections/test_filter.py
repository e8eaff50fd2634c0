"""Record filters: parsing from TOML settings, matching, and FilteredProjection's counts."""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest

from consumer.errors import ConfigError
from consumer.record import ChangeRecord
from projections.filter import FilteredProjection, RecordFilter, parse_filter
from projections.projection import BaseProjection
from projections.results import Counts, Outcome, Results

PRODUCT = ChangeRecord(
    source="dynamodb",
    stream="arn:aws:dynamodb:us-east-1:1:table/DynamoDBShop/stream/x",
    shard_id="shardId-1",
    sequence_number="100",
    event_name="MODIFY",
    keys={"PK": "PRODUCT#p001", "SK": "METADATA"},
    new_image={"PK": "PRODUCT#p001", "SK": "METADATA", "EntityType": "PRODUCT", "Stock": 5},
    old_image={"PK": "PRODUCT#p001", "SK": "METADATA", "EntityType": "PRODUCT", "Stock": 15},
    approximate_creation_time=1.0,
    table="DynamoDBShop",
)


def toml_filter(text: str) -> RecordFilter:
    """The filter as a projection's `[projections.settings.filter]` table would give it."""
    return parse_filter(tomllib.loads(text)["filter"])


def test_the_documented_example_matches_product_metadata_modifies_only() -> None:
    f = toml_filter(
        """
        [filter]
        event_name = ["MODIFY"]
        keys.PK = {prefix = "PRODUCT#"}
        keys.SK = "METADATA"
        new.EntityType = "PRODUCT"
        """
    )
    assert f.matches(PRODUCT)
    assert not f.matches(replace(PRODUCT, event_name="INSERT"))
    assert not f.matches(replace(PRODUCT, keys={"PK": "USER#u1", "SK": "METADATA"}))
    assert not f.matches(replace(PRODUCT, keys={"PK": "PRODUCT#p001", "SK": "REVIEW#1"}))
    assert not f.matches(replace(PRODUCT, new_image={**PRODUCT.new_image, "EntityType": "USER"}))


@pytest.mark.parametrize(
    ("condition", "matches"),
    [
        ("{lt = 10}", True),
        ("{lte = 5}", True),
        ("{gt = 5}", False),
        ("{gte = 5, lt = 6}", True),
        ("5", True),
        ("5.0", True),
        ('"5"', False),  # a string is not the number 5
        ("[1, 5, 9]", True),
        ("{one_of = [1, 2]}", False),
        ("{exists = true}", True),
        ("{not_equals = 5}", False),
    ],
)
def test_numeric_and_set_conditions_on_the_new_image(condition: str, matches: bool) -> None:
    f = toml_filter(f"[filter]\nnew.Stock = {condition}\n")
    assert f.matches(PRODUCT) is matches


def test_numbers_compare_exactly_across_int_and_decimal() -> None:
    f = toml_filter("[filter]\nold.Stock = {gte = 10}\nnew.Price = {gt = 19.99}\n")
    record = replace(PRODUCT, new_image={**PRODUCT.new_image, "Price": Decimal("20.00")})
    assert f.matches(record)
    cheaper = replace(PRODUCT, new_image={**PRODUCT.new_image, "Price": Decimal("19.99")})
    assert not f.matches(cheaper)


def test_a_missing_attribute_or_image_fails_unless_exists_is_false() -> None:
    keys_only = replace(PRODUCT, new_image=None, old_image=None, view_type="KEYS_ONLY")
    assert not toml_filter('[filter]\nnew.EntityType = "PRODUCT"\n').matches(keys_only)
    assert toml_filter("[filter]\nnew.Deleted = {exists = false}\n").matches(keys_only)
    assert toml_filter("[filter]\nnew.Deleted = {exists = false}\n").matches(PRODUCT)
    assert not toml_filter("[filter]\nnew.Deleted = {exists = true}\n").matches(PRODUCT)


def test_table_and_ttl_expiry_criteria() -> None:
    ttl_remove = replace(PRODUCT, event_name="REMOVE", new_image=None, ttl_expiry=True)
    user_remove = replace(ttl_remove, ttl_expiry=False)
    no_ttl = toml_filter("[filter]\nttl_expiry = false\n")
    assert not no_ttl.matches(ttl_remove) and no_ttl.matches(user_remove)
    # The newest image of a REMOVE is its old image.
    assert toml_filter('[filter]\nimage.EntityType = "PRODUCT"\n').matches(ttl_remove)
    assert toml_filter('[filter]\ntable = "DynamoDBShop"\n').matches(PRODUCT)
    assert not toml_filter('[filter]\ntable = ["Other"]\n').matches(PRODUCT)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('[filter]\nevent_names = ["MODIFY"]\n', "event_names"),
        ('[filter]\nevent_name = ["UPDATE"]\n', "filter.event_name"),
        ('[filter]\nkeys.PK = {starts_with = "P"}\n', "filter.keys.PK"),
        ('[filter]\nnew.Stock = {lt = "ten"}\n', "filter.new.Stock.lt"),
        ("[filter]\nnew.Stock = {exists = 1}\n", "filter.new.Stock.exists"),
        ("[filter]\nttl_expiry = 1\n", "filter.ttl_expiry"),
        ('[filter]\nnewer = {a = "b"}\n', "newer"),
    ],
)
def test_a_bad_setting_is_a_config_error_that_names_it(text: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        toml_filter(text)


class Collecting(BaseProjection):
    """A projection that keeps what it was given (the filter's unit under test is the wrapper)."""

    def __init__(
        self, name: str = "collecting", settings: Any = None, resources: Any = None
    ) -> None:
        super().__init__(name)
        self.seen: list[ChangeRecord] = []

    def apply(self, records: Sequence[ChangeRecord]) -> Results:
        self.seen.extend(records)
        return Results.of(records, Outcome.APPLIED)


def test_filtered_projection_counts_non_matching_records_as_filtered_and_keeps_order() -> None:
    batch = [
        replace(PRODUCT, sequence_number="1"),
        replace(PRODUCT, sequence_number="2", keys={"PK": "USER#u", "SK": "METADATA"}),
        replace(PRODUCT, sequence_number="3"),
        replace(PRODUCT, sequence_number="4", event_name="INSERT"),
    ]
    inner = Collecting()
    wrapped = FilteredProjection(
        inner, parse_filter({"event_name": "MODIFY", "keys": {"PK": {"prefix": "PRODUCT#"}}})
    )
    assert wrapped.apply(batch).counts() == Counts(applied=2, filtered=2)
    assert [r.sequence_number for r in inner.seen] == ["1", "3"]
    # A batch with nothing for the inner projection never reaches it.
    assert wrapped.apply(batch[1:2]).counts() == Counts(filtered=1)
    assert len(inner.seen) == 2


def test_filtered_projection_from_config_builds_the_inner_projection_by_import_path() -> None:
    projection = FilteredProjection.from_config(
        "only_products",
        {
            "projection": f"{__name__}:Collecting",
            "filter": {"keys": {"PK": {"prefix": "PRODUCT#"}}},
        },
        resources=None,  # type: ignore[arg-type]
    )
    assert projection.apply([PRODUCT, replace(PRODUCT, keys={"PK": "X"})]).counts() == Counts(
        1, 0, 1
    )
    with pytest.raises(ConfigError, match=r"^filter\.pk: unknown setting; expected one of event_"):
        FilteredProjection.from_config(
            "bad",
            {"projection": f"{__name__}:Collecting", "filter": {"pk": 1}},
            None,  # type: ignore[arg-type]
        )
