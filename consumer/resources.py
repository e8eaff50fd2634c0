"""Clients and pools shared by the daemon and its projections, created on first use."""

from __future__ import annotations

import threading
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from consumer.aws import make_client
from consumer.config import AwsSettings, PostgresSettings
from consumer.errors import ConfigError, TransientError
from consumer.observability.redact import redact

DSN_ENV = "[env STREAM_PROJECTOR_POSTGRES__DSN or DATABASE_URL]"
# How long a start-up or command-line check waits for PostgreSQL to accept a connection.
POSTGRES_CHECK_SECONDS = 5.0
# A server that answered but refuses this DSN: a configuration mistake, not an outage. libpq
# reports connection failures without a SQLSTATE, so the server's FATAL text is what tells
# (SQLSTATE classes 28, invalid authorization, and 3D, no such database).
REFUSALS = ("does not exist", "authentication failed", "no pg_hba.conf entry", "permission denied")


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
                check_dsn_syntax(self._postgres.dsn)
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

    @property
    def uses_postgres(self) -> bool:
        """A projection asked for the PostgreSQL pool."""
        return self._pool is not None

    def check_postgres(self, timeout: float = POSTGRES_CHECK_SECONDS) -> None:
        """If a projection uses PostgreSQL, connect once: ConfigError when the server refuses
        the DSN (password, role, database), TransientError when nothing answers in time."""
        if self._pool is None:
            return
        check_postgres_connection(self._postgres.dsn, timeout)

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


def check_dsn_syntax(dsn: str) -> None:
    """ConfigError naming postgres.dsn when it is empty or not a libpq connection string."""
    if not dsn:
        raise ConfigError(
            f"postgres.dsn: a PostgreSQL projection is configured but no DSN is set {DSN_ENV}"
        )
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:
        conninfo_to_dict(dsn)
    except ProgrammingError as exc:
        # libpq quotes the whole string, password included: the message is redacted.
        raise ConfigError(
            f"postgres.dsn: not a valid connection string: {redact(_first_line(exc))}; "
            f"see the connection strings of libpq's documentation {DSN_ENV}"
        ) from None


def check_postgres_connection(dsn: str, timeout: float = POSTGRES_CHECK_SECONDS) -> None:
    """Connect once and close; see SharedResources.check_postgres for what it raises."""
    import psycopg

    check_dsn_syntax(dsn)
    try:
        psycopg.connect(dsn, connect_timeout=max(1, round(timeout))).close()
    except psycopg.OperationalError as exc:
        reason = redact(_first_line(exc))
        if "FATAL" in reason and any(refusal in reason for refusal in REFUSALS):
            raise ConfigError(f"postgres.dsn: the server refused it: {reason} {DSN_ENV}") from None
        if reason.startswith("connection is bad: invalid"):
            # libpq checks values (port, sslmode) only when it connects.
            problem = reason.removeprefix("connection is bad: ")
            raise ConfigError(f"postgres.dsn: {problem} {DSN_ENV}") from None
        raise TransientError(
            f"postgres: cannot connect: {reason}; is PostgreSQL running and reachable at "
            f"postgres.dsn? {DSN_ENV}"
        ) from None


def _first_line(exc: BaseException) -> str:
    return " ".join(line.strip() for line in str(exc).strip().splitlines() if line.strip())
