"""The lease coordinator against moto's DynamoDB: taking, fencing, releasing, lineage."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from botocore.config import Config
from structlog.testing import capture_logs

from consumer.errors import LeaseLostError
from consumer.leases.coordinator import SHARE_TAKE_DELAY_SECONDS, LeaseCoordinator
from consumer.leases.lease import SENTINEL_LATEST, SENTINEL_SHARD_END, SENTINEL_TRIM_HORIZON
from consumer.leases.store import DynamoDBLeaseStore
from consumer.sources.shard import ShardInfo
from tests.fixtures.servers import free_port

pytestmark = pytest.mark.integration

FAILOVER = 10.0


class FakeClock:
    """A monotonic clock the test moves by hand, so lease expiry needs no sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def store(aws_client: Callable[..., Any], unique_name: Callable[[str], str]) -> DynamoDBLeaseStore:
    lease_store = DynamoDBLeaseStore(aws_client("dynamodb"), unique_name("leases"))
    lease_store.ensure_table()
    return lease_store


def coordinator(
    store: DynamoDBLeaseStore, worker: str, clock: FakeClock, **options: Any
) -> LeaseCoordinator:
    return LeaseCoordinator(
        store,
        worker,
        failover_seconds=FAILOVER,
        renew_interval=3.0,
        take_interval=5.0,
        clock=clock,
        **options,
    )


def shards(*ids: str) -> list[ShardInfo]:
    return [ShardInfo(shard_id) for shard_id in ids]


def two_workers_on_eight_shards(
    store: DynamoDBLeaseStore, **b_options: Any
) -> tuple[FakeClock, LeaseCoordinator, LeaseCoordinator]:
    """worker-a and worker-b on one clock, 8 leases created and none taken yet."""
    clock = FakeClock()
    a = coordinator(store, "worker-a", clock)
    b = coordinator(store, "worker-b", clock, **b_options)
    a.ensure_leases(shards(*(f"shard-{n}" for n in range(8))), SENTINEL_TRIM_HORIZON)
    return clock, a, b


def take_share(worker: LeaseCoordinator, clock: FakeClock) -> None:
    """Two takes: the first claims one lease (so others see this worker), the second its share."""
    worker.tick()
    clock.advance(5.0)
    worker.tick()


def test_a_lone_worker_takes_every_lease_and_logs_each(store: DynamoDBLeaseStore) -> None:
    clock = FakeClock()
    a = coordinator(store, "worker-a", clock)
    created = a.ensure_leases(shards("shard-1", "shard-2"), SENTINEL_TRIM_HORIZON)
    assert {lease.lease_key for lease in created} == {"shard-1", "shard-2"}
    assert a.ensure_leases(shards("shard-1", "shard-2"), SENTINEL_TRIM_HORIZON) == []
    with capture_logs() as logs:
        take_share(a, clock)
    assert set(a.held()) == {"shard-1", "shard-2"}
    assert a.is_held("shard-1")
    taken = [entry for entry in logs if entry["event"] == "lease taken"]
    assert {(e["shard"], e["worker"], e["log_level"]) for e in taken} == {
        ("shard-1", "worker-a", "info"),
        ("shard-2", "worker-a", "info"),
    }
    assert {lease.lease_owner for lease in store.list_leases()} == {"worker-a"}


def test_renewal_keeps_the_counter_moving(store: DynamoDBLeaseStore) -> None:
    clock = FakeClock()
    a = coordinator(store, "worker-a", clock)
    a.ensure_leases(shards("shard-1"), SENTINEL_TRIM_HORIZON)
    a.tick()
    before = store.get("shard-1").lease_counter  # type: ignore[union-attr]
    clock.advance(3.0)
    a.tick()
    assert store.get("shard-1").lease_counter == before + 1  # type: ignore[union-attr]
    assert a.held()["shard-1"].lease_counter == before + 1


