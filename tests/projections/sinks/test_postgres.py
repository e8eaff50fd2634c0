"""The PostgreSQL sink against a real server: guarded upserts and error classification."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from consumer.errors import PoisonError, TransientError
from consumer.record import ChangeRecord
from projections.results import Outcome
from projections.sinks.postgres import (
    GuardedUpsert,
    Strategy,
    batch_transaction,
    delete_keys,
    translate_errors,
)
from tests.fixtures.servers import free_port, wait_until

if TYPE_CHECKING:
    from tests.fixtures.postgres import PostgresServer

pytestmark = pytest.mark.integration

DOCS = GuardedUpsert(
    "docs",
    (("id", "text"), ("version", "bigint"), ("body", "jsonb"), ("at", "timestamptz")),
    ("id",),
    guard="t.version < EXCLUDED.version",
    position="version",
)
T0 = datetime(2025, 1, 1, tzinfo=UTC)


@pytest.fixture
def pool(pg_dsn: str) -> Iterator[ConnectionPool]:
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE docs (id text PRIMARY KEY, version bigint NOT NULL, body jsonb, "
            "at timestamptz)"
        )
    with ConnectionPool(pg_dsn, min_size=1, max_size=2) as p:
        yield p


def rows(pool: ConnectionPool) -> list[tuple[object, ...]]:
    with pool.connection() as conn:
        return conn.execute("SELECT id, version, body, at FROM docs ORDER BY id").fetchall()


@pytest.mark.parametrize("strategy", list(Strategy))
def test_upsert_inserts_updates_newer_and_refuses_stale_rows(
    pool: ConnectionPool, strategy: Strategy
) -> None:
    with batch_transaction(pool) as conn:
        cur = DOCS.execute(conn, [("a", 2, '{"v": 2}', T0), ("b", 1, "[1]", None)], strategy)
        assert cur is not None and cur.rowcount == 2
    with batch_transaction(pool) as conn:
        # a: stale (1 < 2 is false for the stored row) and equal (2); b: newer.
        cur = DOCS.execute(conn, [("a", 1, '{"v": 1}', T0), ("b", 5, '{"v": 5}', T0)], strategy)
        assert cur is not None and cur.rowcount == 1
    with batch_transaction(pool) as conn:
        cur = DOCS.execute(conn, [("a", 2, '{"v": "again"}', T0)], strategy)
        assert cur is not None and cur.rowcount == 0
    assert rows(pool) == [("a", 2, {"v": 2}, T0), ("b", 5, {"v": 5}, T0)]


@pytest.mark.parametrize("strategy", list(Strategy))
def test_a_key_twice_in_one_statement_writes_its_newest_row(
    pool: ConnectionPool, strategy: Strategy
) -> None:
    with batch_transaction(pool) as conn:
        DOCS.execute(conn, [("b", 5, '{"v": 5}', T0)], strategy)
    with batch_transaction(pool) as conn:
        # Out of order on purpose: the greatest version wins, not the last row.
        batch = [
            ("a", 2, '{"v": 2}', T0),
            ("a", 3, '{"v": 3}', T0),
            ("b", 4, '{"v": 4}', T0),
            ("a", 1, '{"v": 1}', T0),
            ("b", 3, '{"v": 3}', T0),
        ]
        cur = DOCS.execute(conn, batch, strategy)
        # One row written (a at 3); b's two changes are older than the stored 5: stale.
        assert cur is not None and cur.rowcount == 1
    assert rows(pool) == [("a", 3, {"v": 3}, T0), ("b", 5, {"v": 5}, T0)]


def test_without_a_position_the_later_row_of_a_key_wins(pool: ConnectionPool) -> None:
    unordered = replace(DOCS, guard=None, position=None)
    with batch_transaction(pool) as conn:
        cur = unordered.execute(conn, [("a", 2, '"first"', None), ("a", 1, '"later"', None)])
        assert cur is not None and cur.rowcount == 1
    assert rows(pool) == [("a", 1, "later", None)]


def test_coalescing_off_leaves_a_repeated_key_to_postgresql(pool: ConnectionPool) -> None:
    # For accumulating updates (deltas) every row counts: the statement must fail, not
    # silently drop one.
    deltas = replace(DOCS, update={"version": "t.version + EXCLUDED.version"}, coalesce=False)
    with pytest.raises(psycopg.errors.CardinalityViolation), batch_transaction(pool) as conn:
        deltas.execute(conn, [("a", 1, "{}", None), ("a", 1, "{}", None)])
    assert rows(pool) == []


def test_text_parameters_write_what_binary_ones_do(pool: ConnectionPool) -> None:
    text = replace(DOCS, binary=False)
    batch = [("a", 2, '{"v": [1, "x,\\"y\\"}"]}', T0), ("b", 1, "null", None)]
    with batch_transaction(pool) as conn:
        DOCS.execute(conn, batch)
    binary_rows = rows(pool)
    with batch_transaction(pool) as conn:
        conn.execute("TRUNCATE docs")
        text.execute(conn, batch)
    assert rows(pool) == binary_rows
    assert binary_rows[0][2] == {"v": [1, 'x,"y"}']}


@pytest.mark.parametrize("strategy", list(Strategy))
def test_a_column_mixing_int_and_decimal_is_written(
    pool: ConnectionPool, strategy: Strategy
) -> None:
    with pool.connection() as conn:
        conn.execute("ALTER TABLE docs ADD COLUMN amount numeric")
    amounts = GuardedUpsert(
        "docs", (("id", "text"), ("version", "bigint"), ("amount", "numeric")), ("id",)
    )
    with batch_transaction(pool) as conn:
        # A DynamoDB Number decodes to int when integral, Decimal otherwise.
        amounts.execute(conn, [("a", 1, 10), ("b", 1, Decimal("2.5")), ("c", 1, None)], strategy)
    with pool.connection() as conn:
        stored = conn.execute("SELECT id, amount FROM docs ORDER BY id").fetchall()
    assert stored == [("a", Decimal(10)), ("b", Decimal("2.5")), ("c", None)]


def test_key_and_position_must_be_columns() -> None:
    with pytest.raises(ValueError, match="missing"):
        GuardedUpsert("docs", (("id", "text"),), ("id",), position="missing")


def test_a_failing_batch_writes_nothing(pool: ConnectionPool) -> None:
    with pytest.raises(PoisonError), batch_transaction(pool) as conn:
        DOCS.execute(conn, [("a", 1, "{}", None)])
        DOCS.execute(conn, [("b", None, "{}", None)])  # NOT NULL violation
    assert rows(pool) == []


def test_delete_keys_removes_only_those_rows(pool: ConnectionPool) -> None:
    with batch_transaction(pool) as conn:
        DOCS.execute(conn, [("a", 1, "{}", None), ("b", 1, "{}", None), ("c", 1, "{}", None)])
        delete_keys(conn, "public", "docs", "id", "text", ["a", "c", "zz"])
    assert [r[0] for r in rows(pool)] == ["b"]


def test_data_and_integrity_errors_are_poison(pool: ConnectionPool) -> None:
    with pytest.raises(PoisonError, match="NumericValueOutOfRange"), batch_transaction(pool) as c:
        c.execute("INSERT INTO docs (id, version) VALUES ('x', 99999999999999999999)")
    with pytest.raises(PoisonError, match="NotNullViolation"), batch_transaction(pool) as c:
        c.execute("INSERT INTO docs (id, version) VALUES ('x', NULL)")


def test_serialization_failure_is_transient(pool: ConnectionPool, pg_dsn: str) -> None:
    with batch_transaction(pool) as conn:
        DOCS.execute(conn, [("a", 1, "{}", None)])
    with psycopg.connect(pg_dsn) as first, psycopg.connect(pg_dsn, autocommit=True) as other:
        first.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        first.execute("SELECT * FROM docs")  # takes the snapshot
        other.execute("UPDATE docs SET version = 2 WHERE id = 'a'")
        with pytest.raises(TransientError, match="SerializationFailure"), translate_errors():
            first.execute("UPDATE docs SET version = 3 WHERE id = 'a'")


def test_unreachable_server_is_transient() -> None:
    dsn = f"host=127.0.0.1 port={free_port()} user=postgres dbname=x connect_timeout=1"
    with (
        ConnectionPool(dsn, min_size=0, max_size=1, open=True) as dead,
        pytest.raises(TransientError),
        batch_transaction(dead, timeout=0.5),
    ):
        pass


def test_a_server_restart_is_transient_and_the_pool_recovers(
    pool: ConnectionPool, postgres_server: PostgresServer
) -> None:
    with batch_transaction(pool) as conn:
        DOCS.execute(conn, [("a", 1, "{}", None)])
    postgres_server.stop()
    try:
        with pytest.raises(TransientError), batch_transaction(pool, timeout=1) as conn:
            DOCS.execute(conn, [("a", 2, "{}", None)])
    finally:
        postgres_server.start()

    def write() -> bool:
        with batch_transaction(pool, timeout=1) as conn:
            DOCS.execute(conn, [("a", 3, "{}", None)])
        return True

    # Idle connections broken by the restart fail once each (transient) and are discarded;
    # the retries the shard loop makes then get fresh ones.
    wait_until(write, timeout=10, what="a write after the restart")
    assert rows(pool)[0][1] == 3


def change(n: int) -> ChangeRecord:
    """A record for a row to stand for (the sink reads nothing from it)."""
    return ChangeRecord("kinesis", "s", "shard-0", str(n), "INSERT", {}, None, None, None)


@pytest.mark.parametrize("strategy", list(Strategy))
def test_with_returning_each_record_is_applied_or_stale_by_what_the_statement_wrote(
    pool: ConnectionPool, strategy: Strategy
) -> None:
    docs = replace(DOCS, returning=True)
    with batch_transaction(pool) as conn:
        docs.execute(conn, [("a", 5, "{}", T0), ("b", 1, "{}", T0)], strategy)
    # a: older than stored (stale); b: newer, twice (coalesced: both applied); c: new.
    written = [
        (change(1), ("a", 4, "{}", T0)),
        (change(2), ("b", 2, "{}", T0)),
        (change(3), ("b", 3, "{}", T0)),
        (change(4), ("c", 1, "{}", T0)),
    ]
    with batch_transaction(pool) as conn:
        cursor = docs.execute(conn, [row for _, row in written], strategy)
        results = docs.results(written, cursor)
    assert [r.outcome for r in results] == [
        Outcome.STALE,
        Outcome.APPLIED,
        Outcome.APPLIED,
        Outcome.APPLIED,
    ]
    assert [r.record for r in results] == [record for record, _ in written]
    assert [row[:2] for row in rows(pool)] == [("a", 5), ("b", 3), ("c", 1)]
    with pytest.raises(ValueError, match="returning=True"):
        DOCS.results(written, cursor)
