"""Inventory alerts on moto's SNS, SQS and DynamoDB: crossings, and each alert exactly once."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.errors import ConfigError, TransientError
from consumer.record import ChangeRecord
from projections.idempotency import PENDING, Claim, IdempotencyStore
from projections.results import Counts
from projections.scenarios.inventory_alerts import (
    LOW_STOCK,
    OUT_OF_STOCK,
    InventoryAlertsProjection,
    crossings,
)
from projections.sinks.sns import SnsAlertSink


@pytest.mark.parametrize(
    ("old", "new", "kinds"),
    [
        (15, 5, [LOW_STOCK]),
        (10, 9, [LOW_STOCK]),
        (11, 10, []),  # still at the threshold: not low yet
        (9, 3, []),  # already low: no second low-stock alert
        (3, 0, [OUT_OF_STOCK]),
        (15, 0, [LOW_STOCK, OUT_OF_STOCK]),
        (0, 0, []),
        (0, 12, []),
        (5, 20, []),
    ],
)
def test_crossings_downward_only(old: int, new: int, kinds: list[str]) -> None:
    assert crossings(old, new, 10) == kinds


def product_change(n: int, product: str, old: int, new: int, **extra: Any) -> ChangeRecord:
    """A PRODUCT/METADATA MODIFY as DynamoDB Streams delivers it (seed 000's shapes)."""

    def image(stock: int) -> dict[str, Any]:
        return {"PK": f"PRODUCT#{product}", "SK": "METADATA", "EntityType": "PRODUCT",
                "ProductId": product, "Name": f"商品 {product}", "Stock": stock}  # fmt: skip

    return ChangeRecord(
        source="dynamodb",
        stream="arn:aws:dynamodb:us-east-1:123456789012:table/DynamoDBShop/stream/2025",
        shard_id="shardId-00000001",
        sequence_number=str(4_000_000_000_000_000_000 + n),
        event_name="MODIFY",
        keys={"PK": f"PRODUCT#{product}", "SK": "METADATA"},
        new_image=image(new),
        old_image=image(old),
        approximate_creation_time=1_764_000_000.0 + n,
        event_id=f"event-{n}",
        table="DynamoDBShop",
        view_type="NEW_AND_OLD_IMAGES",
        **extra,
    )


# p001 sells down through 10 and to 0, is restocked, and crosses again; p002 never goes low.
SCENARIO = [
    product_change(1, "p001", 15, 12),
    product_change(2, "p002", 50, 40),
    product_change(3, "p001", 12, 8),  # LOW_STOCK
    product_change(4, "p001", 8, 0),  # OUT_OF_STOCK
    product_change(5, "p002", 40, 35),
    product_change(6, "p001", 0, 30),  # restocked
    product_change(7, "p001", 30, 0),  # LOW_STOCK + OUT_OF_STOCK again: a new change
]
EXPECTED = Counter(
    {
        ("p001", LOW_STOCK, 8): 1,
        ("p001", OUT_OF_STOCK, 0): 1,
        ("p001", LOW_STOCK, 0): 1,
        ("p001", OUT_OF_STOCK, 0, 7): 1,
    }
)


@dataclass
class Topic:
    """An SNS topic with an SQS queue subscribed, to count what was published."""

    sns: Any
    sqs: Any
    arn: str
    queue_url: str

    def messages(self) -> list[dict[str, Any]]:
        """Every message delivered so far (moto delivers during Publish), each read once."""
        out: list[dict[str, Any]] = []
        while True:
            batch = self.sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=0,
                VisibilityTimeout=600,
            ).get("Messages", [])
            if not batch:
                return out
            out.extend(json.loads(json.loads(m["Body"])["Message"]) for m in batch)


def make_topic(aws_client: Callable[..., Any], name: str) -> Topic:
    sns, sqs = aws_client("sns"), aws_client("sqs")
    arn = sns.create_topic(Name=name)["TopicArn"]
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=queue_arn)
    return Topic(sns, sqs, arn, url)


def alerts_projection(
    aws_client: Callable[..., Any], topic: Topic, table: str, sns: Any = None
) -> InventoryAlertsProjection:
    store = IdempotencyStore(aws_client("dynamodb"), table)
    projection = InventoryAlertsProjection(
        "alerts", SnsAlertSink(sns or topic.sns, topic.arn, store)
    )
    projection.migrate()
    return projection


