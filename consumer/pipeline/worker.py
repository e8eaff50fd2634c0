"""The worker's main loop: discover shards, hold leases, run one consumer per owned shard.

It knows streams and read models only through protocols; the composition root
(consumer/runtimes/daemon.py) builds the parts from settings.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from consumer.errors import StreamProjectorError
from consumer.leases.lease import Lease
from consumer.observability.health import Heartbeat
from consumer.observability.metrics import Metrics
from consumer.pipeline.shard_consumer import ShardConsumer, ShardExit
from consumer.sources.reader import StreamSource
from consumer.sources.shard import ShardInfo

log = structlog.get_logger(__name__)


class Coordinator(Protocol):
    """The part of LeaseCoordinator the worker drives."""

    def tick(self) -> None: ...
    def held(self) -> dict[str, Lease]: ...
    def all_leases(self) -> list[Lease]: ...
    def ensure_leases(self, shards: list[ShardInfo], initial_checkpoint: str) -> object: ...
    def parents_done(self, shard_id: str) -> bool: ...
    def release(self, shard_id: str) -> object: ...
    def release_all(self) -> object: ...
    def delete_finished(self, current_shards: set[str]) -> object: ...


# Builds a started-later consumer for a held lease: (lease, on_shard_end) -> ShardConsumer.
ConsumerFactory = Callable[[Lease, Callable[[str, tuple[ShardInfo, ...]], None]], ShardConsumer]


@dataclass(frozen=True, slots=True)
class WorkerTimings:
    """How often the loop wakes, syncs shards, and how long a graceful stop may take."""

    tick_seconds: float = 0.2
    shard_sync_seconds: float = 60.0
    shutdown_deadline_seconds: float = 20.0


class Worker:
    """Keeps exactly one running consumer per held, startable lease; nothing more."""

    def __init__(
        self,
        *,
        source: StreamSource,
        coordinator: Coordinator,
        make_consumer: ConsumerFactory,
        metrics: Metrics,
        heartbeat: Heartbeat,
        initial_checkpoint: str,
        timings: WorkerTimings,
    ) -> None:
        self._source = source
        self._coordinator = coordinator
        self._make_consumer = make_consumer
        self._metrics = metrics
        self._heartbeat = heartbeat
        self._initial_checkpoint = initial_checkpoint
        self._timings = timings
        self._consumers: dict[str, ShardConsumer] = {}
        self._waiting: set[str] = set()  # held, with a parent not finished yet
        self._children: list[ShardInfo] = []
        self._children_lock = threading.Lock()
        self._sync_now = threading.Event()
        self._next_sync = 0.0
        self.synced = threading.Event()
        self.last_error: str = ""
        self.steps_failed = 0  # since start, for tests and debugging

    @property
    def stream(self) -> str:
        """The stream this worker reads."""
        return self._source.stream_id

    # -- the loop -----------------------------------------------------------------------------

    def run(self, stop: threading.Event, until: Callable[[], bool] | None = None) -> int:
        """Loop until `stop` is set (or `until()` holds), then stop gracefully; returns 0."""
        log.info("worker started", stream=self.stream)
        while not stop.is_set():
            self._heartbeat.beat()
            try:
                self.step()
                if self.last_error:
                    log.info("worker step succeeds again", previous_error=self.last_error)
                self.last_error = ""
            except (StreamProjectorError, BotoCoreError, ClientError) as exc:
                # The lease table or the stream is unreachable or refuses us (an IAM change,
                # say): keep the loop alive, show it in /readyz, and try again next tick;
                # consumers keep running meanwhile, fenced by their leases. Logged when it
                # changes; the readiness log repeats it while it lasts, not every tick.
                error = f"{type(exc).__name__}: {exc}"
                self.steps_failed += 1
                if error != self.last_error:
                    log.warning("worker step failed", error=error)
                self.last_error = error
            if until is not None and until():
                break
            stop.wait(self._timings.tick_seconds)
        self.shutdown()
        return 0

    def step(self) -> None:
        """One pass: sync shards when due, renew and take leases, reconcile consumers."""
        now = time.monotonic()
        if now >= self._next_sync or self._sync_now.is_set():
            self._sync_shards()
            self._next_sync = now + self._timings.shard_sync_seconds
        self._coordinator.tick()
        self._reconcile()

    def _sync_shards(self) -> None:
        self._sync_now.clear()
        with self._children_lock:
            children, self._children = self._children, []
        if children:
            self._coordinator.ensure_leases(children, self._initial_checkpoint)
        shards = self._source.list_shards()
        self._coordinator.ensure_leases(shards, self._initial_checkpoint)
        self._coordinator.delete_finished({shard.shard_id for shard in shards})
        self.synced.set()

    def _on_shard_end(self, shard_id: str, children: tuple[ShardInfo, ...]) -> None:
        # Called on the shard's thread: hand the children to the main loop.
        with self._children_lock:
            self._children.extend(children)
        self._sync_now.set()

    def _reconcile(self) -> None:
        held = self._coordinator.held()
        reaped: set[str] = set()
        for shard_id, consumer in list(self._consumers.items()):
            if not consumer.alive:
                self._reap(shard_id, consumer)
                reaped.add(shard_id)
            elif shard_id not in held:
                log.warning("lease lost; stopping shard", shard=shard_id)
                consumer.lease_lost()
        # Read the leases again after reaping: a consumer that reached SHARD_END after the
        # first read would otherwise be restarted from that read's older checkpoint.
        held = self._coordinator.held()
        for shard_id in self._waiting - held.keys():
            # Lost (or released) while it waited for its parents: it is no longer ours.
            self._waiting.discard(shard_id)
            self._metrics.forget_shard(self.stream, shard_id)
        for shard_id, lease in held.items():
            if shard_id in self._consumers or shard_id in reaped:
                continue
            if lease.finished:
                # Nothing left to read: free the lease so it does not count towards balance.
                self._coordinator.release(shard_id)
                continue
            if not self._coordinator.parents_done(shard_id):
                self._waiting.add(shard_id)
                self._metrics.set_shard_state(self.stream, shard_id, "waiting_parent")
                continue
            self._waiting.discard(shard_id)
            consumer = self._make_consumer(lease, self._on_shard_end)
            self._consumers[shard_id] = consumer
            log.info("starting shard", shard=shard_id, checkpoint=lease.checkpoint)
            consumer.start()
        self._metrics.set_leases_held(len(self._coordinator.held()))

    def _reap(self, shard_id: str, consumer: ShardConsumer) -> None:
        del self._consumers[shard_id]
        if consumer.exit is ShardExit.FINISHED:
            self._coordinator.release(shard_id)
        # A finished, lost or stopped shard is no longer this worker's: drop its series.
        self._metrics.forget_shard(self.stream, shard_id)

    # -- state for demo, tests and readiness ------------------------------------------------

    def caught_up(self) -> bool:
        """Every unfinished lease is held here by a consumer that has read to the tip."""
        if not self.synced.is_set():
            return False
        held = self._coordinator.held()
        for lease in self._coordinator.all_leases():
            if lease.finished:
                continue
            consumer = self._consumers.get(lease.lease_key)
            if lease.lease_key not in held or consumer is None or not consumer.caught_up:
                return False
        return True

    def running_shards(self) -> list[str]:
        """Shard ids with a live consumer."""
        return sorted(s for s, c in self._consumers.items() if c.alive)

    # -- graceful stop ------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop fetching, let batches in flight finish until the deadline, release every lease."""
        log.info("shutting down", shards=len(self._consumers))
        for consumer in self._consumers.values():
            consumer.request_stop()
        deadline = time.monotonic() + self._timings.shutdown_deadline_seconds
        for consumer in self._consumers.values():
            consumer.join(max(0.0, deadline - time.monotonic()))
        for consumer in self._consumers.values():
            if consumer.alive:
                log.warning(
                    "abandoning batch in flight at the stop deadline", shard=consumer.shard_id
                )
                consumer.abandon()
                consumer.join(1.0)
        for shard_id in [*self._consumers, *self._waiting]:
            self._metrics.forget_shard(self.stream, shard_id)
        self._consumers.clear()
        self._waiting.clear()
        self._coordinator.release_all()
        self._metrics.set_leases_held(0)
        log.info("worker stopped")
