"""Single-table routing: records reach the first matching route's handler, in shard order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from consumer.errors import ConfigError
from consumer.record import ChangeRecord
from projections.projection import BaseProjection
from projections.results import Counts, Outcome, Results
from projections.routing import Route, Router, RouteRule, rule_filter

HANDLERS: dict[str, Collecting] = {}


class Collecting(BaseProjection):
    """A handler that keeps what it was given, registered by name for the test to read."""

    def __init__(self, name: str, settings: Any = None, resources: Any = None) -> None:
        super().__init__(name)
        self.seen: list[ChangeRecord] = []
        HANDLERS[name] = self

    def apply(self, records: Sequence[ChangeRecord]) -> Results:
        self.seen.extend(records)
        return Results.of(records, Outcome.APPLIED)


def change(n: int, pk: str, sk: str, entity: str | None, **extra: Any) -> ChangeRecord:
    image = {"PK": pk, "SK": sk} | ({"EntityType": entity} if entity else {})
    event = extra.pop("event_name", "INSERT")
    return ChangeRecord(
        source="dynamodb",
        stream="miyabi",
        shard_id="shardId-1",
        sequence_number=str(100 + n),
        event_name=event,
        keys={"PK": pk, "SK": sk},
        new_image=None if event == "REMOVE" else image,
        old_image=image if event == "REMOVE" else None,
        approximate_creation_time=1.0,
        **extra,
    )


# The seed's single-table design (003): users, repositories, executions, websockets.
BATCH = [
    change(1, "USER#u1", "METADATA", "USER"),
    change(2, "USER#u1", "REPO#r1", "REPOSITORY"),
    change(3, "REPO#r1", "EXEC#2025-11-29T10:30:00Z#e1", "AGENT_EXECUTION"),
    change(4, "WS#c1", "METADATA", "WEBSOCKET"),
    change(5, "WS#c1", "METADATA", "WEBSOCKET", event_name="REMOVE", ttl_expiry=True),
    change(6, "USER#u1", "METADATA", "USER", event_name="MODIFY"),
    change(7, "ORG#o1", "METADATA", "ORGANIZATION"),
    change(8, "REPO#r1", "METADATA", "REPOSITORY"),
]


def router() -> Router:
    return Router.from_config(
        "miyabi",
        {
            "routes": [
                {"name": "users", "class": f"{__name__}:Collecting",
                 "entity_type": "USER", "pk_prefix": "USER#", "sk": "METADATA"},
                {"name": "repos", "class": f"{__name__}:Collecting",
                 "entity_type": ["REPOSITORY"]},
                {"name": "executions", "class": f"{__name__}:Collecting",
                 "pk_prefix": "REPO#", "sk_prefix": "EXEC#"},
                {"name": "sockets", "class": f"{__name__}:Collecting",
                 "entity_type": "WEBSOCKET", "ttl_expiry": "ignore"},
            ]
        },
        None,
    )  # fmt: skip


def sequences(handler: str) -> list[int]:
    return [int(r.sequence_number) - 100 for r in HANDLERS[handler].seen]


def test_records_reach_the_first_matching_route_in_order_and_the_rest_are_filtered() -> None:
    outcome = router().apply(BATCH).counts()
    assert sequences("miyabi.users") == [1, 6]
    # REPOSITORY by entity type: the user's repo link and the reverse lookup item.
    assert sequences("miyabi.repos") == [2, 8]
    assert sequences("miyabi.executions") == [3]
    # The TTL expiry of the websocket is not a user delete: this route ignores it.
    assert sequences("miyabi.sockets") == [4]
    # The organization has no route; the TTL REMOVE was dropped by its route's rule.
    assert outcome == Counts(applied=6, filtered=2)


def test_a_rule_can_route_keys_only_records_by_key_prefix_alone() -> None:
    keys_only = [
        ChangeRecord(
            source="dynamodb",
            stream="s",
            shard_id="1",
            sequence_number=str(n),
            event_name="MODIFY",
            keys={"PK": pk, "SK": "METADATA"},
            new_image=None,
            old_image=None,
            approximate_creation_time=None,
            view_type="KEYS_ONLY",
        )
        for n, pk in enumerate(["USER#u1", "ORG#o1"])
    ]
    handler = Collecting("keys_only")
    by_prefix = Route("users", rule_filter(RouteRule(pk_prefix="USER#")), handler)
    by_entity = Route("orgs", rule_filter(RouteRule(entity_type="ORGANIZATION")), handler)
    outcome = Router("keys", [by_prefix, by_entity]).apply(keys_only).counts()
    # No image, so the entity-type rule cannot match: the ORG record is unrouted.
    assert [r.keys["PK"] for r in handler.seen] == ["USER#u1"]
    assert outcome == Counts(applied=1, filtered=1)


@pytest.mark.parametrize(
    ("route", "named"),
    [
        ({"class": f"{__name__}:Collecting", "pk_prefix": "A"}, r"routes\[0\]\.name"),
        ({"name": "a", "class": f"{__name__}:Collecting", "pk": "A"}, r"routes\[0\]\.pk: unknown"),
        ({"name": "a", "class": f"{__name__}:Collecting", "sk": "A", "sk_prefix": "B"}, "not both"),
        ({"name": "a", "class": f"{__name__}:Collecting", "ttl_expiry": "skip"}, "ttl_expiry"),
        ({"name": "a", "class": "nowhere:Nothing"}, r"routes\[0\]\.class"),
    ],
)
def test_bad_routes_are_config_errors_naming_the_setting(route: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        Router.from_config("app", {"routes": [route]}, None)  # type: ignore[arg-type]


def test_custom_key_and_entity_attribute_names() -> None:
    records = [
        ChangeRecord(
            source="dynamodb",
            stream="s",
            shard_id="1",
            sequence_number="1",
            event_name="INSERT",
            keys={"pk": "USER#1", "sk": "PROFILE"},
            new_image={"pk": "USER#1", "sk": "PROFILE", "type": "USER"},
            old_image=None,
            approximate_creation_time=None,
        )
    ]
    app = Router.from_config(
        "custom",
        {
            "partition_key": "pk",
            "sort_key": "sk",
            "entity_type_attribute": "type",
            "routes": [{"name": "users", "class": f"{__name__}:Collecting",
                        "entity_type": "USER", "pk_prefix": "USER#", "sk": "PROFILE"}],
        },
        None,  # type: ignore[arg-type]
    )  # fmt: skip
    assert app.apply(records).counts() == Counts(applied=1)