def summary(messages: list[dict[str, Any]]) -> Counter[tuple[Any, ...]]:
    """(product, kind, new stock) per message; the second crossing of p001 is told by event."""
    out: Counter[tuple[Any, ...]] = Counter()
    for m in messages:
        key: tuple[Any, ...] = (m["product_id"], m["alert"], m["new_stock"])
        if m["event_id"] == "event-7" and m["alert"] == OUT_OF_STOCK:
            key += (7,)
        out[key] += 1
    return out


@pytest.fixture
def topic(aws_client: Callable[..., Any], unique_name: Callable[[str], str]) -> Topic:
    return make_topic(aws_client, unique_name("alerts"))


def test_each_crossing_is_published_once_and_a_replayed_batch_publishes_nothing(
    aws_client: Callable[..., Any], topic: Topic, unique_name: Callable[[str], str]
) -> None:
    projection = alerts_projection(aws_client, topic, unique_name("idem"))
    # Per record: three records raised alerts (the last raised two), four raised none.
    assert projection.apply(SCENARIO).counts() == Counts(applied=3, filtered=4)
    first = topic.messages()
    assert summary(first) == EXPECTED
    assert first[0] | {"changed_at": None} == {
        "alert": LOW_STOCK, "product_id": "p001", "name": "商品 p001", "old_stock": 12,
        "new_stock": 8, "threshold": 10, "table": "DynamoDBShop", "event_id": "event-3",
        "sequence_number": SCENARIO[2].sequence_number, "changed_at": None,
    }  # fmt: skip
    # The whole batch again (a retry after a later failure, or a replay): nothing new.
    assert projection.apply(SCENARIO).counts() == Counts(stale=3, filtered=4)
    assert topic.messages() == []