def test_fencing_a_worker_whose_lease_expired_cannot_checkpoint(
    store: DynamoDBLeaseStore,
) -> None:
    clock_a, clock_b = FakeClock(), FakeClock()
    lost: list[str] = []
    a = coordinator(store, "worker-a", clock_a, on_lost=lost.append)
    b = coordinator(store, "worker-b", clock_b)
    a.ensure_leases(shards("shard-1"), SENTINEL_TRIM_HORIZON)
    a.tick()
    a.checkpoint("shard-1", "100")
    b.tick()
    assert b.held() == {}  # A's lease is live as far as B has watched

    # A stalls (no renewals); B sees the counter stand still for longer than failover.
    clock_b.advance(FAILOVER + 1)
    with capture_logs() as b_logs:
        b.tick()
    assert b.is_held("shard-1")
    assert any(e["event"] == "lease taken" and e["previous_owner"] == "worker-a" for e in b_logs)
    b.checkpoint("shard-1", "200")

    with capture_logs() as a_logs, pytest.raises(LeaseLostError):
        a.checkpoint("shard-1", "150")
    stored = store.get("shard-1")
    assert stored is not None
    assert (stored.checkpoint, stored.lease_owner) == ("200", "worker-b")
    assert not a.is_held("shard-1")
    assert lost == ["shard-1"]
    assert any(
        e["event"] == "lease lost" and e["log_level"] == "warning" and e["shard"] == "shard-1"
        for e in a_logs
    )
    with pytest.raises(LeaseLostError):
        a.checkpoint("shard-1", "160")  # never written again
    assert store.get("shard-1").checkpoint == "200"  # type: ignore[union-attr]


def test_a_failed_renewal_drops_the_lease_and_reports_it(store: DynamoDBLeaseStore) -> None:
    clock_a, clock_b = FakeClock(), FakeClock()
    lost: list[str] = []
    a = coordinator(store, "worker-a", clock_a, on_lost=lost.append)
    b = coordinator(store, "worker-b", clock_b)
    a.ensure_leases(shards("shard-1"), SENTINEL_TRIM_HORIZON)
    a.tick()
    b.tick()
    clock_b.advance(FAILOVER + 1)
    b.tick()
    assert b.is_held("shard-1")
    clock_a.advance(3.0)
    a.tick()
    assert a.held() == {}
    assert lost == ["shard-1"]


def test_a_released_lease_is_taken_at_once_without_failover(store: DynamoDBLeaseStore) -> None:
    clock_a, clock_b = FakeClock(), FakeClock()
    a = coordinator(store, "worker-a", clock_a)
    b = coordinator(store, "worker-b", clock_b)
    a.ensure_leases(shards("shard-1"), SENTINEL_TRIM_HORIZON)
    a.tick()
    a.checkpoint("shard-1", "300")
    b.tick()
    assert b.held() == {}
    with capture_logs() as logs:
        a.release_all()
    assert a.held() == {}
    assert any(e["event"] == "lease released" and e["shard"] == "shard-1" for e in logs)
    clock_b.advance(5.0)  # the next listing, well within failover
    b.tick()
    assert b.held()["shard-1"].checkpoint == "300"
    assert store.get("shard-1").lease_owner == "worker-b"  # type: ignore[union-attr]


def test_two_workers_converge_to_two_leases_each(store: DynamoDBLeaseStore) -> None:
    clock = FakeClock()
    a = coordinator(store, "worker-a", clock)
    b = coordinator(store, "worker-b", clock)
    a.ensure_leases(shards("shard-1", "shard-2", "shard-3", "shard-4"), SENTINEL_TRIM_HORIZON)
    take_share(a, clock)
    assert len(a.held()) == 4
    for _ in range(6):
        clock.advance(5.0)
        b.tick()
        a.tick()
        if len(a.held()) == len(b.held()) == 2:
            break
    assert len(a.held()) == len(b.held()) == 2
    assert not set(a.held()) & set(b.held())
    owners = [lease.lease_owner for lease in store.list_leases()]
    assert sorted(owners) == ["worker-a", "worker-a", "worker-b", "worker-b"]


def test_two_workers_starting_together_split_eight_leases_four_four_without_stealing(
    store: DynamoDBLeaseStore,
) -> None:
    clock, a, b = two_workers_on_eight_shards(store)
    with capture_logs() as logs:
        a.tick()
        b.tick()
        assert len(a.held()) == len(b.held()) == 1  # each claims one: now they see each other
        clock.advance(5.0)  # one take interval
        a.tick()
        b.tick()
    assert len(a.held()) == len(b.held()) == 4
    assert not set(a.held()) & set(b.held())
    events = [entry["event"] for entry in logs]
    assert events.count("lease taken") == 8
    assert "lease stolen" not in events


