"""One worker's leases: renew, balance, fence checkpoints, release on shutdown.

No threads of its own: the worker's main loop calls `tick()`, shard threads call
`checkpoint()`. Each lease has its own lock, so a renewal and a checkpoint of the same lease
never race each other's counter, while different shards checkpoint in parallel.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import structlog

from consumer.errors import LeaseLostError, TransientError
from consumer.leases.lease import SENTINEL_SHARD_END, SENTINEL_TRIM_HORIZON, Lease
from consumer.leases.store import LeaseStore
from consumer.leases.taker import Observation, TakePlan, observe, plan_takes
from consumer.sources.shard import ShardInfo

log = structlog.get_logger(__name__)

# After a worker's first lease, its share follows this soon rather than a whole take interval
# later: long enough for workers started together to have claimed their first lease (so they
# see each other and split evenly), short enough that a lone worker does not read one shard
# alone for a take interval. A worker started later gets its share by stealing instead.
SHARE_TAKE_DELAY_SECONDS = 1.0


def initial_position_note(initial_position: str, leases: list[Lease]) -> str | None:
    """Why a changed `source.initial_position` seems to do nothing, and what to do instead."""
    if initial_position == SENTINEL_TRIM_HORIZON or not leases:
        return None
    return (
        f"source.initial_position = {initial_position} applies only to shards without a "
        f"lease; the {len(leases)} existing leases resume from their checkpoints. To move "
        f"them, use `stream-projector leases reset --to {initial_position}`."
    )


class LeaseCoordinator:
    """Holds this worker's leases in memory and keeps the lease table in step with them."""

    def __init__(
        self,
        store: LeaseStore,
        worker_id: str,
        failover_seconds: float = 10.0,
        renew_interval: float = 3.0,
        take_interval: float = 5.0,
        max_leases_per_worker: int | None = None,
        max_steals_per_take: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_lost: Callable[[str], None] | None = None,
        on_event: Callable[[str, str], None] | None = None,
        rng: random.Random | None = None,
        before_delete: Callable[[Lease], None] | None = None,
    ) -> None:
        self._store = store
        self.worker_id = worker_id
        self._failover = failover_seconds
        self._renew_interval = renew_interval
        self._take_interval = take_interval
        self._max_leases = max_leases_per_worker
        self._max_steals = max_steals_per_take
        self._clock = clock
        self._on_lost = on_lost
        # (kind, shard id) for taken / stolen / released / lost: metrics hang off this.
        self._on_event = on_event or (lambda kind, shard_id: None)
        # Sees a finished lease before it is deleted (the dead-letter ledger keeps its shard);
        # if it raises TransientError the lease stays until the next sync.
        self._before_delete = before_delete or (lambda lease: None)
        self._rng = rng
        self._lock = threading.Lock()
        self._key_locks: dict[str, threading.Lock] = {}
        self._held: dict[str, Lease] = {}
        self._renewed_at: dict[str, float] = {}
        self._listing: dict[str, Lease] = {}
        self._observations: dict[str, Observation] = {}
        self._next_renew: float | None = None
        self._next_take: float | None = None
        self._initial_position_noted = False

    # -- what the worker reads -------------------------------------------------------------

    def held(self) -> dict[str, Lease]:
        """A snapshot of the leases this worker holds, by shard id."""
        with self._lock:
            return dict(self._held)

    def is_held(self, shard_id: str) -> bool:
        """True while this worker holds the shard's lease."""
        with self._lock:
            return shard_id in self._held

    def all_leases(self) -> list[Lease]:
        """Every lease as of the last listing (with this worker's own later writes)."""
        with self._lock:
            return list(self._listing.values())

    def parents_done(self, shard_id: str) -> bool:
        """True when every parent lease is at SHARD_END; a parent without a lease is done."""
        with self._lock:
            lease = self._held.get(shard_id) or self._listing.get(shard_id)
            if lease is None:
                return True
            parents = [self._listing.get(parent) for parent in lease.parent_shard_ids]
        return all(parent is None or parent.finished for parent in parents)

    # -- the main loop ---------------------------------------------------------------------

    def tick(self) -> None:
        """Renew held leases and look for leases to take, each when its interval is due."""
        now = self._clock()
        if self._next_renew is None or now >= self._next_renew:
            self._next_renew = now + self._renew_interval
            self._renew_all(now)
        if self._next_take is None or now >= self._next_take:
            self._next_take = now + self._take_interval
            held_before = len(self.held())
            self._take(now)
            if held_before == 0 and self.held():
                self._next_take = now + min(self._take_interval, SHARE_TAKE_DELAY_SECONDS)

    def ensure_leases(self, shards: list[ShardInfo], initial_checkpoint: str) -> list[Lease]:
        """Create a lease for every shard without one; the leases this call created.

        A child of a known shard starts at TRIM_HORIZON whatever the initial position, so
        nothing written after the split is skipped once its parents finish.
        """
        existing = {lease.lease_key: lease for lease in self._store.list_leases()}
        if not self._initial_position_noted:
            # Said once at start-up: an operator who changed initial_position expects it to act.
            self._initial_position_noted = True
            note = initial_position_note(initial_checkpoint, list(existing.values()))
            if note is not None:
                log.warning(note, worker=self.worker_id)
        known = set(existing) | {shard.shard_id for shard in shards}
        created: list[Lease] = []
        for shard in shards:
            if shard.shard_id in existing:
                continue
            has_known_parent = any(parent in known for parent in shard.parent_shard_ids)
            lease = Lease(
                lease_key=shard.shard_id,
                checkpoint=SENTINEL_TRIM_HORIZON if has_known_parent else initial_checkpoint,
                parent_shard_ids=frozenset(shard.parent_shard_ids),
            )
            if self._store.create_if_absent(lease):
                created.append(lease)
                existing[lease.lease_key] = lease
        with self._lock:
            for key, lease in existing.items():
                self._listing.setdefault(key, lease)
        return created

    # -- shard threads ---------------------------------------------------------------------

    def checkpoint(self, shard_id: str, sequence: str, sub_sequence: int = 0) -> Lease:
        """Record progress, fenced by owner and counter; LeaseLostError if the lease was taken.

        A TransientError leaves the lease held: the caller retries the checkpoint.
        """
        return self._checkpoint(shard_id, sequence, sub_sequence)

    def mark_shard_end(self, shard_id: str) -> Lease:
        """Checkpoint SHARD_END: the shard is done and its children may start.

        The finished lease stays held, unrenewed, until the worker releases it; no worker
        ever takes a finished lease, and it no longer counts toward the balance.
        """
        finished = self.checkpoint(shard_id, SENTINEL_SHARD_END)
        log.info("lease finished", shard=shard_id, worker=self.worker_id)
        return finished

    def _checkpoint(self, shard_id: str, sequence: str, sub_sequence: int) -> Lease:
        with self._key_lock(shard_id):
            lease = self._current(shard_id)
            try:
                updated = self._store.checkpoint(lease, sequence, sub_sequence)
            except LeaseLostError:
                self._lose(shard_id, reason="checkpoint rejected")
                raise
            self._keep(updated, renewed=True)
        return updated

    def release(self, shard_id: str) -> None:
        """Give a lease up so another worker takes it at once; failures are logged only."""
        lease: Lease | None = None
        with self._key_lock(shard_id):
            with self._lock:
                lease = self._held.pop(shard_id, None)
                self._renewed_at.pop(shard_id, None)
            if lease is None:
                return
            try:
                released = self._store.release(lease)
            except (LeaseLostError, TransientError) as error:
                log.warning(
                    "lease release failed",
                    shard=shard_id,
                    worker=self.worker_id,
                    error=type(error).__name__,
                    detail=str(error),
                )
                return
            with self._lock:
                self._listing[shard_id] = released
        self._on_event("released", shard_id)
        log.info("lease released", shard=shard_id, worker=self.worker_id)

    def delete_finished(self, current_shards: set[str]) -> list[str]:
        """Delete leases at SHARD_END whose shard the stream no longer lists; return their keys.

        DynamoDB Streams closes a shard every few hours and drops it after 24 h: without this
        the table, and every listing of it, would grow for as long as the stream lives. A
        missing parent lease counts as finished (`parents_done`), so children are unaffected.
        """
        with self._lock:
            gone = [
                lease
                for lease in self._listing.values()
                if lease.finished
                and lease.lease_key not in current_shards
                and lease.lease_key not in self._held
            ]
        deleted = []
        for lease in gone:
            key = lease.lease_key
            try:
                self._before_delete(lease)
                self._store.delete(key)
            except TransientError as error:
                log.warning("finished lease not deleted", shard=key, detail=str(error))
                continue
            with self._lock:
                self._listing.pop(key, None)
            deleted.append(key)
            log.info("finished lease deleted", shard=key, worker=self.worker_id)
        return deleted

    def release_all(self) -> None:
        """Release every held lease (graceful shutdown)."""
        for shard_id in list(self.held()):
            self.release(shard_id)

    # -- internals -------------------------------------------------------------------------

    @contextmanager
    def _key_lock(self, shard_id: str) -> Iterator[None]:
        with self._lock:
            lock = self._key_locks.setdefault(shard_id, threading.Lock())
        with lock:
            yield

    def _current(self, shard_id: str) -> Lease:
        with self._lock:
            lease = self._held.get(shard_id)
        if lease is None:
            raise LeaseLostError(f"worker {self.worker_id} does not hold lease {shard_id}")
        return lease

    def _keep(self, lease: Lease, renewed: bool) -> None:
        with self._lock:
            self._held[lease.lease_key] = lease
            self._listing[lease.lease_key] = lease
            if renewed:
                self._renewed_at[lease.lease_key] = self._clock()

    def _lose(self, shard_id: str, reason: str) -> None:
        """Forget a lease another worker now owns, and tell the worker to stop its shard."""
        with self._lock:
            lost = self._held.pop(shard_id, None)
            self._renewed_at.pop(shard_id, None)
        if lost is None:
            return
        log.warning("lease lost", shard=shard_id, worker=self.worker_id, reason=reason)
        self._on_event("lost", shard_id)
        if self._on_lost is not None:
            self._on_lost(shard_id)

    def _renew_all(self, now: float) -> None:
        for shard_id in list(self.held()):
            with self._key_lock(shard_id):
                with self._lock:
                    lease = self._held.get(shard_id)
                    renewed_at = self._renewed_at.get(shard_id, now)
                # A finished lease has nothing left to protect; renewing it would only cost.
                if lease is None or lease.finished:
                    continue
                try:
                    self._keep(self._store.renew(lease), renewed=True)
                    continue
                except LeaseLostError:
                    reason = "renewal rejected"
                except TransientError as error:
                    # Others will judge the lease expired once failover passes without a
                    # renewal, so past that point we must stop as if it were taken.
                    if now - renewed_at <= self._failover:
                        log.warning(
                            "lease renewal failed, will retry",
                            shard=shard_id,
                            worker=self.worker_id,
                            detail=str(error),
                        )
                        continue
                    reason = "not renewed within failover time"
            self._lose(shard_id, reason=reason)

    def _take(self, now: float) -> None:
        try:
            leases = self._store.list_leases()
        except TransientError as error:
            log.warning("lease listing failed", worker=self.worker_id, detail=str(error))
            return
        with self._lock:
            self._listing = {lease.lease_key: lease for lease in leases}
            self._observations = observe(self._observations, leases, now)
            observations = dict(self._observations)
            stolen_from_me = [
                lease.lease_key
                for lease in leases
                if lease.lease_key in self._held
                and lease.lease_owner != self.worker_id
                and lease.lease_counter > self._held[lease.lease_key].lease_counter
            ]
        for shard_id in stolen_from_me:
            self._lose(shard_id, reason="taken by another worker")
        plan = plan_takes(
            leases,
            self.worker_id,
            observations,
            self._failover,
            now,
            max_leases_per_worker=self._max_leases,
            rng=self._rng,
            max_steals=self._max_steals,
        )
        self._claim(plan)

    def _claim(self, plan: TakePlan) -> None:
        spares = list(plan.spares)
        claims = [(lease, "taken") for lease in plan.to_take]
        claims += [(lease, "stolen") for lease in plan.to_steal]
        while claims:
            lease, how = claims.pop(0)
            with self._key_lock(lease.lease_key):
                try:
                    taken = self._store.take(lease, self.worker_id)
                except LeaseLostError:
                    # Another worker claimed it first; the next listing shows who. A lost race
                    # for a free lease is made up with a spare one, so the share holds.
                    log.debug("lease claim lost race", shard=lease.lease_key, worker=self.worker_id)
                    if how == "taken" and spares:
                        claims.insert(0, (spares.pop(0), how))
                    continue
                except TransientError as error:
                    log.warning("lease claim failed", shard=lease.lease_key, detail=str(error))
                    return
                self._keep(taken, renewed=True)
            self._on_event(how, lease.lease_key)
            log.info(
                f"lease {how}",
                shard=lease.lease_key,
                worker=self.worker_id,
                previous_owner=lease.lease_owner,
                checkpoint=taken.checkpoint,
            )
