"""What `status` and `leases list` print: one row per shard, as a text table or as JSON."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

from consumer.leases.lease import Lease

COLUMNS = ("SHARD", "PARENTS", "OWNER", "CHECKPOINT", "STATE", "ITERATOR AGE")
LEASE_COLUMNS = ("SHARD", "PARENTS", "OWNER", "COUNTER", "CHECKPOINT", "RENEWED", "STATE")


@dataclass(frozen=True, slots=True)
class ShardStatus:
    """One shard as the lease table (and, where known, the metrics) describe it."""

    shard_id: str
    parent_shard_ids: tuple[str, ...]
    owner: str | None
    checkpoint: str
    state: str
    iterator_age_seconds: float | None = None
    counter: int = 0
    # Seconds since a stream-projector worker last moved the counter; None when unknown.
    renewal_age_seconds: float | None = None


def shard_state(
    lease: Lease,
    leases: Mapping[str, Lease],
    now: float | None = None,
    failover_seconds: float = math.inf,
) -> str:
    """The state of a lease's shard: finished, waiting_parent, expired, running or unowned.

    A parent missing from the table counts as finished: its lease was deleted after SHARD_END
    or it expired from the stream, and either way the child may start. `expired` is an owned
    lease not renewed for failover_seconds (its worker died): any worker may take it.
    """
    if lease.finished:
        return "finished"
    for parent in lease.parent_shard_ids:
        if parent in leases and not leases[parent].finished:
            return "waiting_parent"
    if lease.lease_owner is None:
        return "unowned"
    if now is not None and lease.looks_expired(now, failover_seconds):
        return "expired"
    return "running"


def rows_from_leases(
    leases: Iterable[Lease],
    iterator_ages: Mapping[str, float] | None = None,
    *,
    now: float | None = None,
    failover_seconds: float = math.inf,
) -> list[ShardStatus]:
    """Status rows for every lease, sorted by shard id; ages come from metrics when known."""
    by_key = {lease.lease_key: lease for lease in leases}
    ages = iterator_ages or {}
    return [
        ShardStatus(
            shard_id=lease.lease_key,
            parent_shard_ids=tuple(sorted(lease.parent_shard_ids)),
            owner=lease.lease_owner,
            checkpoint=lease.checkpoint,
            state=shard_state(lease, by_key, now, failover_seconds),
            iterator_age_seconds=ages.get(lease.lease_key),
            counter=lease.lease_counter,
            renewal_age_seconds=None if now is None else lease.renewal_age(now),
        )
        for lease in sorted(by_key.values(), key=lambda lease: lease.lease_key)
    ]


def render_table(rows: Sequence[ShardStatus]) -> str:
    """`status`: aligned text columns, one line per shard, with a header line."""
    return aligned(COLUMNS, [_cells(row, COLUMNS) for row in rows])


def render_lease_table(rows: Sequence[ShardStatus]) -> str:
    """`leases list`: the lease items' own columns, one line per shard, with a header line."""
    return aligned(LEASE_COLUMNS, [_cells(row, LEASE_COLUMNS) for row in rows])


def render_json(rows: Sequence[ShardStatus]) -> str:
    """A JSON array of the rows, with the dataclass field names as keys (no trailing newline)."""
    return json.dumps([_as_json(row) for row in rows], indent=2)


def aligned(header: tuple[str, ...], lines: list[tuple[str, ...]]) -> str:
    """Columns padded to their widest cell, no trailing spaces, no trailing newline."""
    table = [header, *lines]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in table
    )


def _seconds(value: float | None, suffix: str = "") -> str:
    return "-" if value is None else f"{value:.1f}s{suffix}"


def _cells(row: ShardStatus, columns: tuple[str, ...]) -> tuple[str, ...]:
    cells = {
        "SHARD": row.shard_id,
        "PARENTS": ",".join(row.parent_shard_ids) or "-",
        "OWNER": row.owner or "-",
        "COUNTER": str(row.counter),
        "CHECKPOINT": row.checkpoint,
        "RENEWED": _seconds(row.renewal_age_seconds, " ago"),
        "STATE": row.state,
        "ITERATOR AGE": _seconds(row.iterator_age_seconds),
    }
    return tuple(cells[column] for column in columns)


def _as_json(row: ShardStatus) -> dict[str, object]:
    data = asdict(row)
    data["parent_shard_ids"] = list(row.parent_shard_ids)
    return data
