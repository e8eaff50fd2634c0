"""Batched, guarded writes to PostgreSQL: one transaction per batch, a few round trips.

A `GuardedUpsert` writes many rows with one `INSERT ... ON CONFLICT (key) DO UPDATE SET ...
WHERE <guard>`: the guard (e.g. `t.version < EXCLUDED.version`) is evaluated by PostgreSQL on
the row as committed, so a stale or concurrent write is refused by the database itself and
shows as a lower affected-row count, never as an error (docs/design.md invariant 4).

Three ways to ship the rows, measured side by side by `python -m bench postgres`
(docs/benchmarks.md):
- `unnest` (default): one statement whose parameters are one array per column; one round trip
  whatever the batch size, and it pipelines with the other statements of a batch. Measured
  the fastest for the shop projection, which writes several tables per batch.
- `executemany`: one statement per row in psycopg's pipeline mode (no round trip per row, but
  one execute per row on the server); the slowest of the three.
- `copy`: COPY into a session temp table, then INSERT ... SELECT. The fastest for one big
  table (about 1.5x unnest, a fifth of its client CPU) but COPY cannot join a pipeline, so
  a multi-table batch pays a round trip per statement.

Errors become the classes the shard loop understands: the server or network failing
(OperationalError, which covers serialization failures, deadlocks, admin shutdown and pool
timeouts) is a TransientError; data the database rejects (DataError, IntegrityError) is a
PoisonError.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

from consumer.errors import PoisonError, TransientError


class Strategy(StrEnum):
    """How a GuardedUpsert ships its rows (see the module docstring)."""

    UNNEST = "unnest"
    EXECUTEMANY = "executemany"
    COPY = "copy"


DEFAULT_STRATEGY = Strategy.UNNEST


@contextmanager
def translate_errors(what: str = "postgres") -> Iterator[None]:
    """Re-raise psycopg errors as TransientError or PoisonError; let everything else through."""
    try:
        yield
    except psycopg.OperationalError as exc:
        # Includes SerializationFailure, DeadlockDetected, AdminShutdown, QueryCanceled and
        # psycopg_pool.PoolTimeout: all of them may succeed on a later attempt.
        raise TransientError(f"{what}: {type(exc).__name__}: {exc}") from exc
    except psycopg.InterfaceError as exc:
        # A connection the server dropped surfaces here when it is reused; retrying gets a
        # fresh one from the pool.
        raise TransientError(f"{what}: {type(exc).__name__}: {exc}") from exc
    except (psycopg.DataError, psycopg.IntegrityError) as exc:
        raise PoisonError(f"{what}: {type(exc).__name__}: {exc}") from exc


@contextmanager
def batch_transaction(
    pool: ConnectionPool, timeout: float | None = None, what: str = "postgres"
) -> Iterator[psycopg.Connection[Any]]:
    """A pooled connection inside one transaction: committed on success, rolled back on error."""
    with translate_errors(what), pool.connection(timeout=timeout) as conn, conn.transaction():
        yield conn


@dataclass(frozen=True)
class GuardedUpsert:
    """Upsert many rows into one table, each update allowed only where `guard` holds.

    `columns` are (name, SQL type) pairs in row order; `update` maps a column to the SQL
    expression it is set to on conflict (default: `EXCLUDED.<column>` for every non-key
    column). The target row is aliased `t` in `update` and `guard`. Rows in one call must
    have distinct keys: PostgreSQL refuses to update one row twice in a statement.
    """

    table: str
    columns: tuple[tuple[str, str], ...]
    key: tuple[str, ...]
    schema: str = "public"
    update: Mapping[str, str] | None = None
    guard: str | None = None
    _statements: dict[Strategy, sql.Composed] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def execute(
        self,
        conn: psycopg.Connection[Any],
        rows: Sequence[Sequence[Any]],
        strategy: Strategy = DEFAULT_STRATEGY,
    ) -> psycopg.Cursor[Any] | None:
        """Send the rows; return the cursor (its rowcount is rows inserted or updated).

        In pipeline mode rowcount is known only after the pipeline syncs.
        """
        if not rows:
            return None
        cur = conn.cursor()
        if strategy is Strategy.UNNEST:
            arrays = [list(column) for column in zip(*rows, strict=True)]
            cur.execute(self._statement(strategy), arrays)
        elif strategy is Strategy.EXECUTEMANY:
            cur.executemany(self._statement(strategy), rows)
        else:
            self._copy(cur, rows)
        return cur

    def _copy(self, cur: psycopg.Cursor[Any], rows: Sequence[Sequence[Any]]) -> None:
        stage = sql.Identifier(f"_stage_{self.table}")
        # A session temp table outlives the transaction, so the catalog is not churned per
        # batch; ON COMMIT DELETE ROWS empties it at each commit.
        cur.execute(
            sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} ({}) ON COMMIT DELETE ROWS").format(
                stage,
                sql.SQL(", ").join(
                    sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(sql_type))
                    for name, sql_type in self.columns
                ),
            )
        )
        cur.execute(sql.SQL("TRUNCATE {}").format(stage))
        names = sql.SQL(", ").join(sql.Identifier(name) for name, _ in self.columns)
        with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(stage, names)) as copy:
            for row in rows:
                copy.write_row(row)
        cur.execute(self._statement(Strategy.COPY))

    def _statement(self, strategy: Strategy) -> sql.Composed:
        cached = self._statements.get(strategy)
        if cached is not None:
            return cached
        names = sql.SQL(", ").join(sql.Identifier(name) for name, _ in self.columns)
        if strategy is Strategy.UNNEST:
            source = sql.SQL("SELECT * FROM unnest({})").format(
                sql.SQL(", ").join(
                    sql.SQL("{}::{}[]").format(sql.Placeholder(), sql.SQL(sql_type))
                    for _, sql_type in self.columns
                )
            )
        elif strategy is Strategy.EXECUTEMANY:
            source = sql.SQL("VALUES ({})").format(
                sql.SQL(", ").join(
                    sql.SQL("{}::{}").format(sql.Placeholder(), sql.SQL(sql_type))
                    for _, sql_type in self.columns
                )
            )
        else:
            source = sql.SQL("SELECT {} FROM {}").format(
                names, sql.Identifier(f"_stage_{self.table}")
            )
        update = self.update or {
            name: f"EXCLUDED.{name}" for name, _ in self.columns if name not in self.key
        }
        statement = sql.SQL(
            "INSERT INTO {table} AS t ({names}) {source} ON CONFLICT ({key}) DO UPDATE SET {sets}"
        ).format(
            table=sql.Identifier(self.schema, self.table),
            names=names,
            source=source,
            key=sql.SQL(", ").join(sql.Identifier(k) for k in self.key),
            sets=sql.SQL(", ").join(
                sql.SQL("{} = {}").format(sql.Identifier(name), sql.SQL(expression))
                for name, expression in update.items()
            ),
        )
        if self.guard:
            statement = statement + sql.SQL(" WHERE ") + sql.SQL(self.guard)
        self._statements[strategy] = statement
        return statement


def delete_keys(
    conn: psycopg.Connection[Any], schema: str, table: str, key: str, sql_type: str, keys: list[Any]
) -> psycopg.Cursor[Any] | None:
    """DELETE every row whose `key` is in `keys`, in one statement."""
    if not keys:
        return None
    cur = conn.cursor()
    cur.execute(
        sql.SQL("DELETE FROM {} WHERE {} = ANY({}::{}[])").format(
            sql.Identifier(schema, table),
            sql.Identifier(key),
            sql.Placeholder(),
            sql.SQL(sql_type),
        ),
        [keys],
    )
    return cur


def select_keys(
    conn: psycopg.Connection[Any],
    schema: str,
    table: str,
    columns: Sequence[str],
    key: str,
    sql_type: str,
    keys: list[Any],
) -> psycopg.Cursor[Any] | None:
    """SELECT `columns` of the rows whose `key` is in `keys`; fetch from the returned cursor."""
    if not keys:
        return None
    cur = conn.cursor()
    cur.execute(
        sql.SQL("SELECT {} FROM {} WHERE {} = ANY({}::{}[])").format(
            sql.SQL(", ").join(sql.Identifier(c) for c in columns),
            sql.Identifier(schema, table),
            sql.Identifier(key),
            sql.Placeholder(),
            sql.SQL(sql_type),
        ),
        [keys],
    )
    return cur