def test_a_lone_worker_takes_its_share_a_second_after_its_first_lease_not_a_take_interval(
    store: DynamoDBLeaseStore,
) -> None:
    clock = FakeClock()
    a = coordinator(store, "worker-a", clock)
    a.ensure_leases(shards(*(f"shard-{n}" for n in range(4))), SENTINEL_TRIM_HORIZON)
    a.tick()
    assert len(a.held()) == 1
    clock.advance(SHARE_TAKE_DELAY_SECONDS - 0.1)
    a.tick()
    assert len(a.held()) == 1  # not yet: workers starting with it may still announce themselves
    clock.advance(0.1)
    a.tick()
    assert len(a.held()) == 4
    clock.advance(SHARE_TAKE_DELAY_SECONDS)
    a.ensure_leases(shards(*(f"shard-{n}" for n in range(5))), SENTINEL_TRIM_HORIZON)
    a.tick()
    assert len(a.held()) == 4  # from now on, takes come a take interval apart
    clock.advance(5.0 - SHARE_TAKE_DELAY_SECONDS)
    a.tick()
    assert len(a.held()) == 5


def test_workers_starting_half_a_second_apart_split_four_four_without_stealing(
    store: DynamoDBLeaseStore,
) -> None:
    clock, a, b = two_workers_on_eight_shards(store)
    with capture_logs() as logs:
        a.tick()
        clock.advance(0.5)
        b.tick()
        clock.advance(0.5)
        a.tick()  # sees b's first lease: its share is 4
        clock.advance(0.5)
        b.tick()
    assert len(a.held()) == len(b.held()) == 4
    assert "lease stolen" not in [entry["event"] for entry in logs]


@pytest.mark.parametrize(("max_steals", "takes"), [(None, 2), (1, 4)])
def test_a_late_joiner_steals_its_share_in_one_take_after_it_announced_itself(
    store: DynamoDBLeaseStore, max_steals: int | None, takes: int
) -> None:
    clock, a, b = two_workers_on_eight_shards(store, max_steals_per_take=max_steals)
    take_share(a, clock)
    assert len(a.held()) == 8
    sizes = []
    for _ in range(takes):
        b.tick()
        sizes.append(len(b.held()))
        clock.advance(5.0)
        a.tick()  # renews, and learns which leases it lost
    assert sizes[0] == 1  # announce with one lease first
    assert sizes[-1] == 4 and len(a.held()) == 4
    assert sizes == sorted(sizes)


def test_children_start_at_trim_horizon_and_wait_for_every_parent(
    store: DynamoDBLeaseStore,
) -> None:
    clock = FakeClock()
    a = coordinator(store, "worker-a", clock)
    lineage = [
        ShardInfo("parent", ending_sequence_number="99"),
        ShardInfo("left", parent_shard_ids=("parent",)),
        ShardInfo("right", parent_shard_ids=("parent",)),
        ShardInfo("merged", parent_shard_ids=("left", "right")),
        ShardInfo("orphan", parent_shard_ids=("trimmed-long-ago",)),
    ]
    a.ensure_leases(lineage, SENTINEL_LATEST)
    checkpoints = {lease.lease_key: lease.checkpoint for lease in store.list_leases()}
    assert checkpoints == {
        "parent": SENTINEL_LATEST,
        "left": SENTINEL_TRIM_HORIZON,
        "right": SENTINEL_TRIM_HORIZON,
        "merged": SENTINEL_TRIM_HORIZON,
        "orphan": SENTINEL_LATEST,
    }
    assert store.get("merged").parent_shard_ids == {"left", "right"}  # type: ignore[union-attr]
    take_share(a, clock)
    assert a.parents_done("parent")
    assert a.parents_done("orphan")  # a parent without a lease counts as done
    assert not a.parents_done("left")
    assert not a.parents_done("merged")

    a.mark_shard_end("parent")  # split: both children may start
    assert a.held()["parent"].finished
    assert a.parents_done("left")
    assert a.parents_done("right")
    a.mark_shard_end("left")
    assert not a.parents_done("merged")  # merge: one parent is not enough
    a.mark_shard_end("right")
    assert a.parents_done("merged")
    assert store.get("right").checkpoint == SENTINEL_SHARD_END  # type: ignore[union-attr]


def test_parents_done_sees_another_workers_shard_end_after_the_next_listing(
    store: DynamoDBLeaseStore,
) -> None:
    clock = FakeClock()
    a = coordinator(store, "worker-a", clock)
    b = coordinator(store, "worker-b", clock)
    a.ensure_leases(
        [ShardInfo("parent"), ShardInfo("child", parent_shard_ids=("parent",))],
        SENTINEL_TRIM_HORIZON,
    )
    a.tick()
    b.tick()
    owner = store.get("parent").lease_owner  # type: ignore[union-attr]
    holder, other = (a, b) if owner == "worker-a" else (b, a)
    holder.mark_shard_end("parent")
    assert not other.parents_done("child")
    clock.advance(5.0)
    other.tick()
    assert other.parents_done("child")


