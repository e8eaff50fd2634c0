"""Which leases to take: the pure balancing decision, no I/O, no wall clock.

Expiry is judged by this worker's own observations ("the counter has not moved for
failover_seconds since I first saw it move"), so workers need no clock agreement.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from consumer.leases.lease import Lease


@dataclass(frozen=True, slots=True)
class Observation:
    """The last counter this worker saw for a lease and the monotonic time it saw it change."""

    counter: int
    changed_at: float


@dataclass(frozen=True, slots=True)
class TakePlan:
    """What to claim this round: free or expired leases, or leases to steal.

    `spares` are more free or expired leases, in order, to claim instead of a lease in
    `to_take` that another worker claimed first: workers listing at the same moment race for
    the same leases, and a lost race must not leave a worker short until the next round.
    """

    to_take: tuple[Lease, ...] = ()
    spares: tuple[Lease, ...] = ()
    to_steal: tuple[Lease, ...] = ()

    @property
    def empty(self) -> bool:
        """Nothing to do this round."""
        return not self.to_take and not self.to_steal


def observe(
    previous: Mapping[str, Observation], leases: Iterable[Lease], now: float
) -> dict[str, Observation]:
    """Update observations from a fresh listing; leases gone from the table are forgotten.

    A lease seen for the first time counts as changed now, so a lease owned by a live worker
    is never judged expired before failover_seconds of our own watching.
    """
    updated: dict[str, Observation] = {}
    for lease in leases:
        seen = previous.get(lease.lease_key)
        if seen is not None and seen.counter == lease.lease_counter:
            updated[lease.lease_key] = seen
        else:
            updated[lease.lease_key] = Observation(lease.lease_counter, now)
    return updated


def is_expired(
    lease: Lease, observations: Mapping[str, Observation], failover_seconds: float, now: float
) -> bool:
    """Free (no owner) or not renewed for failover_seconds as far as this worker has seen."""
    if lease.lease_owner is None:
        return True
    seen = observations.get(lease.lease_key)
    if seen is None or seen.counter != lease.lease_counter:
        return False
    return now - seen.changed_at > failover_seconds


def target_count(active: int, workers: int, max_leases_per_worker: int | None) -> int:
    """Each worker's fair share: ceil(active / workers), capped by the per-worker maximum."""
    if active == 0:
        return 0
    target = math.ceil(active / max(workers, 1))
    if max_leases_per_worker is not None:
        target = min(target, max_leases_per_worker)
    return target


def plan_takes(
    leases: Iterable[Lease],
    worker_id: str,
    observations: Mapping[str, Observation],
    failover_seconds: float,
    now: float,
    max_leases_per_worker: int | None = None,
    rng: random.Random | None = None,
    max_steals: int | None = 1,
) -> TakePlan:
    """Decide what this worker claims to move toward an even share of the active leases.

    The share counts the live workers: owners of leases renewed within failover_seconds, and
    this worker. A worker that holds no lease is invisible to the others, so it claims one
    lease first and its share from the next round on: workers starting together then see
    each other before they split the leases, instead of the first one taking them all.
    Free and expired leases come first. Only when there are none does the worker steal, up to
    `max_steals` leases (None: as many as its share needs), each from the most loaded worker,
    and only while that worker is above the target (or at it while we are two or more
    short), so steals never ping-pong.
    """
    active = [lease for lease in leases if not lease.finished]
    expired = [lease for lease in active if is_expired(lease, observations, failover_seconds, now)]
    expired_keys = {lease.lease_key for lease in expired}
    live = [lease for lease in active if lease.lease_key not in expired_keys]
    counts = Counter(lease.lease_owner for lease in live if lease.lease_owner is not None)
    workers = len(set(counts) | {worker_id})
    target = target_count(len(active), workers, max_leases_per_worker)
    held = counts.get(worker_id, 0)
    needed = target - held
    if needed <= 0:
        return TakePlan()
    # Holding nothing, announce with one lease; the share follows once the others can see us.
    claim = 1 if held == 0 else needed
    if expired:
        # Shuffled so workers racing for the same free leases mostly pick different ones.
        ordered = sorted(expired, key=lambda lease: lease.lease_key)
        (rng or random).shuffle(ordered)
        return TakePlan(to_take=tuple(ordered[:claim]), spares=tuple(ordered[claim:]))
    if max_steals is not None:
        claim = min(claim, max_steals)
    steals = _choose_steals(live, counts, worker_id, target, needed, claim, rng)
    return TakePlan(to_steal=steals)


def _choose_steals(
    live: list[Lease],
    counts: Counter[str],
    worker_id: str,
    target: int,
    needed: int,
    claim: int,
    rng: random.Random | None,
) -> tuple[Lease, ...]:
    remaining = Counter(counts)
    chosen: list[Lease] = []
    while len(chosen) < claim:
        others = [(count, owner) for owner, count in remaining.items() if owner != worker_id]
        if not others:
            break
        # Ties broken by name so every worker agrees on who is most loaded.
        most, victim = max(others, key=lambda pair: (pair[0], pair[1] or ""))
        if most < target or (most == target and needed < 2):
            break
        candidates = sorted(
            (lease for lease in live if lease.lease_owner == victim and lease not in chosen),
            key=lambda lease: lease.lease_key,
        )
        chosen.append((rng or random).choice(candidates))
        remaining[victim] -= 1
        needed -= 1
    return tuple(chosen)
