"""Property: any delivery the stream can make gives the read model of one in-order pass.

Deliveries interleave aggregates arbitrarily (each aggregate keeps its own order, as a shard
keyed by aggregate id guarantees), repeat records later on (at-least-once), and cut the stream
into batches of any size.
"""

from __future__ import annotations

from collections import defaultdict, deque
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg_pool import ConnectionPool

from consumer.record import ChangeRecord
from projections.scenarios.shop import ShopProjection
from tests.projections.scenarios.shop.scenario import (
    dump,
    in_batches,
    records,
    redelivered,
    shop_scenario,
    truncate,
)

pytestmark = pytest.mark.integration

IN_ORDER = records(shop_scenario().events)


@st.composite
def deliveries(draw: st.DrawFn) -> list[list[ChangeRecord]]:
    """Batches of an interleaved, duplicated delivery of the scenario."""
    per_aggregate: dict[str, deque[ChangeRecord]] = defaultdict(deque)
    for record in IN_ORDER:
        per_aggregate[str(record.partition_key)].append(record)
    # A permutation of the aggregate tags, one tag per record, picks whose next event comes.
    order = draw(st.permutations([str(r.partition_key) for r in IN_ORDER]))
    stream = [per_aggregate[tag].popleft() for tag in order]
    # (record index, how many records later it is delivered again)
    repeats = draw(
        st.lists(
            st.tuples(st.integers(0, len(stream) - 1), st.integers(0, 12)),
            max_size=12,
        )
    )
    later: dict[int, list[ChangeRecord]] = defaultdict(list)
    for n, (index, delay) in enumerate(repeats):
        later[min(index + delay, len(stream) - 1)].append(redelivered(stream[index], 10_000 + n))
    delivered: list[ChangeRecord] = []
    for index, record in enumerate(stream):
        delivered.append(record)
        delivered.extend(later[index])
    size = draw(st.integers(1, 12))
    return in_batches(delivered, size)


@pytest.fixture
def in_order_read_model(shop: ShopProjection, pool: ConnectionPool) -> dict[str, list[Any]]:
    """The read model of applying every event once, in order; the tables are left empty."""
    for batch in in_batches(IN_ORDER, 10):
        shop.apply(batch)
    with pool.connection() as conn:
        model = dump(conn)
        truncate(conn)
    return model


# The database is per test, not per example: each example empties the tables first.
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(batches=deliveries())
def test_interleavings_and_duplicates_give_the_in_order_read_model(
    shop: ShopProjection,
    pool: ConnectionPool,
    in_order_read_model: dict[str, list[Any]],
    batches: list[list[ChangeRecord]],
) -> None:
    with pool.connection() as conn:
        truncate(conn)
    for batch in batches:
        shop.apply(batch)
    with pool.connection() as conn:
        assert dump(conn) == in_order_read_model
