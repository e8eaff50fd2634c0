"""Fixtures for the shop projection: a pool on a fresh database, a migrated projection.

The PostgreSQL fixtures themselves (pg_dsn, postgres_server) come from tests.fixtures.postgres,
registered in tests/conftest.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from psycopg_pool import ConnectionPool

from projections.scenarios.shop import ShopProjection


@pytest.fixture
def pool(pg_dsn: str) -> Iterator[ConnectionPool]:
    """A small pool on this test's own database."""
    with ConnectionPool(pg_dsn, min_size=1, max_size=4) as p:
        yield p


@pytest.fixture
def shop(pool: ConnectionPool) -> ShopProjection:
    """The shop projection, its tables created."""
    projection = ShopProjection("shop", pool)
    projection.migrate()
    return projection
