"""Prometheus metrics of the daemon: lag per shard, outcomes per projection, retries, leases.

Every metric lives in the `Metrics` object's own registry (never the process-global one), so a
test can build several side by side and the HTTP endpoint serves exactly what the daemon owns.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from consumer.observability.lag import ShardLag

if TYPE_CHECKING:
    from projections.results import Counts

PREFIX = "stream_projector_"

SHARD_STATES = ("waiting_parent", "running", "stalled", "finished")
RETRY_KINDS = ("transient", "poison", "throttle", "expired_iterator", "lease")
LEASE_EVENTS = ("taken", "stolen", "lost", "released")

# GetRecords answers in tens of milliseconds, but a throttled or distant endpoint takes seconds.
GET_RECORDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# A batch includes sink writes and retries with backoff, so its tail reaches minutes.
BATCH_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class Metrics:
    """The daemon's metrics; every method is safe to call from any shard thread."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self._clock = clock
        self._lock = threading.Lock()
        self._states: dict[tuple[str, str], str] = {}
        self._stall_reasons: dict[tuple[str, str], str] = {}
        self._lags: dict[tuple[str, str], ShardLag] = {}
        r = self.registry
        shard_labels = ("stream", "shard")

        self.iterator_age = Gauge(
            f"{PREFIX}iterator_age_seconds",
            "How far behind the stream a shard's applied state is, measured where records are "
            "applied: the age of the oldest record fetched and not yet checkpointed while one "
            "waits, else of the last record of the last checkpointed batch at its checkpoint; "
            "0 once GetRecords finds nothing more.",
            shard_labels,
            registry=r,
        )
        self.get_records_iterator_age = Gauge(
            f"{PREFIX}get_records_iterator_age_seconds",
            "Age of the newest record of the shard's last GetRecords at fetch time (now minus "
            "its arrival/approximate creation time); 0 when it returned nothing.",
            shard_labels,
            registry=r,
        )
        self.records_pending = Gauge(
            f"{PREFIX}records_pending",
            "Records of a shard fetched and not yet checkpointed (prefetched or being applied).",
            shard_labels,
            registry=r,
        )
        self.millis_behind_latest = Gauge(
            f"{PREFIX}millis_behind_latest",
            "Kinesis MillisBehindLatest of the last GetRecords of a shard, in milliseconds.",
            shard_labels,
            registry=r,
        )
        self.get_records_duration = Histogram(
            f"{PREFIX}get_records_duration_seconds",
            "Latency of GetRecords calls, in seconds.",
            ("stream",),
            buckets=GET_RECORDS_BUCKETS,
            registry=r,
        )
        self.records_fetched = Counter(
            f"{PREFIX}records_fetched",
            "Records returned by GetRecords, per shard.",
            shard_labels,
            registry=r,
        )
        self.get_records_throttles = Counter(
            f"{PREFIX}get_records_throttles",
            "GetRecords calls refused with a throughput or rate limit error, per shard.",
            shard_labels,
            registry=r,
        )
        self.data_lost = Counter(
            f"{PREFIX}data_lost",
            "TrimmedDataAccess answers: records expired from the stream before they were read.",
            shard_labels,
            registry=r,
        )
        self.records = Counter(
            f"{PREFIX}records",
            "Records handled by a projection, by outcome "
            "(applied, stale_skipped, filtered, dead_lettered).",
            ("projection", "outcome"),
            registry=r,
        )
        self.dead_letters = Counter(
            f"{PREFIX}dead_letters",
            "Records sent to the dead letter queue, by reason.",
            ("reason",),
            registry=r,
        )
        self.batch_duration = Histogram(
            f"{PREFIX}batch_duration_seconds",
            "Time to project one fetched batch through every projection, in seconds.",
            ("stream",),
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.retries = Counter(
            f"{PREFIX}retries",
            "Retries, by kind (transient, poison, throttle, expired_iterator, lease).",
            ("kind",),
            registry=r,
        )
        self.last_checkpoint = Gauge(
            f"{PREFIX}last_checkpoint_timestamp_seconds",
            "Unix time of the last checkpoint written for a shard, or of when this worker "
            "started reading it, in seconds.",
            shard_labels,
            registry=r,
        )
        self.shards = Gauge(
            f"{PREFIX}shards",
            "Shards this worker handles, by state (waiting_parent, running, stalled, finished).",
            ("state",),
            registry=r,
        )
        self.lease_events = Counter(
            f"{PREFIX}lease_events",
            "Lease changes seen by this worker, by kind (taken, stolen, lost, released).",
            ("kind",),
            registry=r,
        )
        self.leases_held = Gauge(
            f"{PREFIX}leases_held",
            "Leases this worker holds now.",
            registry=r,
        )
        self._per_shard: tuple[Any, ...] = (
            self.iterator_age,
            self.get_records_iterator_age,
            self.records_pending,
            self.millis_behind_latest,
            self.records_fetched,
            self.get_records_throttles,
            self.data_lost,
            self.last_checkpoint,
        )
        # Fixed label values exist from the start, so a rate() over them never misses the
        # first increment and dashboards show 0 rather than "no data".
        for state in SHARD_STATES:
            self.shards.labels(state).set(0)
        for kind in RETRY_KINDS:
            self.retries.labels(kind)
        for kind in LEASE_EVENTS:
            self.lease_events.labels(kind)

    def record_fetch(
        self,
        stream: str,
        shard: str,
        records: int,
        newest_arrival: float | None,
        millis_behind_latest: int | None,
        seconds: float,
        oldest_arrival: float | None = None,
    ) -> None:
        """Record one GetRecords: its latency, its records (now pending until their checkpoint),
        and the fetch-side age. `oldest_arrival` defaults to `newest_arrival`."""
        if records == 0 or newest_arrival is None:
            fetch_age = 0.0
        else:
            # Clock skew between the stream and this host must not show as negative lag.
            fetch_age = max(0.0, self._clock() - newest_arrival)
        oldest = newest_arrival if oldest_arrival is None else oldest_arrival
        with self._lock:
            self._lag(stream, shard).fetched(records, oldest, newest_arrival)
            self.get_records_iterator_age.labels(stream, shard).set(fetch_age)
            if millis_behind_latest is not None:
                self.millis_behind_latest.labels(stream, shard).set(millis_behind_latest)
            self.records_fetched.labels(stream, shard).inc(records)
            # Create the shard's error counters at 0, so increase() sees their first event.
            self.get_records_throttles.labels(stream, shard)
            self.data_lost.labels(stream, shard)
        self.get_records_duration.labels(stream).observe(seconds)

    def _lag(self, stream: str, shard: str) -> ShardLag:
        """The shard's lag, created with its two gauges, read at scrape time; lock held."""
        key = (stream, shard)
        lag = self._lags.get(key)
        if lag is None:
            lag = self._lags[key] = ShardLag()
            # Computed at each scrape: the age of a waiting record grows while it waits.
            self.iterator_age.labels(stream, shard).set_function(lambda: self._age(key))
            self.records_pending.labels(stream, shard).set_function(lambda: self._pending(key))
        return lag

    def _age(self, key: tuple[str, str]) -> float:
        with self._lock:
            lag = self._lags.get(key)
            return lag.age(self._clock()) if lag is not None else 0.0

    def _pending(self, key: tuple[str, str]) -> float:
        with self._lock:
            lag = self._lags.get(key)
            return float(lag.pending) if lag is not None else 0.0

    def record_throttle(self, stream: str, shard: str) -> None:
        """Count a GetRecords refused for exceeding the shard's read limits."""
        with self._lock:
            self.get_records_throttles.labels(stream, shard).inc()

    def record_trimmed(self, stream: str, shard: str) -> None:
        """Count a TrimmedDataAccess: records expired before this worker read them."""
        with self._lock:
            self.data_lost.labels(stream, shard).inc()

    def record_outcomes(self, projection: str, counts: Counts) -> None:
        """Add records that took their final outcome in `projection` (each counted once)."""
        for outcome, count in (
            ("applied", counts.applied),
            ("stale_skipped", counts.stale),
            ("filtered", counts.filtered),
        ):
            # labels() even for 0, so the series exists before its first increment.
            self.records.labels(projection, outcome).inc(count)

    def record_dead_letter(self, projection: str, reason: str) -> None:
        """Count one record dead-lettered by `projection` because of `reason`."""
        self.records.labels(projection, "dead_lettered").inc()
        self.dead_letters.labels(reason).inc()

    def observe_batch(self, stream: str, shard: str, seconds: float) -> None:
        """Observe a batch's processing time (labelled by stream only, to bound the series)."""
        del shard  # per-shard histograms would multiply the bucket series by the shard count
        self.batch_duration.labels(stream).observe(seconds)

    def record_retry(self, kind: str) -> None:
        """Count one retry of `kind` (transient, poison, throttle, expired_iterator, lease)."""
        self.retries.labels(kind).inc()

    def reading_started(self, stream: str, shard: str) -> None:
        """A consumer starts on the shard: running, and its checkpoint clock starts now (so a
        shard stuck before its first checkpoint shows as stuck too)."""
        self.set_shard_state(stream, shard, "running")
        with self._lock:
            self.last_checkpoint.labels(stream, shard).set(self._clock())

    def record_checkpoint(self, stream: str, shard: str) -> None:
        """Stamp the time of a checkpoint written for the shard: the oldest page fetched is
        applied (checkpoints follow pages in order), which sets the shard's iterator age."""
        with self._lock:
            now = self._clock()
            self.last_checkpoint.labels(stream, shard).set(now)
            lag = self._lags.get((stream, shard))
            if lag is not None:
                lag.applied(now)

    def set_shard_state(self, stream: str, shard: str, state: str, reason: str = "") -> None:
        """Set a shard's state; the `shards{state}` gauge counts shards per state.

        `reason` says what a stalled shard waits for (readiness reports it).
        """
        if state not in SHARD_STATES:
            raise ValueError(f"unknown shard state {state!r}, expected one of {SHARD_STATES}")
        with self._lock:
            self._states[(stream, shard)] = state
            if state == "stalled":
                self._stall_reasons[(stream, shard)] = reason
            else:
                self._stall_reasons.pop((stream, shard), None)
            self._publish_states()

    def stall_reasons(self) -> dict[tuple[str, str], str]:
        """What each stalled shard waits for, keyed by (stream, shard)."""
        with self._lock:
            return dict(self._stall_reasons)

    def lease_event(self, kind: str) -> None:
        """Count a lease change (taken, stolen, lost, released)."""
        self.lease_events.labels(kind).inc()

    def set_leases_held(self, n: int) -> None:
        """Set how many leases this worker holds."""
        self.leases_held.set(n)

    def forget_shard(self, stream: str, shard: str) -> None:
        """Drop every series of a shard this worker no longer reads, and its state."""
        with self._lock:
            for metric in self._per_shard:
                # Older prometheus-client versions raise KeyError for an absent label set.
                with contextlib.suppress(KeyError):
                    metric.remove(stream, shard)
            self._lags.pop((stream, shard), None)
            self._stall_reasons.pop((stream, shard), None)
            if self._states.pop((stream, shard), None) is not None:
                self._publish_states()

    def shard_snapshot(self) -> dict[tuple[str, str], dict[str, Any]]:
        """Iterator age and state of every shard known, keyed by (stream, shard), for `status`."""
        with self._lock:
            now = self._clock()
            keys = set(self._lags) | set(self._states)
            return {
                key: {
                    "iterator_age_seconds": (
                        self._lags[key].age(now) if key in self._lags else None
                    ),
                    "state": self._states.get(key),
                }
                for key in sorted(keys)
            }

    def _publish_states(self) -> None:
        """Recount shards per state; the caller holds the lock."""
        counts = Tally(self._states.values())
        for state in SHARD_STATES:
            self.shards.labels(state).set(counts.get(state, 0))
