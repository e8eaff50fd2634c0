"""Fetch and decode a shard ahead of processing, into a buffer bounded in batches and records.

The buffer holds at most `prefetch_batches` pages and `prefetch_records` records, plus the
batch being processed: memory per shard is bounded whatever the backlog and whatever the page
size grows to (docs/design.md, invariant 6). The page size itself adapts to the backlog
(consumer/pipeline/paging.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from consumer.errors import DecodeError, ThrottledError, TransientError, TrimmedDataError
from consumer.observability.metrics import Metrics
from consumer.pipeline.batch_buffer import BatchBuffer
from consumer.pipeline.paging import PageSizer
from consumer.pipeline.retry import Backoff, pause
from consumer.record import ChangeRecord, RawRecord
from consumer.sources.decode import Decoder
from consumer.sources.position import TRIM_HORIZON, StartPosition
from consumer.sources.reader import ShardReader
from consumer.sources.shard import ShardInfo

log = structlog.get_logger(__name__)

# Waited out, attempt after attempt: transient failures, and what else the stream may answer
# (the stream deleted, access revoked). The shard says so on every attempt (the worker's step
# reports it in /readyz); a fetch thread that died instead would leave the shard silently stuck.
WAITED_OUT: tuple[type[Exception], ...] = (TransientError, BotoCoreError, ClientError)


@dataclass(slots=True)
class FetchedBatch:
    """One decoded page: the records, the ones that failed to decode, and where it ends."""

    records: list[ChangeRecord]
    undecodable: list[tuple[RawRecord, DecodeError]] = field(default_factory=list)
    last_sequence: str | None = None
    last_sub_sequence: int = 0
    shard_end: bool = False
    child_shards: tuple[ShardInfo, ...] = ()

    @property
    def empty(self) -> bool:
        """No record at all: nothing to apply and nothing to checkpoint."""
        return self.last_sequence is None

    @property
    def size(self) -> int:
        """Records held in memory: decoded ones and the ones kept aside."""
        return len(self.records) + len(self.undecodable)


def decode_page(decoder: Decoder, shard_id: str, raws: list[RawRecord]) -> FetchedBatch:
    """Decode every record of a page; a record that fails is kept aside, never dropped."""
    batch = FetchedBatch(records=[])
    for raw in raws:
        try:
            decoded = decoder.decode(raw, shard_id)
        except DecodeError as exc:
            batch.undecodable.append((raw, exc))
            continue
        batch.records.extend(decoded)
    if raws:
        batch.last_sequence = raws[-1].sequence_number
        if batch.records and batch.records[-1].sequence_number == batch.last_sequence:
            batch.last_sub_sequence = batch.records[-1].sub_sequence_number
    return batch


class Prefetcher:
    """A thread that keeps the shard's queue full, pacing itself like the KCL's prefetcher."""

    def __init__(
        self,
        *,
        stream: str,
        shard_id: str,
        open_reader: Callable[[StartPosition], ShardReader],
        start: StartPosition,
        decoder: Decoder,
        metrics: Metrics,
        prefetch_batches: int,
        prefetch_records: int,
        page_sizer: PageSizer,
        idle_backoff_seconds: float,
        backoff: Backoff,
        on_error: Callable[[str], None] = lambda kind: None,
    ) -> None:
        self._stream = stream
        self._shard_id = shard_id
        self._open_reader = open_reader
        self._start = start
        self._decoder = decoder
        self._metrics = metrics
        self._idle_backoff = idle_backoff_seconds
        self._backoff = backoff
        self._on_error = on_error
        self._sizer = page_sizer
        self.buffer: BatchBuffer[FetchedBatch] = BatchBuffer(prefetch_batches, prefetch_records)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"prefetch-{shard_id}", daemon=True)
        self.caught_up = threading.Event()

    def start(self) -> None:
        """Begin fetching in the background."""
        self._thread.start()

    def stop(self) -> None:
        """Stop fetching; a batch already queued stays for the consumer to drop."""
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the fetch thread to end."""
        self._thread.join(timeout)

    def _run(self) -> None:
        from consumer.observability.log import bind_thread

        bind_thread(stream=self._stream, shard=self._shard_id)
        reader = self._open_with_retry(self._start)
        try:
            while reader is not None and not self._stop.is_set():
                reader = self._fetch_once(reader)
        finally:
            if reader is not None:
                reader.close()

    def _open_with_retry(self, start: StartPosition) -> ShardReader | None:
        while not self._stop.is_set():
            try:
                return self._open_reader(start)
            except TrimmedDataError:
                log.error(
                    "data lost upstream: start position is past retention, reading "
                    "from TRIM_HORIZON",
                    start=start.iterator_type,
                )
                self._metrics.record_trimmed(self._stream, self._shard_id)
                start = TRIM_HORIZON
            except WAITED_OUT as exc:
                self._wait_after_error("transient", exc)
        return None

    def _fetch_once(self, reader: ShardReader) -> ShardReader | None:
        # Room first, then fetch: a page is never held outside the bounded buffer.
        limit = self._sizer.limit
        if not self.buffer.wait_for_room(limit, self._stop):
            return reader
        began = time.monotonic()
        try:
            page = reader.next_batch(limit)
        except ThrottledError as exc:
            self._metrics.record_throttle(self._stream, self._shard_id)
            self._wait_after_error("throttle", exc)
            return reader
        except TrimmedDataError:
            log.error(
                "data lost upstream: records expired from the stream before they were "
                "read; continuing from TRIM_HORIZON"
            )
            self._metrics.record_trimmed(self._stream, self._shard_id)
            reader.close()
            return self._open_with_retry(TRIM_HORIZON)
        except WAITED_OUT as exc:
            self._wait_after_error("transient", exc)
            return reader
        self._backoff.reset()
        raws = list(page.records)
        newest = raws[-1].approximate_arrival if raws else None
        self._metrics.record_fetch(
            self._stream,
            self._shard_id,
            len(raws),
            newest,
            page.millis_behind_latest,
            time.monotonic() - began,
            oldest_arrival=raws[0].approximate_arrival if raws else None,
        )
        previous = self._sizer.limit
        age = time.time() - newest if newest is not None else None
        if self._sizer.observe(len(raws), limit, page.millis_behind_latest, age) != previous:
            log.debug("page size changed", limit=self._sizer.limit, previous=previous)
        batch = decode_page(self._decoder, self._shard_id, raws)
        batch.shard_end = page.shard_end
        batch.child_shards = page.child_shards
        if batch.empty and not batch.shard_end:
            self.caught_up.set()
            pause(self._stop, self._idle_backoff)
            return reader
        self.caught_up.clear()
        self.buffer.put(batch)
        if batch.shard_end:
            return None
        return reader

    def _wait_after_error(self, kind: str, exc: Exception) -> None:
        delay = self._backoff.next_delay()
        self._on_error(kind)
        log.warning(
            "get_records failed; backing off",
            kind=kind,
            error=str(exc),
            delay_seconds=round(delay, 3),
        )
        pause(self._stop, delay)
