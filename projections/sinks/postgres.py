"""Batched, guarded writes to PostgreSQL: one transaction per batch, a few round trips.

A `GuardedUpsert` writes many rows with one `INSERT ... ON CONFLICT (key) DO UPDATE SET ...
WHERE <guard>`: the guard (e.g. `t.version < EXCLUDED.version`) is evaluated by PostgreSQL on
the row as committed, so a stale or concurrent write is refused by the database itself and
shows as a lower affected-row count, never as an error (docs/design.md, invariant 4).

PostgreSQL refuses to touch one row twice in a statement, so rows that share a key are first
coalesced to the newest one (the greatest `position`, else the later row): what applying them
one by one would leave, in one row.

Three ways to ship the rows, measured side by side by `python -m bench postgres`
(docs/benchmarks.md):
- `unnest` (default): one statement whose parameters are one array per column, in binary
  format; one round trip whatever the batch size, and it pipelines with the other statements
  of a batch. Text arrays would cost about ten times the client CPU: psycopg quotes and
  escapes every element in Python, while the binary dumpers are C.
- `executemany`: one statement per row in psycopg's pipeline mode (no round trip per row, but
  one execute per row on the server); the slowest of the three.
- `copy`: binary COPY into a session temp table, then the same guarded INSERT ... SELECT, in
  the caller's transaction. About as cheap on the client as `unnest`, but COPY cannot join a
  pipeline, so a multi-table batch pays a round trip per statement.

Errors become the classes the shard loop understands: the server or network failing
(OperationalError, which covers serialization failures, deadlocks, admin shutdown and pool
timeouts) is a TransientError; data the database rejects (DataError, IntegrityError) is a
PoisonError.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from operator import itemgetter
from typing import Any

import psycopg
from psycopg import sql
from psycopg.adapt import PyFormat
from psycopg_pool import ConnectionPool

from consumer.errors import PoisonError, TransientError
from consumer.record import ChangeRecord
from projections.results import Results


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
    column). The target row is aliased `t` in `update` and `guard`.

    Rows that share a key are coalesced to one: the one with the greatest `position` (the
    column the guard orders changes by, e.g. `version`), else the later row. `coalesce=False`
    keeps every row, and PostgreSQL then refuses a key twice: for an `update` that accumulates
    (deltas) or a compare-and-set guard, where dropping a row would lose a change.
    `binary=False` ships text parameters (kept for the benchmark's comparison).

    `returning=True` makes the statement return the keys it wrote, so `results` can tell each
    record applied (its key was written) from stale (the guard refused it).
    """

    table: str
    columns: tuple[tuple[str, str], ...]
    key: tuple[str, ...]
    schema: str = "public"
    update: Mapping[str, str] | None = None
    guard: str | None = None
    position: str | None = None
    coalesce: bool = True
    binary: bool = True
    returning: bool = False
    _key_of: Callable[[Sequence[Any]], Any] = field(init=False, repr=False, compare=False)
    _position_index: int | None = field(init=False, repr=False, compare=False)
    _statements: dict[Strategy, sql.Composed] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        names = [name for name, _ in self.columns]
        unknown = [c for c in (*self.key, self.position) if c is not None and c not in names]
        if unknown or not self.key:
            raise ValueError(f"GuardedUpsert {self.table}: key/position not in columns: {unknown}")
        # Frozen: the cached helpers are set once, here.
        key_of = itemgetter(*(names.index(k) for k in self.key))
        object.__setattr__(self, "_key_of", key_of)
        position = None if self.position is None else names.index(self.position)
        object.__setattr__(self, "_position_index", position)

    def newest_per_key(self, rows: Sequence[Sequence[Any]]) -> Sequence[Sequence[Any]]:
        """One row per key, the newest (see the class docstring); `rows` itself when no key
        repeats, which is the common case."""
        key_of, at = self._key_of, self._position_index
        newest: dict[Any, Sequence[Any]] = {}
        if at is None:
            for row in rows:
                newest[key_of(row)] = row
        else:
            for row in rows:
                key = key_of(row)
                held = newest.get(key)
                # A missing position is older than any; a tie keeps the later row.
                if (
                    held is None
                    or held[at] is None
                    or (row[at] is not None and row[at] >= held[at])
                ):
                    newest[key] = row
        return rows if len(newest) == len(rows) else list(newest.values())

    def results(
        self, written: Sequence[tuple[ChangeRecord, Sequence[Any]]], cursor: Any
    ) -> Results:
        """Each record applied where the statement wrote its row's key, else stale.

        `written` pairs each record with the row it sent; `cursor` is what `execute` returned
        (with `returning=True`), read after the pipeline, if any, has synced. A record whose
        row was coalesced away takes the outcome of its key's newest row, whose write holds
        its change.
        """
        if not self.returning:
            raise ValueError(f"GuardedUpsert {self.table}: results() needs returning=True")
        keys: set[Any] = set()
        while cursor is not None:
            for returned in cursor.fetchall():
                keys.add(returned[0] if len(self.key) == 1 else tuple(returned))
            if not cursor.nextset():
                break
        results = Results()
        for record, row in written:
            if self._key_of(row) in keys:
                results.applied(record)
            else:
                results.stale(record)
        return results

    def execute(
        self,
        conn: psycopg.Connection[Any],
        rows: Sequence[Sequence[Any]],
        strategy: Strategy = DEFAULT_STRATEGY,
    ) -> psycopg.Cursor[Any] | None:
        """Send the rows; return the cursor (its rowcount is rows inserted or updated).

        Rows dropped as older duplicates are not counted, so `len(rows) - rowcount` counts
        them with the stale ones. In pipeline mode rowcount is known only after the sync.
        """
        if not rows:
            return None
        if self.coalesce:
            rows = self.newest_per_key(rows)
        cur = conn.cursor()
        if strategy is Strategy.UNNEST:
            arrays = [list(column) for column in zip(*rows, strict=True)]
            try:
                cur.execute(self._statement(strategy), arrays)
            except psycopg.DataError as exc:
                # Raised while dumping, before anything was sent (no SQLSTATE): an array
                # mixing Python types (int and Decimal from one DynamoDB Number attribute).
                if exc.sqlstate is not None or not _as_text_where_mixed(arrays):
                    raise
                cur.execute(self._statement(strategy), arrays)
        elif strategy is Strategy.EXECUTEMANY:
            cur.executemany(self._statement(strategy), rows, returning=self.returning)
        else:
            self._copy(cur, rows)
        return cur

    def _copy(self, cur: psycopg.Cursor[Any], rows: Sequence[Sequence[Any]]) -> None:
        stage = sql.Identifier(self._stage_name)
        # A session temp table outlives the transaction, so the catalog is not churned per
        # batch; ON COMMIT DELETE ROWS empties it at commit, TRUNCATE before a second use in
        # one transaction. Both in one round trip (no parameters: one simple query).
        cur.execute(
            sql.SQL(
                "CREATE TEMP TABLE IF NOT EXISTS {stage} ({columns}) ON COMMIT DELETE ROWS; "
                "TRUNCATE {stage}"
            ).format(
                stage=stage,
                columns=sql.SQL(", ").join(
                    sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(sql_type))
                    for name, sql_type in self.columns
                ),
            )
        )
        # Text COPY: the server parses each value as its column's type, so a row may carry
        # any value whose text PostgreSQL accepts (as with the array casts of `unnest`);
        # psycopg's row writer is C either way.
        names = sql.SQL(", ").join(sql.Identifier(name) for name, _ in self.columns)
        with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(stage, names)) as copy:
            for row in rows:
                copy.write_row(row)
        cur.execute(self._statement(Strategy.COPY))

    @property
    def _stage_name(self) -> str:
        return f"_stage_{self.schema}_{self.table}"[:63]

    def _statement(self, strategy: Strategy) -> sql.Composed:
        cached = self._statements.get(strategy)
        if cached is not None:
            return cached
        names = sql.SQL(", ").join(sql.Identifier(name) for name, _ in self.columns)
        placeholder = sql.Placeholder(format=PyFormat.BINARY if self.binary else PyFormat.AUTO)
        if strategy is Strategy.UNNEST:
            source = sql.SQL("SELECT * FROM unnest({})").format(
                sql.SQL(", ").join(
                    sql.SQL("{}::{}[]").format(placeholder, sql.SQL(sql_type))
                    for _, sql_type in self.columns
                )
            )
        elif strategy is Strategy.EXECUTEMANY:
            source = sql.SQL("VALUES ({})").format(
                sql.SQL(", ").join(
                    sql.SQL("{}::{}").format(placeholder, sql.SQL(sql_type))
                    for _, sql_type in self.columns
                )
            )
        else:
            source = sql.SQL("SELECT {} FROM {}").format(names, sql.Identifier(self._stage_name))
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
        if self.returning:
            statement = statement + sql.SQL(" RETURNING {}").format(
                sql.SQL(", ").join(sql.Identifier("t", k) for k in self.key)
            )
        self._statements[strategy] = statement
        return statement


def _as_text_where_mixed(arrays: list[list[Any]]) -> bool:
    """Turn each array that mixes Python types into text (the server casts it back, as it
    parses any text parameter); return whether any was changed."""
    changed = False
    for values in arrays:
        if len({type(v) for v in values if v is not None}) > 1:
            values[:] = [None if v is None else str(v) for v in values]
            changed = True
    return changed


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
