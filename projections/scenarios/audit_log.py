"""Audit log (scenario 4): every change, with its before and after images, in PostgreSQL.

One row per change record: source table, keys, event (INSERT/MODIFY/REMOVE), before and
after (JSONB; absent images are NULL, e.g. on KEYS_ONLY streams), the stream position,
event id, the change's time, and `ttl_expiry` (true when the TTL service removed the item,
which is not a user delete). The row's identity is (stream, shard_id, position), so a replayed
or retried batch inserts nothing new: `ON CONFLICT DO NOTHING` is the guard, and the records
whose rows were there already are `stale`. The DynamoDB→Kinesis integration can write one
change twice (two positions, one `event_id`): both deliveries are logged; group by `event_id`
to see changes rather than deliveries.

JSON keeps numbers exact: a DynamoDB Number becomes a JSON number with all its digits
(never a float), sets become sorted arrays, binary becomes base64 text.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from psycopg import sql
from psycopg_pool import ConnectionPool
from pydantic import Field

from projections.api import (
    BaseProjection,
    ChangeRecord,
    ProjectionSettings,
    Resources,
    Results,
    Text,
    batch_transaction,
    translate_errors,
)

DEFAULT_TABLE = "audit_log"
DEFAULT_POOL_TIMEOUT = 5.0
_MIGRATE_LOCK = 0x5350_4155_4454  # "SPAUDT": serializes concurrent migrate runs

COLUMNS = (
    ("stream", "text"),
    ("shard_id", "text"),
    ("position", "text"),
    ("sequence_number", "text"),
    ("event_id", "text"),
    ("source_table", "text"),
    ("event_name", "text"),
    ("keys", "jsonb"),
    ("before", "jsonb"),
    ("after", "jsonb"),
    ("ttl_expiry", "boolean"),
    ("changed_at", "timestamptz"),
)
_DDL = """CREATE TABLE IF NOT EXISTS {table} (
    stream text NOT NULL,
    shard_id text NOT NULL,
    position text NOT NULL,
    sequence_number text NOT NULL,
    event_id text NOT NULL,
    source_table text,
    event_name text NOT NULL CHECK (event_name IN ('INSERT', 'MODIFY', 'REMOVE')),
    keys jsonb NOT NULL,
    before jsonb,
    after jsonb,
    ttl_expiry boolean NOT NULL,
    changed_at timestamptz,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream, shard_id, position)
)"""
_INDEX = "CREATE INDEX IF NOT EXISTS {index} ON {table} (source_table, changed_at)"


_INT64 = range(-(2**63), 2**63)


def _prepare(value: Any) -> Any:
    """Values orjson cannot write exactly, made writable: numbers verbatim, sets, bytes."""
    if isinstance(value, str | bool) or value is None:
        return value
    if isinstance(value, int):
        # DynamoDB Numbers reach 38 digits; orjson stops at 64 bits. A Fragment is verbatim.
        return value if value in _INT64 else orjson.Fragment(str(value))
    if isinstance(value, Decimal):
        return orjson.Fragment(format(value, "f") if value.is_finite() else '"NaN"')
    if isinstance(value, Mapping):
        return {str(k): _prepare(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_prepare(v) for v in value]
    if isinstance(value, set | frozenset):
        return [_prepare(v) for v in sorted(value, key=lambda v: (type(v).__name__, str(v)))]
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode()
    return value


def to_json(image: Mapping[str, Any] | None) -> str | None:
    """An image as JSON text for a JSONB column (None stays NULL)."""
    if image is None:
        return None
    return orjson.dumps(_prepare(image)).decode()


def row_of(record: ChangeRecord) -> tuple[Any, ...]:
    """The audit row of one change, in COLUMNS order."""
    at = record.approximate_creation_time
    return (
        record.stream,
        record.shard_id,
        record.position,
        record.sequence_number,
        record.event_id,
        record.table,
        record.event_name,
        to_json(record.keys),
        to_json(record.old_image),
        to_json(record.new_image),
        record.ttl_expiry,
        None if at is None else datetime.fromtimestamp(at, UTC),
    )


class AuditLogSettings(ProjectionSettings):
    """Where the log goes, and how long to wait for a pooled connection (seconds)."""

    table: Text = DEFAULT_TABLE
    schema_: Text = Field("public", alias="schema")
    pool_timeout: float = Field(DEFAULT_POOL_TIMEOUT, gt=0)


class AuditLogProjection(BaseProjection):
    """Appends every change to an audit table, once per stream position."""

    settings_model = AuditLogSettings

    def __init__(
        self,
        name: str,
        pool: ConnectionPool,
        table: str = DEFAULT_TABLE,
        schema: str = "public",
        pool_timeout: float = DEFAULT_POOL_TIMEOUT,
    ) -> None:
        super().__init__(name)
        self.pool = pool
        self.table = table
        self.schema = schema
        self.pool_timeout = pool_timeout
        # JSONB and timestamptz arrive as text/float arrays and are cast by the server.
        selected = sql.SQL(", ").join(
            sql.SQL("{}::{}").format(sql.Identifier(f"c{i}"), sql.SQL(kind))
            for i, (_, kind) in enumerate(COLUMNS)
        )
        shipped = sql.SQL(", ").join(
            sql.SQL("{}::{}[]").format(
                sql.Placeholder(), sql.SQL("text" if kind == "jsonb" else kind)
            )
            for _, kind in COLUMNS
        )
        aliases = sql.SQL(", ").join(sql.Identifier(f"c{i}") for i in range(len(COLUMNS)))
        self._insert = sql.SQL(
            "INSERT INTO {table} ({names}) SELECT {selected} FROM unnest({shipped}) AS u({aliases})"
            " ON CONFLICT DO NOTHING RETURNING stream, shard_id, position"
        ).format(
            table=sql.Identifier(schema, table),
            names=sql.SQL(", ").join(sql.Identifier(name) for name, _ in COLUMNS),
            selected=selected,
            shipped=shipped,
            aliases=aliases,
        )

    @classmethod
    def from_settings(
        cls, name: str, settings: AuditLogSettings, resources: Resources
    ) -> AuditLogProjection:
        """Built on the shared PostgreSQL pool."""
        return cls(
            name,
            resources.postgres_pool(),
            table=settings.table,
            schema=settings.schema_,
            pool_timeout=settings.pool_timeout,
        )

    def migrate(self) -> None:
        """Create the schema, the audit table and its index if absent."""
        table = sql.Identifier(self.schema, self.table)
        with (
            translate_errors(f"projection {self.name}"),
            self.pool.connection() as conn,
            conn.transaction(),
        ):
            conn.execute("SELECT pg_advisory_xact_lock(%s)", [_MIGRATE_LOCK])
            conn.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema))
            )
            conn.execute(sql.SQL(_DDL).format(table=table))
            index = sql.Identifier(f"{self.table}_source_table_changed_at")
            conn.execute(sql.SQL(_INDEX).format(index=index, table=table))

    def apply(self, records: Sequence[ChangeRecord]) -> Results:
        """Insert one row per record in one statement; records whose row exists are stale."""
        results = Results()
        if not records:
            return results
        rows = [row_of(record) for record in records]
        columns = [list(column) for column in zip(*rows, strict=True)]
        with batch_transaction(self.pool, self.pool_timeout, f"projection {self.name}") as conn:
            inserted = set(conn.execute(self._insert, columns).fetchall())
        for record in records:
            identity = (record.stream, record.shard_id, record.position)
            if identity in inserted:
                inserted.discard(identity)  # a second record at one position is its repeat
                results.applied(record)
            else:
                results.stale(record)
        return results
