"""Adaptive paging: the Limit grows while a shard is behind and shrinks at its tip, in bounds."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from consumer.aws import make_client
from consumer.observability.metrics import Metrics
from consumer.pipeline.batch_buffer import BatchBuffer
from consumer.pipeline.paging import CATCH_UP_SECONDS, PageSizer, behind
from consumer.pipeline.prefetch import Prefetcher
from consumer.pipeline.retry import Backoff
from consumer.sources.decode import KinesisDecoder
from consumer.sources.kinesis import KinesisSource
from consumer.sources.position import TRIM_HORIZON
from tests.fixtures.aws import REGION
from tests.fixtures.servers import wait_until
from tests.support.streams import kinesis_stream

# -- the decision -------------------------------------------------------------------------


def test_full_pages_double_the_limit_up_to_the_ceiling_and_the_tip_halves_it_to_the_floor() -> None:
    sizer = PageSizer(floor=1000, ceiling=10_000)
    grown = [sizer.observe(sizer.limit, sizer.limit, None, None) for _ in range(5)]
    assert grown == [2000, 4000, 8000, 10_000, 10_000]
    shrunk = [sizer.observe(3, sizer.limit, 0, 0.1) for _ in range(5)]
    assert shrunk == [5000, 2500, 1250, 1000, 1000]


def test_kinesis_millis_behind_latest_says_behind_even_in_a_short_page() -> None:
    threshold = int(CATCH_UP_SECONDS * 1000)
    assert behind(10, 1000, threshold, None)
    assert not behind(10, 1000, threshold - 1, None)
    # MillisBehindLatest is the authority on Kinesis: an old record at the tip is not a backlog.
    assert not behind(10, 1000, 0, 3600.0)


def test_dynamodb_streams_record_age_stands_in_for_millis_behind() -> None:
    assert behind(10, 1000, None, CATCH_UP_SECONDS + 5)
    assert not behind(10, 1000, None, CATCH_UP_SECONDS / 2)
    assert not behind(0, 1000, None, None)  # an empty page is the tip
    assert behind(1000, 1000, None, None)  # a full page is a backlog on any source


def test_page_sizes_must_be_ordered() -> None:
    with pytest.raises(ValueError, match="floor <= ceiling"):
        PageSizer(floor=2000, ceiling=1000)


# -- the bound ------------------------------------------------------------------------------


@dataclass
class Page:
    size: int


def test_buffer_bounds_records_as_well_as_batches() -> None:
    stop = threading.Event()
    buffer: BatchBuffer[Page] = BatchBuffer(max_batches=3, max_records=1000)
    assert buffer.wait_for_room(600, stop)
    buffer.put(Page(600))
    stop.set()  # from here on a wait that would block returns False at once
    assert not buffer.wait_for_room(600, stop)  # 1,200 records would exceed the bound
    assert buffer.wait_for_room(400, stop)
    buffer.put(Page(400))
    assert not buffer.wait_for_room(1, stop)
    assert buffer.records == 1000
    got = buffer.get(timeout=0)
    assert got is not None and got.size == 600
    assert buffer.records == 400


def test_buffer_bounds_batches_and_admits_an_oversized_page_only_when_empty() -> None:
    stop = threading.Event()
    stop.set()
    buffer: BatchBuffer[Page] = BatchBuffer(max_batches=2, max_records=1000)
    assert buffer.wait_for_room(5000, stop)  # empty: never wait forever for a big page
    buffer.put(Page(5000))
    assert not buffer.wait_for_room(1, stop)
    assert buffer.get(timeout=0) is not None
    buffer.put(Page(1))
    buffer.put(Page(1))
    assert not buffer.wait_for_room(1, stop)  # two batches is the batch bound
    assert buffer.get(timeout=0) is not None and buffer.get(timeout=0) is not None
    assert buffer.get(timeout=0.01) is None and buffer.empty()


def test_a_waiting_fetch_resumes_when_the_consumer_takes_a_batch() -> None:
    buffer: BatchBuffer[Page] = BatchBuffer(max_batches=1, max_records=10)
    buffer.put(Page(10))
    stop = threading.Event()
    admitted = threading.Event()
    waiter = threading.Thread(
        target=lambda: buffer.wait_for_room(10, stop, poll=5) and admitted.set()
    )
    waiter.start()
    assert buffer.get(timeout=1) is not None
    waiter.join(10)
    assert admitted.is_set()


# -- against kinesis-local -----------------------------------------------------------------


@dataclass
class LimitLog:
    """GetRecords Limits as the client sent them."""

    limits: list[int] = field(default_factory=list)

    def __call__(self, params: dict[str, Any], **_: Any) -> None:
        self.limits.append(int(params["Limit"]))


@pytest.mark.integration
def test_prefetcher_pages_grow_while_behind_shrink_at_the_tip_and_stay_within_the_bound(
    kinesis_local_endpoint: str, unique_name: Callable[[str], str]
) -> None:
    client = make_client("kinesis", REGION, kinesis_local_endpoint)
    stream = unique_name("paging")
    kinesis_stream(client, stream)
    total = 2500
    for start in range(0, total, 500):
        client.put_records(
            StreamName=stream,
            Records=[
                {"Data": orjson.dumps({"key": f"k{n}", "n": n}), "PartitionKey": f"k{n % 7}"}
                for n in range(start, start + 500)
            ],
        )
    log = LimitLog()
    client.meta.events.register("provide-client-params.kinesis.GetRecords", log)
    source = KinesisSource(client, stream, min_interval_seconds=0.01)
    shard_id = source.list_shards()[0].shard_id
    prefetcher = Prefetcher(
        stream=stream,
        shard_id=shard_id,
        open_reader=lambda start: source.open_reader(shard_id, start),
        start=TRIM_HORIZON,
        decoder=KinesisDecoder(stream, fmt="json"),
        metrics=Metrics(),
        prefetch_batches=2,
        prefetch_records=1000,
        page_sizer=PageSizer(floor=100, ceiling=1000),
        idle_backoff_seconds=0.01,
        backoff=Backoff(),
    )
    seen: list[int] = []
    sizes: list[int] = []
    prefetcher.start()
    try:
        while len(seen) < total:
            assert prefetcher.buffer.records <= 1000
            batch = prefetcher.buffer.get(timeout=10)
            assert batch is not None, f"no batch after {len(seen)} records"
            sizes.append(len(batch.records))
            seen.extend(int(record.image["n"]) for record in batch.records if record.image)
        # At the tip every empty page halves the Limit, back down to the floor.
        wait_until(lambda: log.limits[-1] == 100, timeout=30, what="Limit back at the floor")
    finally:
        prefetcher.stop()
        prefetcher.join(10)
    assert seen == list(range(total))
    assert log.limits[:5] == [100, 200, 400, 800, 1000]
    assert sizes[:5] == [100, 200, 400, 800, 1000]
    assert max(log.limits) == 1000
