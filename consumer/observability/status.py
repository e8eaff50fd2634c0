"""What `stream-projector status` prints: one row per shard, as a text table or as JSON."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

from consumer.leases.lease import Lease

COLUMNS = ("SHARD", "PARENTS", "OWNER", "CHECKPOINT", "STATE", "ITERATOR AGE")


@dataclass(frozen=True, slots=True)
class ShardStatus:
    """One shard as the lease table (and, where known, the metrics) describe it."""

    shard_id: str
    parent_shard_ids: tuple[str, ...]
    owner: str | None
    checkpoint: str
    state: str
    iterator_age_seconds: float | None = None


def shard_state(lease: Lease, leases: Mapping[str, Lease]) -> str:
    """The state of a lease's shard: finished, waiting_parent, running or unowned.

    A parent missing from the table counts as finished: its lease was deleted after SHARD_END
    or it expired from the stream, and either way the child may start.
    """
    if lease.finished:
        return "finished"
    for parent in lease.parent_shard_ids:
        if parent in leases and not leases[parent].finished:
            return "waiting_parent"
    return "running" if lease.lease_owner else "unowned"


def rows_from_leases(
    leases: Iterable[Lease], iterator_ages: Mapping[str, float] | None = None
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
            state=shard_state(lease, by_key),
            iterator_age_seconds=ages.get(lease.lease_key),
        )
        for lease in sorted(by_key.values(), key=lambda lease: lease.lease_key)
    ]


def render_table(rows: Sequence[ShardStatus]) -> str:
    """Aligned text columns, one line per shard, with a header line (no trailing newline)."""
    lines = [COLUMNS] + [_cells(row) for row in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def render_json(rows: Sequence[ShardStatus]) -> str:
    """A JSON array of the rows, with the dataclass field names as keys (no trailing newline)."""
    return json.dumps([_as_json(row) for row in rows], indent=2)


def _cells(row: ShardStatus) -> tuple[str, ...]:
    age = "-" if row.iterator_age_seconds is None else f"{row.iterator_age_seconds:.1f}s"
    return (
        row.shard_id,
        ",".join(row.parent_shard_ids) or "-",
        row.owner or "-",
        row.checkpoint,
        row.state,
        age,
    )


def _as_json(row: ShardStatus) -> dict[str, object]:
    data = asdict(row)
    data["parent_shard_ids"] = list(row.parent_shard_ids)
    return data
