"""Clients and pools shared by the daemon and its projections, created on first use."""

from __future__ import annotations

import threading
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from consumer.aws import make_client
from consumer.config import AwsSettings, PostgresSettings
from consumer.errors import ConfigError


class SharedResources:
    """Implements projections.projection.Resources: one client per service, one pool."""

    def __init__(self, aws: AwsSettings, postgres: PostgresSettings) -> None:
        self._aws = aws
        self._postgres = postgres
        self._clients: dict[str, Any] = {}
        self._pool: Any = None
        self._lock = threading.Lock()

    def aws_client(self, service: str) -> Any:
        """A boto3 client (thread-safe to share), with the configured region and endpoint."""
        with self._lock:
            client = self._clients.get(service)
            if client is None:
                client = make_client(
                    service,
                    region=self._aws.region or None,
                    endpoint_url=self._aws.endpoint_url or None,
                )
                self._clients[service] = client
            return client

    def postgres_pool(self) -> Any:
        """The psycopg connection pool, opened on first use."""
        with self._lock:
            if self._pool is None:
                if not self._postgres.dsn:
                    raise ConfigError(
                        "postgres.dsn: a PostgreSQL projection is configured but no DSN is set "
                        "[env STREAM_PROJECTOR_POSTGRES__DSN or DATABASE_URL]"
                    )
                from psycopg_pool import ConnectionPool

                # check_connection on checkout: after a database restart an idle connection
                # is replaced at once instead of failing the next batch once.
                self._pool = ConnectionPool(
                    self._postgres.dsn,
                    min_size=1,
                    max_size=self._postgres.pool_max_size,
                    open=True,
                    check=ConnectionPool.check_connection,
                )
            return self._pool

    def probe(self, lease_table: str) -> list[str]:
        """What is unreachable right now: the lease table, and the PostgreSQL pool if in use."""
        problems: list[str] = []
        try:
            self.aws_client("dynamodb").describe_table(TableName=lease_table)
        except (BotoCoreError, ClientError) as exc:
            problems.append(f"lease table {lease_table}: {exc}")
        if self._pool is not None:
            try:
                with self._pool.connection(timeout=2) as conn:
                    conn.execute("SELECT 1")
            except Exception as exc:  # any failure here means "not ready", reported as such
                problems.append(f"postgres: {type(exc).__name__}: {exc}")
        return problems

    def close(self) -> None:
        """Close the pool; clients need no closing."""
        with self._lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None
