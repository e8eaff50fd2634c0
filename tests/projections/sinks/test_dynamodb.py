"""The guarded DynamoDB sink against moto's server: guards, coalescing, concurrency, errors."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import boto3
import pytest
from botocore.config import Config

from consumer.errors import PoisonError, ThrottledError, TransientError
from consumer.record import ChangeRecord, position_of
from projections.results import Outcome, Results
from projections.sinks.dynamodb import DynamoDBSink, GuardedUpdate, Write, coalesce
from tests.fixtures.aws import REGION
from tests.fixtures.servers import free_port
from tests.support.canned import inject_error


@pytest.fixture
def client(moto_endpoint: str) -> Any:
    return boto3.client(
        "dynamodb",
        region_name=REGION,
        endpoint_url=moto_endpoint,
        config=Config(max_pool_connections=16),
    )


@pytest.fixture
def table(client: Any, unique_name: Callable[[str], str]) -> Iterator[str]:
    name = unique_name("sink")
    client.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
    )
    yield name
    client.delete_table(TableName=name)


def update_calls(client: Any) -> list[dict[str, Any]]:
    """Every UpdateItem the client really sends, recorded by a botocore event hook."""
    calls: list[dict[str, Any]] = []
    client.meta.events.register(
        "before-parameter-build.dynamodb.UpdateItem", lambda params, **_: calls.append(params)
    )
    return calls


def item(client: Any, table: str, pk: str) -> dict[str, Any]:
    return client.get_item(TableName=table, Key={"pk": {"S": pk}}, ConsistentRead=True)["Item"]


def pos(n: int) -> str:
    return position_of(str(n))


def change(n: int) -> ChangeRecord:
    """A record for an update to stand for (the sink reads nothing from it)."""
    return ChangeRecord("dynamodb", "s", "shard-0", str(n + 1), "INSERT", {}, None, None, None)


def paired(updates: list[GuardedUpdate]) -> list[Write]:
    """Each update written on behalf of a record of its own."""
    return [(change(n), update) for n, update in enumerate(updates)]


def error_of(results: Results) -> BaseException:
    """The one error the failed records share."""
    (error,) = {id(r.error): r.error for r in results.failures()}.values()
    assert error is not None
    return error


def test_newer_position_applies_and_stale_or_repeated_is_skipped(client: Any, table: str) -> None:
    sink = DynamoDBSink(client, table)
    newer = GuardedUpdate({"pk": "a"}, "g", pos(20), {"v": "new"})
    older = GuardedUpdate({"pk": "a"}, "g", pos(10), {"v": "old"})

    assert sink.write(paired([newer])).counts().applied == 1
    repeated = sink.write(paired([newer]))
    stale = sink.write(paired([older]))

    assert (repeated.counts().applied, repeated.counts().stale) == (0, 1)
    assert (stale.counts().applied, stale.counts().stale) == (0, 1)
    stored = item(client, table, "a")
    assert stored["v"] == {"S": "new"}
    assert stored["g"] == {"S": pos(20)}


def test_positions_compare_numerically_across_digit_counts(client: Any, table: str) -> None:
    sink = DynamoDBSink(client, table)
    sink.write(paired([GuardedUpdate({"pk": "a"}, "g", pos(100), {"v": "100"})]))
    outcome = sink.write(paired([GuardedUpdate({"pk": "a"}, "g", pos(99), {"v": "99"})]))
    assert outcome.counts().stale == 1
    assert item(client, table, "a")["v"] == {"S": "100"}


def test_same_key_and_guard_coalesce_into_one_call_with_the_last_state(
    client: Any, table: str
) -> None:
    calls = update_calls(client)
    sink = DynamoDBSink(client, table)
    updates = [GuardedUpdate({"pk": "a"}, "g", pos(n), {"v": n}) for n in range(1, 11)]

    outcome = sink.write(paired(updates))

    assert len(calls) == 1
    assert outcome.counts().applied == 10
    assert item(client, table, "a")["v"] == {"N": "10"}


def test_coalesced_updates_take_the_outcome_of_the_write_that_replaced_them(
    client: Any, table: str
) -> None:
    sink = DynamoDBSink(client, table)
    sink.write(paired([GuardedUpdate({"pk": "a"}, "g", pos(100), {"v": "x"})]))
    outcome = sink.write(
        paired([GuardedUpdate({"pk": "a"}, "g", pos(n), {"v": n}) for n in (1, 2, 3)])
    )
    assert (outcome.counts().applied, outcome.counts().stale) == (0, 3)


def test_removal_in_the_last_update_wins_over_an_earlier_assignment(
    client: Any, table: str
) -> None:
    sink = DynamoDBSink(client, table)
    sink.write(
        paired(
            [
                GuardedUpdate({"pk": "a"}, "g", pos(1), {"v": "x", "w": Decimal("1.5")}),
                GuardedUpdate({"pk": "a"}, "g", pos(2), {"w": Decimal("2.5")}, remove=("v",)),
            ]
        )
    )
    stored = item(client, table, "a")
    assert "v" not in stored
    assert stored["w"] == {"N": "2.5"}


def test_different_guards_on_one_key_are_separate_writes_in_order(client: Any, table: str) -> None:
    calls = update_calls(client)
    sink = DynamoDBSink(client, table)
    outcome = sink.write(
        paired(
            [
                GuardedUpdate({"pk": "a"}, "flight", pos(1), {"f": "1", "at": "t1"}),
                GuardedUpdate({"pk": "a"}, "hotel", pos(2), {"h": "2", "at": "t2"}),
                GuardedUpdate({"pk": "a"}, "flight", pos(3), {"f": "3", "at": "t3"}),
            ]
        )
    )
    assert outcome.counts().applied == 3
    # flight's winner (position 3) comes after hotel's, so it is sent last and its `at` stays.
    assert [c["ExpressionAttributeNames"]["#g"] for c in calls] == ["hotel", "flight"]
    stored = item(client, table, "a")
    assert (stored["f"], stored["h"], stored["at"]) == ({"S": "3"}, {"S": "2"}, {"S": "t3"})


def test_keys_are_written_concurrently(client: Any, table: str) -> None:
    # Two different keys must be in flight at once: the barrier only opens for two callers.
    barrier = threading.Barrier(2, timeout=10)
    met: list[bool] = []

    def rendezvous(**_: Any) -> None:
        if len(met) < 2:
            try:
                barrier.wait()
                met.append(True)
            except threading.BrokenBarrierError:
                met.append(False)

    client.meta.events.register("before-send.dynamodb.UpdateItem", rendezvous)
    sink = DynamoDBSink(client, table, max_workers=4)
    outcome = sink.write(paired([GuardedUpdate({"pk": k}, "g", pos(1), {"v": k}) for k in "abcd"]))
    assert outcome.counts().applied == 4
    assert met[:2] == [True, True]


def test_writes_to_one_key_never_overlap(client: Any, table: str) -> None:
    # While the first write of key "a" is on the wire, a second one must not start: we wait
    # for it briefly, and only a sink that broke per-key order would send it.
    first_sent = threading.Event()
    second_started = threading.Event()
    overlapped: list[bool] = []

    def watch(params: dict[str, Any], **_: Any) -> None:
        if params["Key"]["pk"]["S"] != "a":
            return
        if not first_sent.is_set():
            first_sent.set()
            overlapped.append(second_started.wait(timeout=0.5))
        else:
            second_started.set()

    client.meta.events.register("before-parameter-build.dynamodb.UpdateItem", watch)
    sink = DynamoDBSink(client, table, max_workers=8)
    updates = [
        GuardedUpdate({"pk": "a"}, "g1", pos(1), {"x": "1"}),
        GuardedUpdate({"pk": "b"}, "g1", pos(2), {"x": "2"}),
        GuardedUpdate({"pk": "a"}, "g2", pos(3), {"y": "3"}),
    ]
    assert sink.write(paired(updates)).counts().applied == 3
    assert overlapped == [False]
    assert second_started.is_set()  # the second write did happen, after the first returned
    stored = item(client, table, "a")
    assert (stored["x"], stored["y"]) == ({"S": "1"}, {"S": "3"})


def test_coalesce_keeps_the_highest_position_even_when_it_came_first() -> None:
    updates = [
        GuardedUpdate({"pk": "a"}, "g", pos(5), {"v": 5}),
        GuardedUpdate({"pk": "a"}, "g", pos(4), {"v": 4}),
    ]
    writes = paired(updates)
    [[(winner, records)]] = coalesce(writes)
    assert winner.assign == {"v": 5}
    assert records == [record for record, _ in writes]


def test_rejected_write_is_poison_naming_the_key(client: Any, table: str) -> None:
    sink = DynamoDBSink(client, table)
    results = sink.write(paired([GuardedUpdate({"id": "wrong-key"}, "g", pos(1), {"v": "x"})]))
    assert isinstance(error_of(results), PoisonError)
    assert "wrong-key" in str(error_of(results))


def test_unserializable_value_is_poison(client: Any, table: str) -> None:
    sink = DynamoDBSink(client, table)
    results = sink.write(paired([GuardedUpdate({"pk": "a"}, "g", pos(1), {"v": 1.5})]))
    assert isinstance(error_of(results), PoisonError)
    assert "'pk': 'a'" in str(error_of(results))


def test_update_touching_an_attribute_twice_is_refused() -> None:
    with pytest.raises(PoisonError):
        GuardedUpdate({"pk": "a"}, "g", pos(1), {"v": 1}, remove=("v",))


def test_missing_table_is_transient(client: Any, unique_name: Callable[[str], str]) -> None:
    sink = DynamoDBSink(client, unique_name("absent"))
    results = sink.write(paired([GuardedUpdate({"pk": "a"}, "g", pos(1), {"v": "x"})]))
    assert isinstance(error_of(results), TransientError)


def test_unreachable_endpoint_is_transient() -> None:
    closed = boto3.client(
        "dynamodb",
        region_name=REGION,
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        config=Config(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=1),
    )
    sink = DynamoDBSink(closed, "t")
    results = sink.write(paired([GuardedUpdate({"pk": "a"}, "g", pos(1), {"v": "x"})]))
    assert isinstance(error_of(results), TransientError)


@pytest.mark.parametrize(
    ("status", "code", "error"),
    [
        (400, "ProvisionedThroughputExceededException", ThrottledError),
        (400, "ThrottlingException", ThrottledError),
        (500, "InternalServerError", TransientError),
        (503, "ServiceUnavailable", TransientError),
    ],
)
def test_each_key_reports_its_own_failure_and_healthy_keys_are_written(
    moto_endpoint: str, table: str, status: int, code: str, error: type[Exception]
) -> None:
    # One key fails because of the sink, another for good, a third is fine: each record says
    # which (the pipeline then waits out the transient one rather than bisecting).
    client = boto3.client(
        "dynamodb",
        region_name=REGION,
        endpoint_url=moto_endpoint,
        config=Config(retries={"max_attempts": 0, "mode": "standard"}),
    )
    inject_error(client, "UpdateItem", code, status)  # the first write: key "hot"
    sink = DynamoDBSink(client, table, max_workers=1)
    batch = paired(
        [
            GuardedUpdate({"pk": "hot"}, "g", pos(1), {"v": "x"}),
            GuardedUpdate({"id": "bad"}, "g", pos(1), {"v": "x"}),
            GuardedUpdate({"pk": "ok"}, "g", pos(1), {"v": "x"}),
        ]
    )
    results = sink.write(batch)
    hot, bad, ok = (results.get(record) for record, _ in batch)
    assert hot is not None and isinstance(hot.error, error) and "hot" in str(hot.error)
    assert bad is not None and isinstance(bad.error, PoisonError)
    assert ok is not None and ok.outcome is Outcome.APPLIED
    assert item(client, table, "ok")["v"] == {"S": "x"}  # healthy keys are still written


def test_a_failed_write_leaves_the_later_writes_of_its_key_unreported(
    moto_endpoint: str, table: str
) -> None:
    # Key order: after hot's first write fails, its second must not be sent, and its record
    # is left out of the results (not attempted) so that the pipeline retries it.
    client = boto3.client(
        "dynamodb",
        region_name=REGION,
        endpoint_url=moto_endpoint,
        config=Config(retries={"max_attempts": 0, "mode": "standard"}),
    )
    inject_error(client, "UpdateItem", "InternalServerError", 500)
    sink = DynamoDBSink(client, table)
    batch = paired(
        [
            GuardedUpdate({"pk": "hot"}, "g1", pos(1), {"x": "1"}),
            GuardedUpdate({"pk": "hot"}, "g2", pos(2), {"y": "2"}),
            GuardedUpdate({"pk": "hot"}, "g1", pos(0), {"x": "0"}),
        ]
    )
    results = sink.write(batch)
    first, second, coalesced = (results.get(record) for record, _ in batch)
    assert first is not None and first.outcome is Outcome.FAILED
    assert coalesced is not None and coalesced.error is first.error  # in the failed write
    assert second is None
