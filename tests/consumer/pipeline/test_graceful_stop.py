"""Graceful stop: the batch in flight finishes (or is abandoned) within the deadline."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from consumer.config import load_settings
from consumer.leases.store import DynamoDBLeaseStore
from consumer.runtimes.daemon import build_daemon, run_daemon
from tests.consumer.pipeline.test_shard_loop import create_source_table, write_items
from tests.fixtures.servers import wait_until
from tests.support.collecting import CollectingProjection
from tests.support.daemon import FAST_LEASES, FAST_POLLING, wait_caught_up


@pytest.fixture
def setup(
    aws_client: Callable[..., Any],
    unique_name: Callable[[str], str],
    moto_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[Any, str, str]:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    dynamodb = aws_client("dynamodb")
    table = unique_name("source")
    create_source_table(dynamodb, table)
    return dynamodb, table, unique_name("app")


def start(table: str, app: str, deadline: float) -> tuple[Any, threading.Event, list[int], Any]:
    settings = load_settings(
        None,
        application=app,
        source={"kind": "dynamodb", "table": table},
        leases=FAST_LEASES,
        polling=FAST_POLLING,
        shutdown={"deadline_seconds": deadline},
    )
    projection = CollectingProjection()
    daemon = build_daemon(settings, projections=[projection])
    stop = threading.Event()
    result: list[int] = []
    thread = threading.Thread(
        target=lambda: result.append(run_daemon(daemon, stop, serve_http=False)), daemon=True
    )
    thread.start()
    return daemon, stop, result, (thread, projection)


@pytest.mark.parametrize("finishes_in_time", [True, False], ids=["finishes", "abandoned"])
def test_stop_finishes_or_abandons_the_batch_in_flight_then_releases_leases(
    setup: tuple[Any, str, str], finishes_in_time: bool
) -> None:
    dynamodb, table, app = setup
    deadline = 2.0
    daemon, stop, result, (thread, projection) = start(table, app, deadline)
    write_items(dynamodb, table, range(0, 3))
    wait_caught_up(daemon)
    (shard_id,) = daemon.worker.running_shards()
    store = DynamoDBLeaseStore(dynamodb, daemon.settings.lease_table)
    before = store.get(shard_id)
    assert before is not None

    projection.gate.clear()
    projection.entered.clear()
    write_items(dynamodb, table, range(3, 6))
    wait_until(projection.entered.is_set, timeout=30, what="batch in flight")
    stop.set()
    if finishes_in_time:
        projection.gate.set()
    thread.join(deadline + 15)
    # Stopped while the batch may still be held: the deadline, not the batch, ended the wait.
    stopped = not thread.is_alive()
    projection.gate.set()

    assert stopped and result == [0]
    after = store.get(shard_id)
    assert after is not None and after.lease_owner is None  # released: another takes it at once
    if finishes_in_time:
        # The batch in flight (at least item 3) was applied and checkpointed to its last record;
        # batches fetched after it were dropped, for the next owner to read again.
        assert projection.applied[:4] == [0, 1, 2, 3]
        assert after.checkpoint == projection.sequences[-1]
        assert int(after.checkpoint) > int(before.checkpoint)
    else:
        assert after.checkpoint == before.checkpoint  # abandoned: read again by the next owner
