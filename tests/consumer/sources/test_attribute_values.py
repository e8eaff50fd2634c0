"""AttributeValue JSON <-> Python values: exact numbers, every type tag, clear errors."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from boto3.dynamodb.types import TypeDeserializer
from hypothesis import given
from hypothesis import strategies as st

from consumer.errors import DecodeError
from consumer.sources.attribute_values import (
    from_attribute_value,
    from_image,
    to_attribute_value,
    to_image,
)
from tests.consumer.samples.recorder import TRIP_FLIGHT


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        ({"S": "TRIP#trip-001"}, "TRIP#trip-001"),
        ({"S": ""}, ""),
        ({"N": "80000"}, 80000),
        ({"N": "-42"}, -42),
        ({"N": "0"}, 0),
        ({"N": "80000.50"}, Decimal("80000.50")),
        ({"N": "-0.001"}, Decimal("-0.001")),
        ({"N": "1E+3"}, Decimal("1E+3")),
        ({"B": "AAF0aWNrZXQ="}, b"\x00\x01ticket"),
        ({"BOOL": True}, True),
        ({"BOOL": False}, False),
        ({"NULL": True}, None),
        ({"M": {"a": {"S": "x"}, "n": {"N": "1"}}}, {"a": "x", "n": 1}),
        ({"L": [{"S": "x"}, {"N": "2.5"}, {"NULL": True}]}, ["x", Decimal("2.5"), None]),
        ({"SS": ["a", "b"]}, frozenset({"a", "b"})),
        ({"NS": ["1", "2.5"]}, frozenset({1, Decimal("2.5")})),
        ({"BS": ["AQ==", "Ag=="]}, frozenset({b"\x01", b"\x02"})),
    ],
)
def test_each_type_tag_becomes_its_python_value(wire: dict[str, Any], expected: Any) -> None:
    value = from_attribute_value(wire)
    assert value == expected
    assert type(value) is type(expected)


def test_numbers_keep_all_38_digits_and_never_become_floats() -> None:
    digits38 = "1234567890123456789012345678.9012345678"
    image = from_image({"big": {"N": digits38}, "int38": {"N": "9" * 38}})
    assert image["big"] == Decimal(digits38)
    assert str(image["big"]) == digits38
    assert image["int38"] == int("9" * 38)


@pytest.mark.parametrize(
    "text",
    [
        "9.9999999999999999999999999999999999999E+125",
        "-9.9999999999999999999999999999999999999E+125",
        "1E-130",
        "-1E-130",
        "1" + "0" * 45,
    ],
)
def test_numbers_at_dynamodbs_limits_are_accepted(text: str) -> None:
    assert from_attribute_value({"N": text}) == Decimal(text)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("1E+126", "range"),
        ("-1E+126", "range"),
        ("1E-131", "range"),
        ("1" * 39, "38 significant digits"),
        ("1.23456789012345678901234567890123456789", "38 significant digits"),
        ("abc", "not a DynamoDB number"),
        ("", "not a DynamoDB number"),
        ("NaN", "not a DynamoDB number"),
        ("Infinity", "not a DynamoDB number"),
    ],
)
def test_numbers_dynamodb_cannot_store_are_rejected(text: str, problem: str) -> None:
    with pytest.raises(DecodeError, match=problem):
        from_image({"price": {"N": text}})


@pytest.mark.parametrize(
    ("image", "message"),
    [
        ({"x": {"Q": "1"}}, r"x: unknown AttributeValue type tag 'Q'"),
        ({"x": {"S": "a", "N": "1"}}, r"x: an AttributeValue must be an object with one type tag"),
        ({"x": {}}, r"x: an AttributeValue must be an object"),
        ({"x": "plain"}, r"x: an AttributeValue must be an object"),
        ({"x": {"S": 1}}, r"x: AttributeValue S holds a int"),
        ({"x": {"N": 1}}, r"x: a DynamoDB number must be a string"),
        ({"x": {"BOOL": "true"}}, r"x: AttributeValue BOOL holds a str"),
        ({"x": {"NULL": False}}, r"x: AttributeValue NULL holds a bool"),
        ({"x": {"M": []}}, r"x: AttributeValue M holds a list"),
        ({"x": {"L": {}}}, r"x: AttributeValue L holds a dict"),
        ({"x": {"SS": ["a", 1]}}, r"x: AttributeValue SS holds a list"),
        ({"x": {"B": "not base64!"}}, r"x: AttributeValue B is not valid base64"),
        ({"x": {"BS": ["AQ==", "@@"]}}, r"x: AttributeValue B is not valid base64"),
        ({"m": {"M": {"l": {"L": [{"N": "1"}, {"N": "x"}]}}}}, r"m\.l\[1\]: not a DynamoDB number"),
    ],
)
def test_malformed_values_raise_decode_error_naming_the_attribute(
    image: dict[str, Any], message: str
) -> None:
    with pytest.raises(DecodeError, match=message):
        from_image(image)


def test_an_image_that_is_not_an_object_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="must be an object"):
        from_image(["not", "a", "map"])  # type: ignore[arg-type]


def test_agrees_with_boto3_type_deserializer_on_a_trip_item() -> None:
    wire = to_image(from_image(TRIP_FLIGHT), binary_as_base64=True)  # B as base64 text
    deserializer = TypeDeserializer()
    for name, value in from_image(wire).items():
        theirs = deserializer.deserialize(TRIP_FLIGHT[name])  # client form: B as bytes
        if isinstance(theirs, set):
            theirs = {getattr(v, "value", v) for v in theirs}
        assert value == getattr(theirs, "value", theirs), name  # boto3 wraps bytes in Binary


def test_to_attribute_value_writes_client_and_wire_forms() -> None:
    assert to_attribute_value(b"\x01") == {"B": b"\x01"}
    assert to_attribute_value(b"\x01", binary_as_base64=True) == {"B": "AQ=="}
    assert to_attribute_value(True) == {"BOOL": True}
    assert to_attribute_value(7) == {"N": "7"}
    assert to_attribute_value(Decimal("1.50")) == {"N": "1.50"}
    assert to_attribute_value({"b", "a"}) == {"SS": ["a", "b"]}
    assert to_attribute_value(None) == {"NULL": True}
    assert to_attribute_value((1, "x")) == {"L": [{"N": "1"}, {"S": "x"}]}


@pytest.mark.parametrize("value", [1.5, set(), {1, "a"}, object(), Decimal("1E+126")])
def test_to_attribute_value_refuses_what_dynamodb_cannot_hold(value: Any) -> None:
    with pytest.raises(TypeError):
        to_attribute_value(value)


_numbers = st.one_of(
    st.integers(min_value=-(10**38) + 1, max_value=10**38 - 1),
    st.decimals(allow_nan=False, allow_infinity=False, places=6).filter(
        lambda d: abs(d) < Decimal("1E+30")
    ),
)
_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.text(), st.binary(), _numbers),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=12,
)


@given(st.dictionaries(st.text(max_size=8), _values, max_size=6))
def test_wire_round_trip_preserves_every_value(item: dict[str, Any]) -> None:
    assert from_image(to_image(item, binary_as_base64=True)) == item
