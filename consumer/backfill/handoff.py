"""The hand-off: before the scan starts, pin where the stream takes over, as leases.

The rule is "the stream resumes at or before the moment the scan starts". Then every change
is covered: one made before that point is visible to the (strongly consistent) scan, one made
after it is delivered by the stream, and where both deliver, the stream wins because scanned
records carry the lowest position there is (see consumer/backfill/runner.py).

Per shard without a lease:
- closed shard: SHARD_END. All of its records were written before now, so the scan sees
  their effect; replaying them would only repeat older states.
- open shard: the last sequence number we can read right now (reading from TRIM_HORIZON up to
  the first empty page, within a page budget). A record we have read exists, so it was
  written before the scan starts: resuming after it leaves no gap. Without any record (a new
  stream, or a budget of 0) the lease starts at TRIM_HORIZON, which is always safe.

A checkpoint of LATEST is not used on purpose: LATEST means "the tip when the daemon first
reads the shard", so the changes between the backfill's start and the daemon's start would be
lost. A shard that already has a lease (the daemon runs or ran) is left alone: its checkpoint
is already in the past, which is all the rule asks.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from consumer.leases.lease import SENTINEL_SHARD_END, SENTINEL_TRIM_HORIZON, Lease
from consumer.leases.store import LeaseStore
from consumer.sources.position import TRIM_HORIZON
from consumer.sources.reader import StreamSource
from consumer.sources.shard import ShardInfo

log = structlog.get_logger(__name__)

# 100 pages of up to 1000 records: about 20 s per shard at GetRecords' 5 calls/s.
DEFAULT_TIP_PAGES = 100


@dataclass(frozen=True, slots=True)
class HandoffPoint:
    """Where one shard's stream reading takes over from the scan."""

    shard_id: str
    checkpoint: str
    created: bool


def last_visible_sequence(source: StreamSource, shard_id: str, max_pages: int) -> str | None:
    """The last sequence number readable in the shard now (None if none within the budget).

    An empty page may come before the real tip on DynamoDB Streams; stopping there only
    makes the stream replay a little more, never less.
    """
    if max_pages <= 0:
        return None
    reader = source.open_reader(shard_id, TRIM_HORIZON)
    last: str | None = None
    try:
        for _ in range(max_pages):
            batch = reader.next_batch()
            if batch.records:
                last = batch.records[-1].sequence_number
            if not batch.records or batch.shard_end:
                break
    finally:
        reader.close()
    return last


def record_handoff(
    source: StreamSource, store: LeaseStore, max_pages: int = DEFAULT_TIP_PAGES
) -> list[HandoffPoint]:
    """Create a lease at the hand-off point for every shard that has none; report each shard."""
    existing = {lease.lease_key: lease for lease in store.list_leases()}
    points: list[HandoffPoint] = []
    for shard in source.list_shards():
        lease = existing.get(shard.shard_id)
        if lease is None:
            lease, created = _create(source, store, shard, max_pages)
        else:
            created = False
        points.append(HandoffPoint(shard.shard_id, lease.checkpoint, created))
    log.info(
        "backfill hand-off recorded",
        stream=source.stream_id,
        shards=len(points),
        created=sum(point.created for point in points),
    )
    return points


def _create(
    source: StreamSource, store: LeaseStore, shard: ShardInfo, max_pages: int
) -> tuple[Lease, bool]:
    if shard.closed:
        checkpoint = SENTINEL_SHARD_END
    else:
        checkpoint = (
            last_visible_sequence(source, shard.shard_id, max_pages) or SENTINEL_TRIM_HORIZON
        )
    lease = Lease(
        lease_key=shard.shard_id,
        checkpoint=checkpoint,
        parent_shard_ids=frozenset(shard.parent_shard_ids),
    )
    if store.create_if_absent(lease):
        return lease, True
    # The daemon created it meanwhile: its checkpoint is in the past as well, keep it.
    return store.get(shard.shard_id) or lease, False
