"""A projection for lane tests: per key, the record numbers in the order it applied them.

Guarded like a real projection (docs/design.md, invariant 4): a key's row keeps the position of
the last record applied, and a record at or below it is skipped, so a replay after a crash
changes nothing. If lanes ever applied a key's records out of order, the later one's guard
would skip the earlier one for good and the key's list would miss it: the read model is equal to
a clean run only if nothing was skipped and nothing was applied out of order.

`hold_at` makes the process stop inside a batch: the lane holding that record applies the
records before it, notes the hold in `lane_holds`, and then waits for ever, so a test can kill
the process while the batch is half applied.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

from consumer.record import ChangeRecord
from projections.projection import BaseProjection, Resources
from projections.results import Outcome, Results

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS lane_order (key text PRIMARY KEY, position text NOT NULL, "
    "ns integer[] NOT NULL)",
    "CREATE TABLE IF NOT EXISTS lane_holds (n integer PRIMARY KEY, pid integer NOT NULL)",
)
UPSERT = (
    "INSERT INTO lane_order AS o (key, position, ns) VALUES (%s, %s, ARRAY[%s]::integer[]) "
    "ON CONFLICT (key) DO UPDATE SET position = EXCLUDED.position, ns = o.ns || EXCLUDED.ns "
    "WHERE o.position < EXCLUDED.position"
)
HOLD_ENV = "LANE_TEST_HOLD_AT"


def create_schema(conn: Any) -> None:
    """The tables the projection writes (idempotent)."""
    for statement in SCHEMA:
        conn.execute(statement)


def applied_order(conn: Any) -> dict[str, list[int]]:
    """Per key, the record numbers applied, in the order they were applied."""
    return {key: list(ns) for key, ns in conn.execute("SELECT key, ns FROM lane_order")}


class GuardedOrderProjection(BaseProjection):
    """Appends each record's `n` to its key's list in PostgreSQL, guarded by position."""

    def __init__(self, name: str, pool: Any, hold_at: int | None = None) -> None:
        super().__init__(name)
        self._pool = pool
        self._hold_at = hold_at
        with pool.connection() as conn:
            create_schema(conn)

    @classmethod
    def from_settings(
        cls, name: str, settings: Any, resources: Resources
    ) -> GuardedOrderProjection:
        """No settings; the environment variable LANE_TEST_HOLD_AT sets `hold_at`."""
        hold = os.environ.get(HOLD_ENV)
        return cls(name, resources.postgres_pool(), int(hold) if hold else None)

    def apply(self, records: Sequence[ChangeRecord]) -> Results:
        """One transaction per call: the records up to a held one, in order."""
        rows = []
        for record in records:
            image = record.image or {}
            if image.get("n") == self._hold_at:
                self._write(rows)
                self._hold(int(image["n"]))
            rows.append((str(image["key"]), record.position, int(image["n"])))
        self._write(rows)
        return Results.of(records, Outcome.APPLIED)

    def _write(self, rows: list[tuple[str, str, int]]) -> None:
        if not rows:
            return
        with self._pool.connection() as conn, conn.transaction():
            conn.cursor().executemany(UPSERT, rows)

    def _hold(self, n: int) -> None:
        with self._pool.connection() as conn:
            conn.execute(
                "INSERT INTO lane_holds (n, pid) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                (n, os.getpid()),
            )
        while True:
            time.sleep(1)  # held until the test kills the process
