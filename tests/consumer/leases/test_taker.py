"""The balancing decision, without I/O: expiry by observation, fair share, steals."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import pytest

from consumer.leases.lease import SENTINEL_SHARD_END, Lease
from consumer.leases.taker import (
    Observation,
    is_expired,
    observe,
    plan_takes,
    target_count,
)

FAILOVER = 10.0


def leases_owned(owners: list[str | None]) -> list[Lease]:
    return [Lease(f"shard-{i:02d}", lease_owner=o, lease_counter=1) for i, o in enumerate(owners)]


def fresh(leases: list[Lease], now: float = 0.0) -> dict[str, Observation]:
    return observe({}, leases, now)


def test_unowned_leases_are_taken_up_to_the_target() -> None:
    leases = leases_owned(["me", None, None, None])
    plan = plan_takes(leases, "me", fresh(leases), FAILOVER, now=0.0)
    assert len(plan.to_take) == 3  # alone: the whole set is my share
    assert plan.to_steal == ()

    leases = leases_owned(["other", "other", "me", None, None, None])
    plan = plan_takes(leases, "me", fresh(leases), FAILOVER, now=0.0)
    assert len(plan.to_take) == 2  # ceil(6 / 2), one held
    assert {lease.lease_owner for lease in plan.to_take} == {None}
    assert len(plan.spares) == 1  # the other free lease, should another worker win a race


def test_a_worker_holding_nothing_claims_one_lease_first() -> None:
    # Invisible to the others until it holds a lease, it must not take their share too.
    leases = leases_owned([None] * 8)
    plan = plan_takes(leases, "me", fresh(leases), FAILOVER, now=0.0)
    assert len(plan.to_take) == 1
    assert len(plan.spares) == 7  # for a race lost to a worker starting at the same moment
    leases = leases_owned(["busy"] * 8)
    plan = plan_takes(leases, "me", fresh(leases), FAILOVER, now=0.0, max_steals=None)
    assert len(plan.to_steal) == 1


def test_owned_lease_first_seen_expires_only_after_failover_of_our_own_watching() -> None:
    lease = Lease("shard-00", lease_owner="other", lease_counter=7)
    seen = observe({}, [lease], now=100.0)
    assert not is_expired(lease, seen, FAILOVER, now=100.0)
    assert not is_expired(lease, seen, FAILOVER, now=110.0)
    assert is_expired(lease, seen, FAILOVER, now=110.5)


def test_a_counter_that_moves_keeps_the_lease_alive() -> None:
    lease = Lease("shard-00", lease_owner="other", lease_counter=7)
    seen = observe({}, [lease], now=0.0)
    renewed = lease.with_(lease_counter=8)
    seen = observe(seen, [renewed], now=9.0)
    assert not is_expired(renewed, seen, FAILOVER, now=18.0)
    assert is_expired(renewed, seen, FAILOVER, now=19.5)
    # Unchanged counters keep their first sighting; leases gone from the table are forgotten.
    assert observe(seen, [renewed], now=30.0)["shard-00"] == Observation(8, 9.0)
    assert observe(seen, [], now=30.0) == {}


def test_expired_leases_are_taken_and_their_dead_owner_does_not_count_as_a_worker() -> None:
    leases = leases_owned(["dead"] * 4)
    seen = fresh(leases, now=0.0)
    before = plan_takes(leases, "me", seen, FAILOVER, now=5.0)
    assert before.to_take == ()  # still live: at most one steal toward half
    assert len(before.to_steal) == 1
    mine = Lease("shard-mine", lease_owner="me", lease_counter=1)
    seen = {**seen, **fresh([mine], now=11.0)}
    after = plan_takes([*leases, mine], "me", seen, FAILOVER, now=11.0)
    assert len(after.to_take) == 4
    assert after.to_steal == ()


def test_finished_leases_never_count_and_are_never_taken() -> None:
    leases = [
        Lease("done-1", checkpoint=SENTINEL_SHARD_END),
        Lease("done-2", lease_owner="other", lease_counter=3, checkpoint=SENTINEL_SHARD_END),
        Lease("open-1", lease_owner="other", lease_counter=3),
        Lease("open-2"),
    ]
    mine = Lease("open-3", lease_owner="me", lease_counter=1)
    seen = {**fresh(leases), **fresh([mine], now=100.0)}  # mine: renewed just now
    plan = plan_takes([*leases, mine], "me", seen, FAILOVER, now=100.0)
    assert sorted(lease.lease_key for lease in plan.to_take) == ["open-1", "open-2"]
    plan = plan_takes(leases, "me", fresh(leases), FAILOVER, now=0.0)
    assert [lease.lease_key for lease in plan.to_take] == ["open-2"]  # 2 active, 2 workers


def test_steals_one_lease_from_the_most_loaded_worker_when_below_target() -> None:
    leases = leases_owned(["busy"] * 5 + ["calm"] * 3)
    plan = plan_takes(leases, "me", fresh(leases), FAILOVER, now=0.0)
    assert plan.to_take == ()
    assert [lease.lease_owner for lease in plan.to_steal] == ["busy"]


def test_steals_up_to_the_share_from_whoever_is_above_target_when_allowed() -> None:
    leases = leases_owned(["busy"] * 6 + ["calm"] * 4 + ["me"] * 2)  # 12 leases, target 4
    plan = plan_takes(leases, "me", fresh(leases), FAILOVER, now=0.0, max_steals=None)
    assert sorted(lease.lease_owner or "" for lease in plan.to_steal) == ["busy", "busy"]
    assert len({lease.lease_key for lease in plan.to_steal}) == 2
    leases = leases_owned(["a"] * 3 + ["b"] * 3 + ["c"] * 3 + ["me"])  # 10 leases, target 3
    plan = plan_takes(leases, "me", fresh(leases), FAILOVER, now=0.0, max_steals=None)
    # Two short: one steal from a worker at target, then one short, and at target is enough.
    assert len(plan.to_steal) == 1
    plan = plan_takes(leases, "me", fresh(leases), FAILOVER, now=0.0, max_steals=5)
    assert len(plan.to_steal) == 1


def test_no_steal_from_a_worker_at_target_when_one_short() -> None:
    leases = leases_owned(["a", "a", "me"])  # target ceil(3/2)=2: a at target, me one short
    assert plan_takes(leases, "me", fresh(leases), FAILOVER, now=0.0).empty
    leases = leases_owned(["a", "a", "a", "b", "b", "b", "me"])  # target 3, two short
    plan = plan_takes(leases, "me", fresh(leases), FAILOVER, now=0.0)
    assert len(plan.to_steal) == 1
    leases = leases_owned(["a"] * 3 + ["b"] * 3 + ["c"] * 3)  # target 3, I hold none
    plan = plan_takes(leases, "me", fresh(leases), FAILOVER, now=0.0)
    assert len(plan.to_steal) == 1  # all at target, but a worker with none must get in


def test_max_leases_per_worker_caps_the_target() -> None:
    leases = leases_owned(["me"] + [None] * 9)
    plan = plan_takes(leases, "me", fresh(leases), FAILOVER, now=0.0, max_leases_per_worker=3)
    assert len(plan.to_take) == 2
    assert target_count(10, 1, 3) == 3
    assert target_count(0, 3, None) == 0
    assert target_count(2, 5, None) == 1


# --- a simulated fleet: the taker's decisions against a table with conditional writes -----


@dataclass
class SimWorker:
    """A worker's view: what it believes it holds, and what it has observed."""

    name: str
    held: dict[str, Lease] = field(default_factory=dict)
    seen: dict[str, Observation] = field(default_factory=dict)
    alive: bool = True