class FlakySns:
    """A fake fault, on purpose: SNS unreachable for chosen Publish calls of a batch.

    No real part can make one Publish of a batch fail on demand; every other call goes to
    moto's real SNS.
    """

    def __init__(self, client: Any, fail_calls: set[int]) -> None:
        self._client = client
        self._fail = fail_calls
        self.calls = 0

    def publish(self, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls in self._fail:
            raise EndpointConnectionError(endpoint_url="https://sns.us-east-1.amazonaws.com")
        return self._client.publish(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_a_batch_retried_after_a_failed_publish_publishes_each_alert_exactly_once(
    aws_client: Callable[..., Any], topic: Topic, unique_name: Callable[[str], str]
) -> None:
    table = unique_name("idem")
    # The fourth alert of the batch: the second of the last record's two alerts.
    flaky = FlakySns(topic.sns, fail_calls={4})
    projection = alerts_projection(aws_client, topic, table, sns=flaky)
    first = projection.apply(SCENARIO)
    # The failure is reported on its record; the alerts of the records before it went out.
    (failure,) = first.failures()
    assert failure.record is SCENARIO[-1]
    assert isinstance(failure.error, TransientError) and "SNS publish" in str(failure.error)
    assert first.counts() == Counts(applied=2, filtered=4, failed=1)
    before_retry = topic.messages()
    assert len(before_retry) == 3
    # The failed alert's claim was released, so the retry publishes it (not lost) ...
    store = projection.sink.idempotency
    assert store.status(f"p001#{OUT_OF_STOCK}#event-7") is None
    assert store.status(f"p001#{LOW_STOCK}#event-7") == "DONE"
    assert projection.apply(SCENARIO).counts() == Counts(applied=1, stale=2, filtered=4)
    # ... and the three published before the failure are not published again.
    assert summary(before_retry + topic.messages()) == EXPECTED
    assert projection.apply(SCENARIO).counts() == Counts(stale=3, filtered=4)
    assert topic.messages() == []


def test_a_fresh_claim_held_elsewhere_waits_and_a_stale_one_is_taken_over(
    aws_client: Callable[..., Any], topic: Topic, unique_name: Callable[[str], str]
) -> None:
    table = unique_name("idem")
    projection = alerts_projection(aws_client, topic, table)
    now = [1_000_000.0]
    other = IdempotencyStore(aws_client("dynamodb"), table, clock=lambda: now[0], owner="other")
    # Another worker claimed the alert and crashed before publishing.
    alert_id = f"p001#{LOW_STOCK}#event-3"
    assert other.claim(alert_id) is Claim.CLAIMED
    assert other.status(alert_id) == PENDING
    mine = projection.sink.idempotency
    mine.clock = lambda: now[0] + 10
    (failure,) = projection.apply([SCENARIO[2]]).failures()
    assert isinstance(failure.error, TransientError) and "another worker" in str(failure.error)
    assert topic.messages() == []
    mine.clock = lambda: now[0] + mine.claim_timeout + 1
    assert projection.apply([SCENARIO[2]]).counts() == Counts(applied=1)
    assert summary(topic.messages()) == Counter({("p001", LOW_STOCK, 8): 1})


def test_migrate_is_idempotent_and_enables_ttl(
    aws_client: Callable[..., Any], topic: Topic, unique_name: Callable[[str], str]
) -> None:
    table = unique_name("idem")
    projection = alerts_projection(aws_client, topic, table)
    projection.migrate()
    ttl = aws_client("dynamodb").describe_time_to_live(TableName=table)["TimeToLiveDescription"]
    assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires_at"}
    projection.apply([SCENARIO[2]])
    item = aws_client("dynamodb").get_item(
        TableName=table, Key={"id": {"S": f"p001#{LOW_STOCK}#event-3"}}
    )["Item"]
    assert item["status"]["S"] == "DONE"
    assert int(item["expires_at"]["N"]) > SCENARIO[2].approximate_creation_time


class Resources:
    def __init__(self, aws_client: Callable[..., Any]) -> None:
        self.make = aws_client

    def aws_client(self, service: str) -> Any:
        return self.make(service)

    def postgres_pool(self) -> Any:
        raise AssertionError("not used")


def test_from_config_creates_the_topic_when_asked_and_names_bad_settings(
    aws_client: Callable[..., Any], unique_name: Callable[[str], str]
) -> None:
    name = unique_name("topic")
    arn = f"arn:aws:sns:us-east-1:123456789012:{name}"
    resources = Resources(aws_client)
    projection = InventoryAlertsProjection.from_config(
        "alerts",
        {"topic_arn": arn, "create_topic": True, "threshold": 5,
         "idempotency_table": unique_name("idem")},
        resources,  # type: ignore[arg-type]
    )  # fmt: skip
    projection.migrate()
    topics = [t["TopicArn"] for t in aws_client("sns").list_topics()["Topics"]]
    assert arn in topics and projection.threshold == 5
    with pytest.raises(ConfigError, match=r"^threshold: Input should be greater than or equal"):
        InventoryAlertsProjection.from_config("a", {"topic_arn": arn, "threshold": 0}, resources)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^topic_arn: Field required"):
        InventoryAlertsProjection.from_config("a", {}, resources)  # type: ignore[arg-type]


@st.composite
def deliveries(draw: st.DrawFn) -> list[list[ChangeRecord]]:
    """The scenario interleaved across products (each keeps its order), with redeliveries."""
    queues = {
        p: [r for r in SCENARIO if r.keys["PK"] == p] for p in ("PRODUCT#p001", "PRODUCT#p002")
    }
    order = draw(st.permutations([r.keys["PK"] for r in SCENARIO]))
    stream = [queues[pk].pop(0) for pk in order]
    repeats = draw(st.lists(st.integers(0, len(stream) - 1), max_size=8))
    delivered = list(stream)
    for n, index in enumerate(repeats):
        # The same change again later; its eventID is the same, its position is new.
        delivered.append(replace(stream[index], sequence_number=str(9_000_000 + n)))
    size = draw(st.integers(1, 5))
    return [delivered[i : i + size] for i in range(0, len(delivered), size)]


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=deliveries())
def test_any_interleaving_and_duplication_publishes_the_in_order_alerts_once(
    aws_client: Callable[..., Any],
    unique_name: Callable[[str], str],
    batches: list[list[ChangeRecord]],
) -> None:
    topic = make_topic(aws_client, unique_name("alerts"))
    projection = alerts_projection(aws_client, topic, unique_name("idem"))
    for batch in batches:
        projection.apply(batch)
    assert summary(topic.messages()) == EXPECTED
