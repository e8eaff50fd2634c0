"""Scenario 1 through the whole daemon: TripTable stream → leases → TripSearchTable (moto)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest

from consumer.config import Settings, load_settings
from consumer.demo.trip_saga import SAGA, Step, create_trip_table, write_saga
from consumer.leases.store import DynamoDBLeaseStore
from tests.support.daemon import FAST_LEASES, FAST_POLLING, daemon_thread, wait_caught_up
from tests.support.trip_search import EXPECTED, documents, scan


def trip_settings(endpoint: str, app: str, source: str, search: str) -> Settings:
    return load_settings(
        None,
        application=app,
        source={"kind": "dynamodb", "table": source},
        aws={"endpoint_url": endpoint, "region": "us-east-1"},
        leases=FAST_LEASES,
        polling=FAST_POLLING,
        projections=[
            {
                "name": "trip_search",
                "class": "projections.scenarios.trip_search:TripSearchProjection",
                "settings": {"table": search},
            }
        ],
    )


def interleavings() -> list[list[Step]]:
    """The saga's writes with the two trips' components interleaved in several orders.

    Writes to one item keep their order (the stream guarantees order per item only); the
    components of a trip and the two trips interleave freely.
    """
    by_item: dict[tuple[str, str], list[Step]] = {}
    for step in SAGA:
        by_item.setdefault((step[0], step[1]), []).append(step)
    items = list(by_item)
    orders = [list(SAGA)]
    for perm in itertools.islice(itertools.permutations(items), 1, 720, 179):
        # Round-robin over the items in this order: each item's own steps stay in sequence.
        queues = [list(by_item[item]) for item in perm]
        order: list[Step] = []
        while any(queues):
            for queue in queues:
                if queue:
                    order.append(queue.pop(0))
        orders.append(order)
    return orders


def project_saga(
    aws_client: Callable[..., Any],
    moto_endpoint: str,
    unique_name: Callable[[str], str],
    steps: list[Step],
) -> tuple[Any, Settings, str]:
    """Fresh tables, the daemon until caught up on `steps`; (client, settings, search table)."""
    dynamodb = aws_client("dynamodb")
    source, search, app = unique_name("TripTable"), unique_name("TripSearch"), unique_name("app")
    create_trip_table(dynamodb, source)
    settings = trip_settings(moto_endpoint, app, source, search)
    with daemon_thread(settings) as daemon:
        for projection in daemon.projections:
            projection.migrate()  # type: ignore[attr-defined]
        write_saga(dynamodb, steps, source)
        wait_caught_up(daemon)
    return dynamodb, settings, search


@pytest.mark.parametrize("steps", interleavings(), ids=lambda s: f"order{hash(str(s)) % 997}")
def test_documents_match_the_seed_for_any_interleaving(
    aws_client: Callable[..., Any],
    moto_endpoint: str,
    unique_name: Callable[[str], str],
    steps: list[Step],
) -> None:
    dynamodb, _, search = project_saga(aws_client, moto_endpoint, unique_name, steps)
    assert documents(dynamodb, search) == EXPECTED


def test_replay_from_trim_horizon_leaves_the_read_model_identical(
    aws_client: Callable[..., Any], moto_endpoint: str, unique_name: Callable[[str], str]
) -> None:
    dynamodb, settings, search = project_saga(aws_client, moto_endpoint, unique_name, SAGA)
    first = scan(dynamodb, search)
    store = DynamoDBLeaseStore(dynamodb, settings.lease_table)
    checkpoints = [lease.checkpoint for lease in store.list_leases()]
    assert checkpoints and all(c.isdigit() for c in checkpoints), checkpoints

    # Reset every checkpoint: the whole stream is read and applied a second time.
    for lease in store.list_leases():
        store.delete(lease.lease_key)
    with daemon_thread(settings) as daemon:
        wait_caught_up(daemon)
        metrics = daemon.metrics.registry
    assert scan(dynamodb, search) == first
    # Every change really went through the projection again, and every guard held.
    sample = "stream_projector_records_total"
    labels = {"projection": "trip_search"}
    stale = metrics.get_sample_value(sample, {**labels, "outcome": "stale_skipped"})
    applied = metrics.get_sample_value(sample, {**labels, "outcome": "applied"}) or 0
    assert stale is not None and stale >= len({(s[0], s[1]) for s in SAGA}), (stale, applied)
    assert [lease.checkpoint for lease in store.list_leases()] == checkpoints
