"""async-kinesis reading Kinesis JSON into PostgreSQL, as its users write it: the peer side of
`python -m bench kinesis_postgres`.

Runs in its own virtualenv (.bench-venvs/async-kinesis, made by the benchmark), never in the
project's, and imports nothing from the project. Two modes:

- `per-record`: one guarded upsert per record on an autocommit connection; the consumer
  checkpoints each page by itself (DynamoDB checkpointer, auto_checkpoint).
- `batched`: records gathered into batches of `--batch`, each written in one transaction
  with `executemany` (psycopg pipelines it), then `manual_checkpoint()`
  (auto_checkpoint=False).

It reads until it is terminated; the benchmark watches the table to know when it caught up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

import psycopg
from kinesis import Consumer, JsonProcessor  # type: ignore[import-not-found]
from kinesis.dynamodb import DynamoDBCheckPointer  # type: ignore[import-not-found]

# The same guard as the daemon's sink: a stale or repeated change never overwrites newer state.
UPSERT = (
    "INSERT INTO {table} AS t (id, version, name, price, body, updated_at) "
    "VALUES (%s, %s, %s, %s, %s::jsonb, %s::timestamptz) ON CONFLICT (id) DO UPDATE SET "
    "version = EXCLUDED.version, name = EXCLUDED.name, price = EXCLUDED.price, "
    "body = EXCLUDED.body, updated_at = EXCLUDED.updated_at WHERE t.version < EXCLUDED.version"
)


def row_of(item: dict[str, Any]) -> tuple[Any, ...]:
    """The table row of one event."""
    return (
        item["id"],
        item["version"],
        item["name"],
        item["price"],
        json.dumps(item),
        item["updated_at"],
    )


async def per_record(consumer: Any, conn: psycopg.AsyncConnection[Any], statement: str) -> None:
    """One upsert (and one commit) per record."""
    while True:
        async for item in consumer:
            await conn.execute(statement, row_of(item))


async def batched(
    consumer: Any,
    conn: psycopg.AsyncConnection[Any],
    statement: str,
    checkpointer: Any,
    size: int,
) -> None:
    """A transaction per batch, then a manual checkpoint."""
    batch: list[tuple[Any, ...]] = []

    async def flush() -> None:
        async with conn.transaction(), conn.cursor() as cur:
            await cur.executemany(statement, batch)
        batch.clear()
        await checkpointer.manual_checkpoint()

    while True:
        async for item in consumer:
            batch.append(row_of(item))
            if len(batch) >= size:
                await flush()
        if batch:  # the consumer went idle: write what is gathered
            await flush()


async def main(args: argparse.Namespace) -> None:
    """Consume the stream until terminated."""
    checkpointer = DynamoDBCheckPointer(
        name=args.application,
        endpoint_url=args.dynamodb_endpoint,
        region_name=args.region,
        auto_checkpoint=args.mode == "per-record",
    )
    statement = UPSERT.format(table=args.table)
    async with (
        await psycopg.AsyncConnection.connect(args.dsn, autocommit=True) as conn,
        Consumer(
            args.stream,
            endpoint_url=args.kinesis_endpoint,
            region_name=args.region,
            checkpointer=checkpointer,
            processor=JsonProcessor(),
            iterator_type="TRIM_HORIZON",
        ) as consumer,
    ):
        if args.mode == "per-record":
            await per_record(consumer, conn, statement)
        else:
            await batched(consumer, conn, statement, checkpointer, args.batch)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=("per-record", "batched"), required=True)
    parser.add_argument("--stream", required=True)
    parser.add_argument("--kinesis-endpoint", required=True)
    parser.add_argument("--dynamodb-endpoint", required=True)
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--application", required=True)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--table", required=True)
    parser.add_argument("--batch", type=int, default=500)
    asyncio.run(main(parser.parse_args()))
