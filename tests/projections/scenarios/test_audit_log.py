"""Audit log on a real PostgreSQL: every change once, exact images, TTL expiries marked."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg_pool import ConnectionPool

from consumer.errors import PoisonError
from consumer.record import ChangeRecord
from projections.results import Counts
from projections.scenarios.audit_log import AuditLogProjection

pytestmark = pytest.mark.integration

STREAM = "arn:aws:dynamodb:us-east-1:123456789012:table/DynamoDBShop/stream/2025"


def change(
    n: int, event: str, pk: str, old: Any = None, new: Any = None, **kw: Any
) -> ChangeRecord:
    return ChangeRecord(
        source="dynamodb",
        stream=STREAM,
        shard_id=kw.pop("shard_id", "shardId-1"),
        sequence_number=str(5_000_000_000 + n),
        event_name=event,  # type: ignore[arg-type]
        keys={"PK": pk, "SK": "METADATA"},
        new_image=new,
        old_image=old,
        approximate_creation_time=1_764_000_000.0 + n,
        event_id=f"ev{n}",
        table="DynamoDBShop",
        **kw,
    )


ORDER = {"PK": "ORDER#o1", "SK": "METADATA", "EntityType": "ORDER", "Total": Decimal("7800.50"),
         "Tags": frozenset({"gift", "express"}), "Blob": b"\x00\x01", "Big": 10**37 + 1,
         "Precise": Decimal("0.1234567890123456789012345678901234567")}  # fmt: skip
SESSION = {"PK": "WS#c1", "SK": "METADATA", "EntityType": "WEBSOCKET", "TTL": 1733068800}
CHANGES = [
    change(1, "INSERT", "ORDER#o1", new=ORDER),
    change(2, "MODIFY", "ORDER#o1", old=ORDER, new={**ORDER, "Status": "PAID"}),
    change(3, "INSERT", "WS#c1", new=SESSION),
    change(4, "REMOVE", "WS#c1", old=SESSION, ttl_expiry=True),
    change(5, "REMOVE", "ORDER#o1", old={**ORDER, "Status": "PAID"}),
    change(6, "MODIFY", "ORDER#o2", shard_id="shardId-2", view_type="KEYS_ONLY"),
]


@pytest.fixture
def pool(pg_dsn: str) -> Iterator[ConnectionPool]:
    with ConnectionPool(pg_dsn, min_size=1, max_size=2) as p:
        yield p


@pytest.fixture
def audit(pool: ConnectionPool) -> AuditLogProjection:
    projection = AuditLogProjection("audit", pool)
    projection.migrate()
    projection.migrate()  # twice changes nothing
    return projection


def dump(pool: ConnectionPool) -> list[tuple[Any, ...]]:
    """The whole read model, except recorded_at (when the row was written, by design)."""
    with pool.connection() as conn:
        return conn.execute(
            "SELECT stream, shard_id, position, sequence_number, event_id, source_table, "
            "event_name, keys, before, after, ttl_expiry, changed_at FROM audit_log "
            "ORDER BY stream, shard_id, position"
        ).fetchall()


def test_every_change_is_logged_with_exact_images_and_ttl_expiries_marked(
    audit: AuditLogProjection, pool: ConnectionPool
) -> None:
    assert audit.apply(CHANGES).counts() == Counts(applied=6)
    rows = {row[4]: row for row in dump(pool)}
    insert, modify = rows["ev1"], rows["ev2"]
    assert insert[6:10] == ("INSERT", {"PK": "ORDER#o1", "SK": "METADATA"}, None, insert[9])
    assert modify[8]["Total"] == Decimal("7800.50") and modify[9]["Status"] == "PAID"
    assert modify[8] == insert[9]  # before of the MODIFY is the INSERT's after
    with pool.connection() as conn:
        # Numbers keep every digit (never a float), sets are sorted arrays, bytes base64.
        exact = conn.execute(
            "SELECT after->>'Big', after->>'Precise', after->'Tags', after->>'Blob' "
            "FROM audit_log WHERE event_id = 'ev1'"
        ).fetchone()
    assert exact == (str(10**37 + 1), "0.1234567890123456789012345678901234567",
                     ["express", "gift"], "AAE=")  # fmt: skip
    assert [(r[6], r[10]) for r in (rows["ev4"], rows["ev5"])] == [
        ("REMOVE", True),  # the TTL service expired the session
        ("REMOVE", False),  # a user deleted the order
    ]
    assert rows["ev6"][8:10] == (None, None)  # KEYS_ONLY: keys, no images
    assert str(rows["ev1"][11]) == "2025-11-24 16:00:01+00:00"


def test_replay_twice_and_duplicates_leave_the_log_identical(
    audit: AuditLogProjection, pool: ConnectionPool
) -> None:
    audit.apply(CHANGES)
    first = dump(pool)
    assert audit.apply(CHANGES).counts() == Counts(stale=6)
    # Delivered again: new record objects for the same changes, as a decoder would make them.
    again = [replace(r) for r in CHANGES[3:] + CHANGES + CHANGES[:2]]
    assert audit.apply(again).counts() == Counts(stale=11)
    assert dump(pool) == first


def test_a_duplicate_inside_one_batch_is_logged_once(
    audit: AuditLogProjection, pool: ConnectionPool
) -> None:
    batch = [CHANGES[0], replace(CHANGES[0]), CHANGES[1]]
    assert audit.apply(batch).counts() == Counts(applied=2, stale=1)
    assert len(dump(pool)) == 2


def test_a_rejected_batch_leaves_nothing_behind(
    audit: AuditLogProjection, pool: ConnectionPool
) -> None:
    bad = replace(CHANGES[1], new_image={"text": "nul \x00 byte"})
    # PostgreSQL refuses a NUL in JSONB text: bad data, the same on every attempt.
    with pytest.raises(PoisonError):
        audit.apply([CHANGES[0], bad])
    assert dump(pool) == []


@st.composite
def deliveries(draw: st.DrawFn) -> list[list[ChangeRecord]]:
    """The changes interleaved across keys (each key in order), with repeats, in batches."""
    queues: dict[str, list[ChangeRecord]] = {}
    for record in CHANGES:
        queues.setdefault(record.keys["PK"], []).append(record)
    order = draw(st.permutations([r.keys["PK"] for r in CHANGES]))
    stream = [queues[pk].pop(0) for pk in order]
    repeats = draw(st.lists(st.sampled_from(CHANGES), max_size=8))
    delivered = stream + repeats
    size = draw(st.integers(1, 4))
    return [delivered[i : i + size] for i in range(0, len(delivered), size)]


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=deliveries())
def test_any_interleaving_and_duplication_gives_the_in_order_log(
    audit: AuditLogProjection, pool: ConnectionPool, batches: list[list[ChangeRecord]]
) -> None:
    with pool.connection() as conn:
        conn.execute("TRUNCATE audit_log")
    audit.apply(CHANGES)
    expected = dump(pool)
    with pool.connection() as conn:
        conn.execute("TRUNCATE audit_log")
    for batch in batches:
        audit.apply(batch)
    assert dump(pool) == expected