def test_finished_leases_are_not_renewed_and_never_taken_again(
    store: DynamoDBLeaseStore,
) -> None:
    clock = FakeClock()
    a = coordinator(store, "worker-a", clock)
    b = coordinator(store, "worker-b", clock)
    a.ensure_leases(shards("shard-1"), SENTINEL_TRIM_HORIZON)
    a.tick()
    finished = a.mark_shard_end("shard-1")
    for _ in range(3):
        clock.advance(FAILOVER)
        a.tick()
        b.tick()
    assert store.get("shard-1") == finished  # untouched: no renewals of a finished lease
    assert b.held() == {}
    a.release("shard-1")
    for _ in range(3):
        clock.advance(FAILOVER)
        a.tick()
        b.tick()
    assert a.held() == b.held() == {}
    assert store.get("shard-1").checkpoint == SENTINEL_SHARD_END  # type: ignore[union-attr]


def test_checkpoints_from_shard_threads_never_race_renewals(store: DynamoDBLeaseStore) -> None:
    clock = FakeClock()
    a = coordinator(store, "worker-a", clock)
    keys = ["shard-1", "shard-2", "shard-3"]
    a.ensure_leases(shards(*keys), SENTINEL_TRIM_HORIZON)
    take_share(a, clock)
    errors: list[BaseException] = []

    def shard_loop(key: str) -> None:
        try:
            for sequence in range(1, 61):
                a.checkpoint(key, str(sequence))
        except BaseException as error:  # reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=shard_loop, args=(key,), daemon=True) for key in keys]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        clock.advance(3.0)  # every tick renews, concurrently with the checkpoints
        a.tick()
    for thread in threads:
        thread.join()
    assert errors == []
    assert set(a.held()) == set(keys)
    assert {lease.checkpoint for lease in store.list_leases()} == {"60"}


class SwitchableStore:
    """Routes every call to the live table or to an endpoint nobody listens on."""

    def __init__(self, up: DynamoDBLeaseStore, down: DynamoDBLeaseStore) -> None:
        self.up, self.down = up, down
        self.current = up

    def __getattr__(self, name: str) -> Any:
        return getattr(self.current, name)


def test_renewals_failing_past_failover_drop_the_lease(store: DynamoDBLeaseStore) -> None:
    unreachable = boto3.client(
        "dynamodb",
        region_name="us-east-1",
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        config=Config(retries={"max_attempts": 1}, connect_timeout=1),
    )
    switch = SwitchableStore(store, DynamoDBLeaseStore(unreachable, store.table_name))
    clock = FakeClock()
    lost: list[str] = []
    a = LeaseCoordinator(
        switch, "worker-a", failover_seconds=FAILOVER, clock=clock, on_lost=lost.append
    )
    a.ensure_leases(shards("shard-1"), SENTINEL_TRIM_HORIZON)
    a.tick()
    switch.current = switch.down
    clock.advance(3.0)
    a.tick()
    assert a.is_held("shard-1")  # a blip shorter than failover is ridden out
    clock.advance(FAILOVER)
    a.tick()
    assert not a.is_held("shard-1")  # others may have taken it by now: stop reading it
    assert lost == ["shard-1"]


def test_finished_leases_of_shards_gone_from_the_stream_are_deleted(
    store: DynamoDBLeaseStore,
) -> None:
    from consumer.leases.lease import Lease

    store.create_if_absent(Lease("shard-gone", checkpoint=SENTINEL_SHARD_END))
    store.create_if_absent(Lease("shard-closed-still-listed", checkpoint=SENTINEL_SHARD_END))
    store.create_if_absent(Lease("shard-open-unlisted", checkpoint="12345"))
    store.create_if_absent(
        Lease("shard-child", parent_shard_ids=frozenset({"shard-gone"}), checkpoint="1")
    )
    a = coordinator(store, "worker-a", FakeClock())
    a.tick()

    deleted = a.delete_finished({"shard-closed-still-listed", "shard-child"})

    assert deleted == ["shard-gone"]
    assert {lease.lease_key for lease in store.list_leases()} == {
        "shard-closed-still-listed",
        "shard-open-unlisted",
        "shard-child",
    }
    assert a.parents_done("shard-child")  # a deleted parent counts as finished
