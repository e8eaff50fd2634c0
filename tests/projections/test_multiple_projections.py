"""Several projections on one stream: a failure of one never corrupts another."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from consumer.config import load_settings
from consumer.dead_letters.letter import DeadLetter
from consumer.demo.trip_saga import SAGA, create_trip_table, write_saga
from consumer.errors import PoisonError, TransientError
from consumer.record import ChangeRecord
from consumer.runtimes.daemon import build_daemon, run_daemon
from projections.projection import BaseProjection
from projections.results import Outcome, Results
from projections.scenarios.trip_search import TripSearchProjection
from tests.consumer.runtimes.test_daemon_trip_search import EXPECTED, documents
from tests.fixtures.servers import wait_until
from tests.support.daemon import FAST_LEASES, FAST_POLLING, daemon_thread, wait_caught_up


class Failing(BaseProjection):
    """A second projection that fails: transiently while `down` is set, or on one component."""

    def __init__(self, name: str, poison_component: str = "") -> None:
        self.name = name
        self.down = threading.Event()
        self.attempts = 0
        self.applied: list[str] = []
        self._poison = poison_component

    def apply(self, records: Sequence[ChangeRecord]) -> Results:
        self.attempts += 1
        if self.down.is_set():
            raise TransientError(f"{self.name} is down")
        if self._poison and any(r.keys["SK"].startswith(self._poison) for r in records):
            raise PoisonError(f"{self.name} cannot take {self._poison}")
        self.applied.extend(r.sequence_number for r in records)
        return Results.of(records, Outcome.APPLIED)


class ListSink:
    """Keeps dead letters in memory (the SQS sink has tests of its own)."""

    def __init__(self) -> None:
        self.letters: list[DeadLetter] = []

    def send(self, letters: Sequence[DeadLetter]) -> None:
        self.letters.extend(letters)


@pytest.fixture
def trips(
    aws_client: Callable[..., Any],
    moto_endpoint: str,
    unique_name: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[Any, Any, TripSearchProjection]:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    dynamodb = aws_client("dynamodb")
    source, search = unique_name("Trips"), unique_name("Search")
    create_trip_table(dynamodb, source)
    settings = load_settings(
        None,
        application=unique_name("app"),
        source={"kind": "dynamodb", "table": source},
        leases=FAST_LEASES,
        polling=FAST_POLLING,
        retry={"base_seconds": 0.01, "cap_seconds": 0.05},
        shutdown={"deadline_seconds": 1},
    )
    trip = TripSearchProjection(dynamodb, table=search)
    trip.migrate()
    write_saga(dynamodb, SAGA, source)
    return dynamodb, settings, trip


def test_a_batch_replayed_after_another_projection_failed_leaves_the_first_unchanged(
    trips: tuple[Any, Any, TripSearchProjection],
) -> None:
    dynamodb, settings, trip = trips
    other = Failing("other")
    other.down.set()
    daemon = build_daemon(settings, projections=[trip, other])
    stop = threading.Event()
    thread = threading.Thread(
        target=run_daemon, args=(daemon, stop), kwargs={"serve_http": False}, daemon=True
    )
    thread.start()
    # trip_search applied the batch; the other projection keeps failing: no checkpoint.
    wait_until(lambda: other.attempts >= 3, timeout=30, what="other retried")
    stop.set()
    thread.join(30)
    assert documents(dynamodb, trip.table) == EXPECTED
    assert all(not lease.checkpoint.isdigit() for lease in daemon.coordinator.all_leases())

    # Restart with the other projection healthy: the batch is applied again to both.
    other.down.clear()
    with daemon_thread(settings, projections=[trip, other]) as second:
        wait_caught_up(second)
        stale = second.metrics.registry.get_sample_value(
            "stream_projector_records_total",
            {"projection": trip.name, "outcome": "stale_skipped"},
        )
    assert documents(dynamodb, trip.table) == EXPECTED
    assert stale is not None and stale > 0  # re-applied, and every guard held
    assert len(set(other.applied)) == len(SAGA)


def test_poison_in_one_projection_is_dead_lettered_for_it_alone(
    trips: tuple[Any, Any, TripSearchProjection],
) -> None:
    dynamodb, settings, trip = trips
    other = Failing("other", poison_component="PAYMENT#")
    sink = ListSink()
    with daemon_thread(settings, projections=[trip, other], dead_letters=sink) as daemon:
        wait_caught_up(daemon)
    assert documents(dynamodb, trip.table) == EXPECTED
    payments = sum(1 for step in SAGA if step[1] == "PAYMENT")
    assert len(sink.letters) == payments
    assert {letter.projection for letter in sink.letters} == {"other"}
    assert len(other.applied) == len(SAGA) - payments
