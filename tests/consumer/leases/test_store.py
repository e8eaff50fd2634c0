"""The lease table against moto's DynamoDB server: KCL items and conditional writes."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from botocore.config import Config

from consumer.errors import LeaseLostError, TransientError
from consumer.leases.lease import SENTINEL_LATEST, SENTINEL_SHARD_END, SENTINEL_TRIM_HORIZON, Lease
from consumer.leases.store import DynamoDBLeaseStore
from tests.fixtures.servers import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def dynamodb(aws_client: Callable[..., Any]) -> Any:
    return aws_client("dynamodb")


@pytest.fixture
def store(dynamodb: Any, unique_name: Callable[[str], str]) -> DynamoDBLeaseStore:
    lease_store = DynamoDBLeaseStore(dynamodb, unique_name("leases"))
    lease_store.ensure_table()
    return lease_store


def raw_item(store: DynamoDBLeaseStore, key: str) -> dict[str, Any]:
    response = store._client.get_item(
        TableName=store.table_name, Key={"leaseKey": {"S": key}}, ConsistentRead=True
    )
    return response["Item"]


def held_by(store: DynamoDBLeaseStore, key: str, owner: str) -> Lease:
    store.create_if_absent(Lease(key))
    lease = store.get(key)
    assert lease is not None
    return store.take(lease, owner)


def test_ensure_table_creates_on_demand_table_keyed_by_lease_key(
    dynamodb: Any, unique_name: Callable[[str], str]
) -> None:
    store = DynamoDBLeaseStore(dynamodb, unique_name("leases"))
    store.ensure_table()
    table = dynamodb.describe_table(TableName=store.table_name)["Table"]
    assert table["TableStatus"] == "ACTIVE"
    assert table["KeySchema"] == [{"AttributeName": "leaseKey", "KeyType": "HASH"}]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"


def test_ensure_table_is_idempotent_and_tolerates_concurrent_creators(
    aws_client: Callable[..., Any], unique_name: Callable[[str], str]
) -> None:
    name = unique_name("leases")
    errors: list[BaseException] = []

    def create() -> None:
        try:
            DynamoDBLeaseStore(aws_client("dynamodb"), name).ensure_table()
        except BaseException as error:  # collected and asserted on below
            errors.append(error)

    threads = [threading.Thread(target=create, daemon=True) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    store = DynamoDBLeaseStore(aws_client("dynamodb"), name)
    store.create_if_absent(Lease("shard-1"))
    store.ensure_table()
    assert [lease.lease_key for lease in store.list_leases()] == ["shard-1"]


def test_create_if_absent_writes_once_with_kcl_attribute_names(store: DynamoDBLeaseStore) -> None:
    lease = Lease("shard-2", checkpoint=SENTINEL_LATEST, parent_shard_ids=frozenset({"shard-0"}))
    assert store.create_if_absent(lease) is True
    assert store.create_if_absent(lease.with_(checkpoint=SENTINEL_TRIM_HORIZON)) is False
    assert raw_item(store, "shard-2") == {
        "leaseKey": {"S": "shard-2"},
        "leaseCounter": {"N": "0"},
        "checkpoint": {"S": "LATEST"},
        "checkpointSubSequenceNumber": {"N": "0"},
        "ownerSwitchesSinceCheckpoint": {"N": "0"},
        "parentShardId": {"SS": ["shard-0"]},
    }
    assert store.get("shard-2") == lease
    assert store.get("missing") is None


def test_lease_without_parents_omits_parent_shard_id(store: DynamoDBLeaseStore) -> None:
    store.create_if_absent(Lease("shard-1"))
    assert "parentShardId" not in raw_item(store, "shard-1")


def test_take_sets_owner_bumps_counter_and_counts_owner_switches(
    store: DynamoDBLeaseStore,
) -> None:
    store.create_if_absent(Lease("shard-1"))
    first = store.take(Lease("shard-1"), "worker-a")
    assert (first.lease_owner, first.lease_counter, first.owner_switches_since_checkpoint) == (
        "worker-a",
        1,
        1,
    )
    second = store.take(first, "worker-b")
    assert (second.lease_owner, second.lease_counter, second.owner_switches_since_checkpoint) == (
        "worker-b",
        2,
        2,
    )
    item = raw_item(store, "shard-1")
    assert item["leaseOwner"] == {"S": "worker-b"}
    assert item["leaseCounter"] == {"N": "2"}
    assert item["ownerSwitchesSinceCheckpoint"] == {"N": "2"}


def test_take_of_a_stale_observation_is_rejected(store: DynamoDBLeaseStore) -> None:
    store.create_if_absent(Lease("shard-1"))
    observed = Lease("shard-1")
    store.take(observed, "worker-a")
    with pytest.raises(LeaseLostError):
        store.take(observed, "worker-b")
    assert store.get("shard-1").lease_owner == "worker-a"  # type: ignore[union-attr]


def test_take_of_an_unowned_observation_requires_the_owner_still_absent(
    store: DynamoDBLeaseStore,
) -> None:
    store.create_if_absent(Lease("shard-1"))
    store._client.update_item(
        TableName=store.table_name,
        Key={"leaseKey": {"S": "shard-1"}},
        UpdateExpression="SET leaseOwner = :o",
        ExpressionAttributeValues={":o": {"S": "kcl-worker"}},
    )
    with pytest.raises(LeaseLostError):
        store.take(Lease("shard-1"), "worker-b")


def test_renew_bumps_counter_only_for_the_owner_at_the_expected_counter(
    store: DynamoDBLeaseStore,
) -> None:
    lease = held_by(store, "shard-1", "worker-a")
    renewed = store.renew(lease)
    assert renewed.lease_counter == lease.lease_counter + 1
    assert renewed.lease_owner == "worker-a"
    again = store.renew(renewed)
    with pytest.raises(LeaseLostError):
        store.renew(lease)  # two writes behind: not a retry of ours, the counter moved on
    with pytest.raises(LeaseLostError):
        store.renew(again.with_(lease_owner="worker-b"))
    assert raw_item(store, "shard-1")["leaseCounter"] == {"N": str(again.lease_counter)}


def test_checkpoint_is_fenced_and_resets_owner_switches(store: DynamoDBLeaseStore) -> None:
    lease = held_by(store, "shard-1", "worker-a")
    done = store.checkpoint(lease, "49590338271490256608559692538361571095921575989136588898", 3)
    item = raw_item(store, "shard-1")
    assert item["checkpoint"] == {"S": "49590338271490256608559692538361571095921575989136588898"}
    assert item["checkpointSubSequenceNumber"] == {"N": "3"}
    assert item["ownerSwitchesSinceCheckpoint"] == {"N": "0"}
    assert item["leaseCounter"] == {"N": str(lease.lease_counter + 1)}
    assert done == store.get("shard-1")
    with pytest.raises(LeaseLostError):
        store.checkpoint(lease, "999", 0)  # the counter moved on
    stolen = store.take(done, "worker-b")
    with pytest.raises(LeaseLostError):
        store.checkpoint(done, SENTINEL_SHARD_END, 0)
    assert store.get("shard-1") == stolen


def test_release_removes_owner_and_bumps_counter(store: DynamoDBLeaseStore) -> None:
    lease = held_by(store, "shard-1", "worker-a")
    released = store.release(lease)
    assert released.lease_owner is None
    assert released.lease_counter == lease.lease_counter + 1
    assert "leaseOwner" not in raw_item(store, "shard-1")
    taken = store.take(released, "worker-b")
    assert taken.lease_owner == "worker-b"
    with pytest.raises(LeaseLostError):
        store.release(lease)  # worker-a let go; it cannot release worker-b's lease
    assert store.get("shard-1") == taken


def test_lost_response_of_our_own_write_counts_as_success(store: DynamoDBLeaseStore) -> None:
    # What botocore's retry of a request whose first attempt did succeed runs into.
    lease = held_by(store, "shard-1", "worker-a")
    first = store.checkpoint(lease, "100", 0)
    assert store.checkpoint(lease, "100", 0) == first
    with pytest.raises(LeaseLostError):
        store.checkpoint(lease, "200", 0)  # same counter, different write: not ours
    renewed = store.renew(lease)  # a renewal retried after its response was lost
    assert renewed == store.get("shard-1")


def test_list_leases_follows_every_page_and_delete_removes(
    dynamodb: Any, store: DynamoDBLeaseStore
) -> None:
    for index in range(30):
        store.create_if_absent(Lease(f"shardId-{index:012d}"))
    paged = DynamoDBLeaseStore(dynamodb, store.table_name, page_size=7)
    assert len(paged.list_leases()) == 30
    store.delete("shardId-000000000000")
    assert store.get("shardId-000000000000") is None
    assert len(paged.list_leases()) == 29


def test_unreachable_table_raises_transient_error() -> None:
    client = boto3.client(
        "dynamodb",
        region_name="us-east-1",
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        config=Config(retries={"max_attempts": 1}, connect_timeout=1),
    )
    with pytest.raises(TransientError):
        DynamoDBLeaseStore(client, "nowhere").list_leases()