@dataclass
class SimTable:
    """The lease table's conditional semantics, plus a log of who wrote each lease."""

    leases: dict[str, Lease]
    last_taker: dict[str, str] = field(default_factory=dict)
    moves: int = 0

    def take(self, observed: Lease, owner: str) -> Lease | None:
        stored = self.leases[observed.lease_key]
        if (stored.lease_counter, stored.lease_owner) != (
            observed.lease_counter,
            observed.lease_owner,
        ):
            return None
        taken = stored.with_(lease_owner=owner, lease_counter=stored.lease_counter + 1)
        self.leases[observed.lease_key] = taken
        self.last_taker[observed.lease_key] = owner
        self.moves += 1
        return taken

    def write(self, held: Lease) -> Lease | None:
        """A renewal or checkpoint: fenced by owner and counter."""
        stored = self.leases[held.lease_key]
        if (stored.lease_counter, stored.lease_owner) != (held.lease_counter, held.lease_owner):
            return None
        # Fencing: a write that succeeds comes from whoever took the lease last.
        assert self.last_taker[held.lease_key] == held.lease_owner
        written = stored.with_(lease_counter=stored.lease_counter + 1)
        self.leases[held.lease_key] = written
        return written


def run_round(
    table: SimTable,
    workers: list[SimWorker],
    now: float,
    rng: random.Random,
    max_steals: int | None = 1,
) -> None:
    # Everyone lists at the same moment, so concurrent claims of one lease really collide.
    listing = list(table.leases.values())
    for worker in rng.sample(workers, len(workers)):
        if not worker.alive:
            continue
        for key, lease in list(worker.held.items()):
            written = table.write(lease)
            if written is None:
                del worker.held[key]
            else:
                worker.held[key] = written
        worker.seen = observe(worker.seen, listing, now)
        plan = plan_takes(
            listing, worker.name, worker.seen, FAILOVER, now, rng=rng, max_steals=max_steals
        )
        spares = list(plan.spares)
        claims = list(plan.to_take) + list(plan.to_steal)
        while claims:
            lease = claims.pop(0)
            taken = table.take(lease, worker.name)
            if taken is not None:
                worker.held[lease.lease_key] = taken
            elif lease not in plan.to_steal and spares:
                claims.insert(0, spares.pop(0))  # a lost race for a free lease: take a spare
        assert_single_valid_holder(table, workers)


