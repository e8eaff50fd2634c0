"""One shard, start to end: fetch → decode → apply → checkpoint, in order, on its own thread."""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable
from typing import Protocol

import structlog

from consumer.errors import LeaseLostError
from consumer.observability.log import bind_thread
from consumer.observability.metrics import Metrics
from consumer.pipeline.apply import BatchAbandoned
from consumer.pipeline.prefetch import FetchedBatch, Prefetcher
from consumer.pipeline.retry import Backoff, RetryStopped, retry
from consumer.sources.shard import ShardInfo

log = structlog.get_logger(__name__)

# Longer than a GetRecords call normally takes; botocore's read timeout bounds the worst case.
PREFETCH_JOIN_SECONDS = 10.0


class Checkpointer(Protocol):
    """Records progress in the lease table, fenced by lease ownership (docs/design.md, inv. 3)."""

    def checkpoint(self, shard_id: str, sequence: str, sub_sequence: int = 0) -> object:
        """Raise LeaseLostError when this worker no longer owns the shard."""
        ...

    def mark_shard_end(self, shard_id: str) -> object:
        """Checkpoint SHARD_END: every record of the shard was applied."""
        ...


class BatchProcessor(Protocol):
    """Applies one batch completely (a Pipeline, or lanes of them), or raises BatchAbandoned."""

    def process(self, batch: FetchedBatch) -> None:
        """Return only once every record is applied or durably dead-lettered."""
        ...


class ShardExit(enum.Enum):
    """Why a shard consumer ended."""

    FINISHED = "finished"  # read and applied to SHARD_END
    STOPPED = "stopped"  # graceful stop between batches
    ABANDONED = "abandoned"  # stop deadline passed while a batch waited on retries
    LOST = "lost"  # the lease went to another worker


class ShardConsumer:
    """Drives a Prefetcher and a Pipeline for one shard; checkpoints only what is fully applied."""

    def __init__(
        self,
        *,
        stream: str,
        shard_id: str,
        prefetcher: Prefetcher,
        pipeline: BatchProcessor,
        checkpointer: Checkpointer,
        metrics: Metrics,
        abandon: threading.Event,
        on_shard_end: Callable[[str, tuple[ShardInfo, ...]], None],
        backoff: Backoff,
    ) -> None:
        self.stream = stream
        self.shard_id = shard_id
        self._prefetcher = prefetcher
        self._pipeline = pipeline
        self._checkpointer = checkpointer
        self._metrics = metrics
        self._abandon = abandon
        self._on_shard_end = on_shard_end
        self._backoff = backoff
        self._stopping = threading.Event()
        self._lost = threading.Event()
        self._in_flight = threading.Event()
        self.exit: ShardExit | None = None
        self._thread = threading.Thread(target=self._run, name=f"shard-{shard_id}", daemon=True)

    # -- control, from the worker's thread ---------------------------------------------------

    def start(self) -> None:
        """Start fetching and processing."""
        self._thread.start()

    def request_stop(self) -> None:
        """Graceful: stop fetching, finish the batch in flight, checkpoint it, exit."""
        self._stopping.set()
        self._prefetcher.stop()

    def abandon(self) -> None:
        """The stop deadline passed: give up the batch in flight without checkpointing it."""
        self._stopping.set()
        self._abandon.set()
        self._prefetcher.stop()

    def lease_lost(self) -> None:
        """The lease is gone: stop at once and never checkpoint this shard again."""
        self._lost.set()
        self._abandon.set()
        self._prefetcher.stop()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread to end."""
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        """The thread is still running."""
        return self._thread.is_alive()

    @property
    def caught_up(self) -> bool:
        """The last GetRecords returned nothing and nothing waits to be applied."""
        return (
            self._prefetcher.caught_up.is_set()
            and self._prefetcher.buffer.empty()
            and not self._in_flight.is_set()
        )

    # -- the loop, on the shard's thread ----------------------------------------------------

    def _run(self) -> None:
        bind_thread(stream=self.stream, shard=self.shard_id)
        self._metrics.reading_started(self.stream, self.shard_id)
        self._prefetcher.start()
        try:
            self.exit = self._loop()
        finally:
            self._prefetcher.stop()
            # A fetch in progress would record metrics after the worker forgot this shard's
            # series and bring them back: end only once the prefetcher has.
            self._prefetcher.join(PREFETCH_JOIN_SECONDS)
            self._in_flight.clear()
        log.info("shard consumer ended", exit=self.exit.value if self.exit else None)

    def _loop(self) -> ShardExit:
        while True:
            if self._lost.is_set():
                return ShardExit.LOST
            if self._stopping.is_set():
                # Batches fetched but not started are dropped: the next owner reads them again.
                return ShardExit.STOPPED
            batch = self._prefetcher.buffer.get(timeout=0.2)
            if batch is None:
                continue
            self._in_flight.set()
            try:
                exit_ = self._handle(batch)
            finally:
                self._in_flight.clear()
            if exit_ is not None:
                return exit_

    def _handle(self, batch: FetchedBatch) -> ShardExit | None:
        began = time.monotonic()
        if batch.last_sequence is not None:
            structlog.contextvars.bind_contextvars(sequence_number=batch.last_sequence)
        try:
            self._pipeline.process(batch)
        except BatchAbandoned:
            return ShardExit.LOST if self._lost.is_set() else ShardExit.ABANDONED
        if self._lost.is_set():
            return ShardExit.LOST
        try:
            self._checkpoint(batch)
        except LeaseLostError as exc:
            log.warning("lease lost at checkpoint; stopping the shard", error=str(exc))
            self._lost.set()
            return ShardExit.LOST
        except BatchAbandoned:
            return ShardExit.ABANDONED
        self._metrics.observe_batch(self.stream, self.shard_id, time.monotonic() - began)
        if batch.shard_end:
            self._metrics.set_shard_state(self.stream, self.shard_id, "finished")
            log.info("shard finished", children=[c.shard_id for c in batch.child_shards])
            self._on_shard_end(self.shard_id, batch.child_shards)
            return ShardExit.FINISHED
        return None

    def _checkpoint(self, batch: FetchedBatch) -> None:
        if batch.empty and not batch.shard_end:
            return

        def write() -> None:
            if batch.shard_end:
                self._checkpointer.mark_shard_end(self.shard_id)
            else:
                assert batch.last_sequence is not None
                self._checkpointer.checkpoint(
                    self.shard_id, batch.last_sequence, batch.last_sub_sequence
                )

        def retrying(exc: Exception, delay: float) -> None:
            self._metrics.record_retry("transient")
            log.warning("checkpoint failed; retrying", error=str(exc), delay_seconds=delay)

        try:
            retry(write, backoff=self._backoff, stop=self._abandon, on_retry=retrying)
        except RetryStopped as exc:
            raise BatchAbandoned("stopped while retrying a checkpoint") from exc.__cause__
        self._metrics.record_checkpoint(self.stream, self.shard_id)
