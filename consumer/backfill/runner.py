"""Backfill: fill read models from a parallel table Scan, then hand off to the stream.

Order of events, and why each step is where it is (docs/backfill.md has the long form):
1. Record the hand-off (consumer/backfill/handoff.py): leases for every shard at a point at
   or before now, so the daemon covers every change from there on.
2. Scan the table in `segments` parallel segments, one thread each, strongly consistent, so
   every change before step 1 is seen. Each item is fed to the projections as a synthetic
   INSERT at position 0 (consumer/backfill/scan.py), through their normal guards: it fills
   what the stream has not touched and is refused wherever the stream applied anything.
3. After each page is durably applied, its LastEvaluatedKey is stored per segment
   (consumer/backfill/progress.py), so a stopped backfill resumes at the next page.
A page applied twice (a crash between apply and save) is harmless: its records are stale.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import structlog

from consumer.backfill.progress import BackfillProgressStore, SegmentProgress
from consumer.backfill.scan import Chunk, Order, SegmentReader, TableShape
from consumer.errors import PoisonError, TransientError
from consumer.pipeline.classify import classify
from consumer.pipeline.retry import Backoff, RetryStopped, pause, retry
from consumer.pipeline.tally import Tally
from consumer.record import ChangeRecord
from projections.projection import Projection, attempt
from projections.results import Counts

log = structlog.get_logger(__name__)

# Called on a segment's thread with each chunk as read, before it is applied (tests use it to
# change the table "during the scan").
ChunkHook = Callable[[int, list[ChangeRecord]], None]


@dataclass(frozen=True, slots=True)
class BackfillOptions:
    """How to scan: parallelism, page size, read order and the rate limits (0 = none)."""

    segments: int = 4
    page_size: int = 500
    order: Order = "item"
    items_per_second: float = 0.0
    read_capacity_per_second: float = 0.0
    first_version: int = 1
    version_attribute: str | None = None


@dataclass(slots=True)
class BackfillReport:
    """What one run did; `interrupted` means stopped early and resumable."""

    run: str
    segments: int
    fed: int = 0
    pages: int = 0
    outcome: Counts = field(default_factory=Counts)
    failed_keys: list[dict[str, Any]] = field(default_factory=list)
    already_done: int = 0
    resumed: int = 0
    finished: int = 0
    interrupted: bool = False
    seconds: float = 0.0

    @property
    def complete(self) -> bool:
        """Every segment reached its end."""
        return self.already_done + self.finished == self.segments


class RateLimiter:
    """A shared budget of units per second, paid after the fact: a page read now delays the next.

    Post-paying fits Scan, whose cost (items, capacity units) is known only once a page is back.
    """

    def __init__(self, per_second: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._per_second = per_second
        self._clock = clock
        self._lock = threading.Lock()
        self._free_at = clock()

    def charge(self, units: float, stop: threading.Event) -> None:
        """Spend `units`; block until the budget has recovered (or `stop` is set)."""
        if self._per_second <= 0 or units <= 0:
            return
        with self._lock:
            now = self._clock()
            self._free_at = max(self._free_at, now) + units / self._per_second
            delay = self._free_at - now
        pause(stop, delay)


class Backfill:
    """Runs the segments of one backfill on threads, feeding pages and saving progress."""

    def __init__(
        self,
        client: Any,
        shape: TableShape,
        projections: Sequence[Projection],
        progress: BackfillProgressStore,
        run: str,
        options: BackfillOptions,
        stop: threading.Event | None = None,
        on_chunk: ChunkHook | None = None,
    ) -> None:
        self._client = client
        self._shape = shape
        self._projections = list(projections)
        self._progress = progress
        self._run = run
        self._options = options
        self._stop = stop or threading.Event()
        self._on_chunk = on_chunk
        self._items = RateLimiter(options.items_per_second)
        self._capacity = RateLimiter(options.read_capacity_per_second)
        self._lock = threading.Lock()
        self._report = BackfillReport(run, options.segments)

    @property
    def fed(self) -> int:
        """Items fed so far in this run (for a progress bar)."""
        with self._lock:
            return self._report.fed

    def run(self, tick: Callable[[int], None] | None = None) -> BackfillReport:
        """Scan every unfinished segment in parallel; `tick(fed)` is called on this thread."""
        started = time.monotonic()
        saved = self._progress.load(self._run, self._options.segments)
        todo = []
        for segment in range(self._options.segments):
            state = saved.get(segment) or SegmentProgress(segment, self._options.segments)
            if state.done:
                self._report.already_done += 1
            else:
                self._report.resumed += state.last_key is not None
                todo.append(state)
        with ThreadPoolExecutor(max(1, len(todo)), thread_name_prefix="backfill") as pool:
            futures = [pool.submit(self._segment, state) for state in todo]
            self._wait(futures, tick)
        self._report.interrupted = self._stop.is_set() and not self._report.complete
        self._report.seconds = time.monotonic() - started
        return self._report

    def _wait(self, futures: list[Future[None]], tick: Callable[[int], None] | None) -> None:
        pending: set[Future[None]] = set(futures)
        while pending:
            done, pending = wait(pending, timeout=0.2, return_when=FIRST_EXCEPTION)
            if tick is not None:
                tick(self.fed)
            for future in done:
                if future.exception() is not None:
                    # One segment failed for a reason no retry fixes: stop the others at
                    # their next page (their progress is saved) and report the error.
                    self._stop.set()
                    wait(pending)
                    future.result()

    def _segment(self, state: SegmentProgress) -> None:
        reader = SegmentReader(
            self._client,
            self._shape,
            state.segment,
            state.total_segments,
            self._options.order,
            self._options.page_size,
            self._options.first_version,
            self._options.version_attribute,
        )
        saved = [state]

        def retrying(error: Exception, delay: float) -> None:
            # Restart from the last saved page; what was fed since is stale when re-fed.
            log.warning("backfill segment retrying", segment=state.segment, detail=str(error))

        if self._stop.is_set():
            return
        try:
            state = retry(
                lambda: self._read_segment(reader, saved),
                backoff=Backoff(),
                stop=self._stop,
                on_retry=retrying,
            )
        except RetryStopped:
            return
        if state.done:
            with self._lock:
                self._report.finished += 1
            log.info("backfill segment done", run=self._run, segment=state.segment)

    def _read_segment(self, reader: SegmentReader, saved: list[SegmentProgress]) -> SegmentProgress:
        """Feed chunks from the last saved page; `saved[0]` follows every save (for a retry)."""
        state = saved[0]
        for chunk in reader.chunks(state.last_key):
            if self._on_chunk is not None:
                self._on_chunk(state.segment, chunk.records)
            self._feed(chunk)
            if not chunk.page_end:
                if self._stop.is_set():
                    return state
                continue
            state = SegmentProgress(
                state.segment,
                state.total_segments,
                last_key=chunk.last_key,
                done=chunk.last_key is None,
                items=state.items + len(chunk.records),
            )
            self._progress.save(self._run, state)
            saved[0] = state
            with self._lock:
                self._report.pages += 1
            self._capacity.charge(chunk.capacity, self._stop)
            if self._stop.is_set():
                return state
        return state

    def _feed(self, chunk: Chunk) -> None:
        if chunk.records:
            for projection in self._projections:
                self._apply(projection, chunk.records)
        with self._lock:
            self._report.fed += len(chunk.records)
        self._items.charge(len(chunk.records), self._stop)

    def _apply(
        self, projection: Projection, records: list[ChangeRecord], tally: Tally | None = None
    ) -> None:
        """Apply with the daemon's policy: wait out transient failures, isolate poison.

        Each record is counted once, with the first final outcome it reached; each try starts
        at the first record not yet settled.
        """
        settled = tally or Tally(self._count)

        def attempt_unsettled() -> None:
            pending = settled.unsettled_from(records)
            results = attempt(projection, pending)
            settled.settle(results, pending)
            errors = results.errors_for(settled.unsettled_from(pending), projection.name)
            if errors:
                transient = [error for error in errors if classify(error) == "transient"]
                raise (transient or errors)[0]

        try:
            retry(
                attempt_unsettled,
                backoff=Backoff(),
                retry_on=lambda error: classify(error) == "transient",
                stop=self._stop,
            )
        except PoisonError:
            pending = settled.unsettled_from(records)
            if len(pending) == 1:
                self._failed(projection, pending[0])
                settled.dead_lettered(pending[0])
                return
            # Record by record, in order, so one bad item does not block its page.
            for record in pending:
                self._apply(projection, [record], settled)
            return
        except RetryStopped as stopped:
            raise TransientError(f"stopped while {projection.name} was failing") from stopped

    def _count(self, counts: Counts) -> None:
        with self._lock:
            self._report.outcome += counts

    def _failed(self, projection: Projection, record: ChangeRecord) -> None:
        log.warning("backfill item failed", projection=projection.name, keys=str(dict(record.keys)))
        with self._lock:
            self._report.failed_keys.append(dict(record.keys))