def assert_single_valid_holder(table: SimTable, workers: list[SimWorker]) -> None:
    """No lease is held by two at once: at most one belief matches the table's item."""
    for key, stored in table.leases.items():
        valid = [
            w.name
            for w in workers
            if w.alive
            and key in w.held
            and w.held[key].lease_counter == stored.lease_counter
            and w.held[key].lease_owner == stored.lease_owner
        ]
        assert len(valid) <= 1, (key, valid)


def balanced(table: SimTable, workers: list[SimWorker]) -> bool:
    alive = [w for w in workers if w.alive]
    share = len(table.leases) / len(alive)
    counts = {w.name: 0 for w in alive}
    for lease in table.leases.values():
        if lease.lease_owner not in counts:
            return False
        counts[lease.lease_owner] += 1
    return all(abs(count - share) < 1 for count in counts.values())


def run_until_balanced(
    table: SimTable,
    workers: list[SimWorker],
    now: float,
    rng: random.Random,
    limit: int,
    max_steals: int | None = 1,
) -> float:
    for _ in range(limit):
        now += 1.0
        run_round(table, workers, now, rng, max_steals=max_steals)
        if balanced(table, workers):
            return now
    pytest.fail(f"not balanced after {limit} rounds: {table.leases}")


@pytest.mark.parametrize("max_steals", [1, None])
@pytest.mark.parametrize("worker_count", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("lease_count", [1, 4, 7, 12])
def test_fleet_converges_to_an_even_share_and_stays_there(
    worker_count: int, lease_count: int, max_steals: int | None
) -> None:
    rng = random.Random(worker_count * 100 + lease_count)
    table = SimTable({f"shard-{i:02d}": Lease(f"shard-{i:02d}") for i in range(lease_count)})
    workers = [SimWorker(f"worker-{i}") for i in range(worker_count)]
    # One steal per worker per round: a bound linear in the number of leases.
    now = run_until_balanced(table, workers, 0.0, rng, limit=lease_count + 3, max_steals=max_steals)
    moves = table.moves
    for _ in range(30):
        now += 1.0
        run_round(table, workers, now, rng, max_steals=max_steals)
        assert balanced(table, workers)
    assert table.moves == moves  # balanced means settled: no lease keeps changing hands


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize(("worker_count", "lease_count"), [(2, 8), (3, 12), (4, 8), (2, 3)])
def test_workers_starting_together_take_their_share_in_two_rounds_without_stealing(
    seed: int, worker_count: int, lease_count: int
) -> None:
    rng = random.Random(seed)
    table = SimTable({f"shard-{i:02d}": Lease(f"shard-{i:02d}") for i in range(lease_count)})
    workers = [SimWorker(f"worker-{i}") for i in range(worker_count)]
    run_round(table, workers, 1.0, rng)  # everyone lists the same free leases at once
    assert [len(worker.held) for worker in workers] == [1] * worker_count
    run_round(table, workers, 2.0, rng)
    assert balanced(table, workers)
    assert table.moves == lease_count  # every lease taken once: nothing was stolen


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("workers_before", [1, 2, 3])
def test_a_late_joiner_steals_exactly_its_share_and_nothing_else_moves(
    workers_before: int, seed: int
) -> None:
    rng = random.Random(seed)
    table = SimTable({f"shard-{i:02d}": Lease(f"shard-{i:02d}") for i in range(12)})
    workers = [SimWorker(f"worker-{i}") for i in range(workers_before)]
    now = run_until_balanced(table, workers, 0.0, rng, limit=15, max_steals=None)
    moves = table.moves
    workers.append(SimWorker("worker-new"))
    # In this simulation a steal fails when its victim renewed earlier in the same round,
    # so it may take a few rounds; the coordinator's test shows it in two takes.
    run_until_balanced(table, workers, now, rng, limit=20, max_steals=None)
    assert table.moves - moves == len(workers[-1].held) == 12 // (workers_before + 1)


@pytest.mark.parametrize("worker_count", [2, 3, 5])
def test_fleet_rebalances_after_a_worker_dies_and_another_joins(worker_count: int) -> None:
    rng = random.Random(worker_count)
    table = SimTable({f"shard-{i:02d}": Lease(f"shard-{i:02d}") for i in range(10)})
    workers = [SimWorker(f"worker-{i}") for i in range(worker_count)]
    now = run_until_balanced(table, workers, 0.0, rng, limit=13)

    workers[0].alive = False
    orphaned = sum(1 for lease in table.leases.values() if lease.lease_owner == "worker-0")
    assert orphaned >= math.floor(10 / worker_count)
    now = run_until_balanced(table, workers, now, rng, limit=int(FAILOVER) + 13)

    workers.append(SimWorker("worker-new"))
    run_until_balanced(table, workers, now, rng, limit=13)
