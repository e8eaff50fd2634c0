"""Metrics: names, labels, help texts, per-shard series lifecycle, and a real Prometheus scrape."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence

import pytest
import requests
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from consumer.observability.health import HealthServer, Heartbeat
from consumer.observability.metrics import Metrics
from projections.results import Counts
from tests.fixtures.prometheus import PrometheusServer
from tests.fixtures.servers import wait_until

NOW = 1_700_000_000.0
AGE = "stream_projector_iterator_age_seconds"
FETCH_AGE = "stream_projector_get_records_iterator_age_seconds"
PENDING = "stream_projector_records_pending"
BEHIND = "stream_projector_millis_behind_latest"
GET_RECORDS_COUNT = "stream_projector_get_records_duration_seconds_count"


def families(text: str) -> dict[str, object]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def samples(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every exposed sample as {(name, labels): value}, parsed from the text format."""
    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return samples(metrics).get((name, frozenset(labels.items())))


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(clock=lambda: NOW)


def test_every_metric_has_the_prefix_a_help_text_and_its_documented_labels(
    metrics: Metrics,
) -> None:
    expected = {
        "stream_projector_iterator_age_seconds": ("gauge", {"stream", "shard"}),
        "stream_projector_get_records_iterator_age_seconds": ("gauge", {"stream", "shard"}),
        "stream_projector_records_pending": ("gauge", {"stream", "shard"}),
        "stream_projector_millis_behind_latest": ("gauge", {"stream", "shard"}),
        "stream_projector_get_records_duration_seconds": ("histogram", {"stream"}),
        "stream_projector_records_fetched": ("counter", {"stream", "shard"}),
        "stream_projector_get_records_throttles": ("counter", {"stream", "shard"}),
        "stream_projector_data_lost": ("counter", {"stream", "shard"}),
        "stream_projector_records": ("counter", {"projection", "outcome"}),
        "stream_projector_dead_letters": ("counter", {"reason"}),
        "stream_projector_batch_duration_seconds": ("histogram", {"stream"}),
        "stream_projector_retries": ("counter", {"kind"}),
        "stream_projector_last_checkpoint_timestamp_seconds": ("gauge", {"stream", "shard"}),
        "stream_projector_shards": ("gauge", {"state"}),
        "stream_projector_lease_events": ("counter", {"kind"}),
        "stream_projector_leases_held": ("gauge", set()),
    }
    metrics.record_fetch("orders", "shard-1", 2, NOW - 1, 5, 0.01)
    metrics.record_throttle("orders", "shard-1")
    metrics.record_trimmed("orders", "shard-1")
    metrics.record_outcomes("search", Counts(applied=1))
    metrics.record_dead_letter("search", "poison")
    metrics.observe_batch("orders", "shard-1", 0.2)
    metrics.record_checkpoint("orders", "shard-1")
    metrics.set_shard_state("orders", "shard-1", "running")
    metrics.lease_event("taken")
    metrics.set_leases_held(1)

    found = families(generate_latest(metrics.registry).decode())

    for name, (kind, labels) in expected.items():
        family = found[name]
        assert family.type == kind, name
        assert family.documentation, f"{name} has no help text"
        own = {
            frozenset(s.labels) - {"le"} for s in family.samples if not s.name.endswith("_created")
        }
        assert own == {frozenset(labels)}, (name, own)
    # prometheus-client exposes each counter's and histogram's creation time as `*_created`.
    assert {name for name in found if not name.endswith("_created")} == set(expected)


def test_iterator_age_is_the_oldest_unapplied_record_and_grows_while_it_waits() -> None:
    now = [NOW]
    metrics = Metrics(clock=lambda: now[0])
    metrics.record_fetch("orders", "shard-1", 10, NOW - 10, None, 0.01, oldest_arrival=NOW - 40)
    assert value(metrics, AGE, stream="orders", shard="shard-1") == 40
    assert value(metrics, PENDING, stream="orders", shard="shard-1") == 10
    # The fetch-side age is the newest record's, at fetch time: it does not grow.
    assert value(metrics, FETCH_AGE, stream="orders", shard="shard-1") == 10

    now[0] += 5
    # GetRecords found nothing more: the fetch side is caught up, the records still wait.
    metrics.record_fetch("orders", "shard-1", 0, None, None, 0.01)
    assert value(metrics, FETCH_AGE, stream="orders", shard="shard-1") == 0
    assert value(metrics, AGE, stream="orders", shard="shard-1") == 45
    assert value(metrics, PENDING, stream="orders", shard="shard-1") == 10


def test_iterator_age_at_a_checkpoint_is_its_last_record_and_zero_once_caught_up() -> None:
    now = [NOW]
    metrics = Metrics(clock=lambda: now[0])
    metrics.record_fetch("orders", "shard-1", 3, NOW - 20, None, 0.01, oldest_arrival=NOW - 30)
    metrics.record_fetch("orders", "shard-1", 2, NOW - 5, None, 0.01, oldest_arrival=NOW - 10)
    assert value(metrics, PENDING, stream="orders", shard="shard-1") == 5

    now[0] += 2
    metrics.record_checkpoint("orders", "shard-1")  # the first page is applied
    assert value(metrics, AGE, stream="orders", shard="shard-1") == 12  # the second waits
    assert value(metrics, PENDING, stream="orders", shard="shard-1") == 2

    now[0] += 1
    metrics.record_checkpoint("orders", "shard-1")
    now[0] += 30
    # The age of the batch's last record when its checkpoint was written, not growing.
    assert value(metrics, AGE, stream="orders", shard="shard-1") == 8
    assert value(metrics, PENDING, stream="orders", shard="shard-1") == 0

    metrics.record_fetch("orders", "shard-1", 0, None, None, 0.01)
    assert value(metrics, AGE, stream="orders", shard="shard-1") == 0


def test_fetch_counts_records_latency_and_millis_behind_latest_only_when_given(
    metrics: Metrics,
) -> None:
    metrics.record_fetch("ddb", "shard-a", 3, NOW - 1, None, 0.02)
    metrics.record_fetch("kin", "shard-b", 4, NOW - 1, 1500, 0.03)
    metrics.record_fetch("kin", "shard-b", 5, NOW - 1, 700, 0.03)

    assert (
        value(metrics, "stream_projector_records_fetched_total", stream="kin", shard="shard-b") == 9
    )
    assert value(metrics, BEHIND, stream="kin", shard="shard-b") == 700
    assert value(metrics, BEHIND, stream="ddb", shard="shard-a") is None
    assert value(metrics, GET_RECORDS_COUNT, stream="kin") == 2


def test_outcomes_and_dead_letters_count_per_projection_and_reason(metrics: Metrics) -> None:
    metrics.record_outcomes("search", Counts(applied=5, stale=2, filtered=1))
    metrics.record_outcomes("search", Counts(applied=1))
    metrics.record_dead_letter("search", "poison")

    def records(outcome: str) -> float | None:
        return value(
            metrics, "stream_projector_records_total", projection="search", outcome=outcome
        )

    assert (records("applied"), records("stale_skipped"), records("filtered")) == (6, 2, 1)
    assert records("dead_lettered") == 1
    assert value(metrics, "stream_projector_dead_letters_total", reason="poison") == 1


def test_retries_and_lease_events_exist_at_zero_before_the_first_one(metrics: Metrics) -> None:
    for kind in ("transient", "poison", "throttle", "expired_iterator", "lease"):
        assert value(metrics, "stream_projector_retries_total", kind=kind) == 0
    metrics.record_retry("throttle")
    metrics.lease_event("stolen")
    metrics.set_leases_held(3)

    assert value(metrics, "stream_projector_retries_total", kind="throttle") == 1
    assert value(metrics, "stream_projector_lease_events_total", kind="stolen") == 1
    assert value(metrics, "stream_projector_lease_events_total", kind="lost") == 0
    assert value(metrics, "stream_projector_leases_held") == 3


def test_batch_duration_is_one_histogram_per_stream_not_per_shard(metrics: Metrics) -> None:
    metrics.observe_batch("orders", "shard-1", 0.2)
    metrics.observe_batch("orders", "shard-2", 0.4)

    assert value(metrics, "stream_projector_batch_duration_seconds_count", stream="orders") == 2
    assert value(
        metrics, "stream_projector_batch_duration_seconds_sum", stream="orders"
    ) == pytest.approx(0.6)


def test_checkpoint_timestamp_is_the_time_of_the_last_checkpoint() -> None:
    now = [NOW]
    metrics = Metrics(clock=lambda: now[0])
    metrics.record_checkpoint("orders", "shard-1")
    now[0] += 30
    metrics.record_checkpoint("orders", "shard-1")

    name = "stream_projector_last_checkpoint_timestamp_seconds"
    assert value(metrics, name, stream="orders", shard="shard-1") == NOW + 30


def test_shards_gauge_counts_shards_per_state(metrics: Metrics) -> None:
    metrics.set_shard_state("orders", "shard-1", "running")
    metrics.set_shard_state("orders", "shard-2", "running")
    metrics.set_shard_state("orders", "shard-3", "waiting_parent")
    metrics.set_shard_state("orders", "shard-1", "stalled")

    def count(state: str) -> float | None:
        return value(metrics, "stream_projector_shards", state=state)

    assert [count(s) for s in ("running", "stalled", "waiting_parent", "finished")] == [1, 1, 1, 0]
    with pytest.raises(ValueError, match="unknown shard state"):
        metrics.set_shard_state("orders", "shard-1", "sleeping")


def test_forget_shard_drops_its_series_and_its_state_but_keeps_the_others(
    metrics: Metrics,
) -> None:
    for shard in ("shard-old", "shard-new"):
        metrics.record_fetch("orders", shard, 1, NOW - 5, 10, 0.01)
        metrics.record_throttle("orders", shard)
        metrics.record_trimmed("orders", shard)
        metrics.record_checkpoint("orders", shard)
        metrics.set_shard_state("orders", shard, "running")

    metrics.forget_shard("orders", "shard-old")
    metrics.forget_shard("orders", "never-seen")  # a no-op, not an error

    exposed = samples(metrics)
    assert not [key for key in exposed if ("shard", "shard-old") in key[1]]
    assert [key for key in exposed if ("shard", "shard-new") in key[1]]
    assert value(metrics, "stream_projector_shards", state="running") == 1
    assert list(metrics.shard_snapshot()) == [("orders", "shard-new")]


def test_shard_snapshot_reports_iterator_age_and_state(metrics: Metrics) -> None:
    metrics.record_fetch("orders", "shard-1", 1, NOW - 7, None, 0.01)
    metrics.set_shard_state("orders", "shard-1", "running")
    metrics.set_shard_state("orders", "shard-2", "waiting_parent")

    assert metrics.shard_snapshot() == {
        ("orders", "shard-1"): {"iterator_age_seconds": 7.0, "state": "running"},
        ("orders", "shard-2"): {"iterator_age_seconds": None, "state": "waiting_parent"},
    }


def test_concurrent_shard_threads_lose_no_counts(metrics: Metrics) -> None:
    def work(shard: str) -> None:
        for _ in range(500):
            metrics.record_fetch("orders", shard, 1, NOW - 1, None, 0.001)
            metrics.set_shard_state("orders", shard, "running")

    threads = [threading.Thread(target=work, args=(f"shard-{i}",), daemon=True) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert value(metrics, "stream_projector_shards", state="running") == 8
    assert value(metrics, GET_RECORDS_COUNT, stream="orders") == 4000


def test_two_instances_do_not_share_series() -> None:
    first, second = Metrics(), Metrics()
    first.set_leases_held(2)
    assert value(second, "stream_projector_leases_held") == 0


@pytest.fixture
def served_metrics() -> Iterator[tuple[Metrics, HealthServer]]:
    metrics = Metrics()
    server = HealthServer(metrics, Heartbeat(), "127.0.0.1", 0, 30.0, lambda: (True, "ok"))
    server.start()
    yield metrics, server
    server.stop()


def test_forgotten_shard_disappears_from_the_metrics_endpoint(
    served_metrics: tuple[Metrics, HealthServer],
) -> None:
    metrics, server = served_metrics
    metrics.record_fetch("orders", "shardId-000", 1, None, 5, 0.01)
    metrics.record_fetch("orders", "shardId-001", 1, None, 5, 0.01)
    metrics.record_checkpoint("orders", "shardId-000")
    url = f"http://127.0.0.1:{server.port}/metrics"
    assert "shardId-000" in requests.get(url, timeout=5).text

    metrics.forget_shard("orders", "shardId-000")

    text = requests.get(url, timeout=5).text
    assert "shardId-000" not in text
    assert 'shard="shardId-001"' in text


@pytest.mark.integration
def test_real_prometheus_sees_iterator_age_per_shard_and_zero_after_catch_up(
    served_metrics: tuple[Metrics, HealthServer],
    prometheus: Callable[[Sequence[str]], PrometheusServer],
) -> None:
    metrics, server = served_metrics
    shards = ("shardId-000", "shardId-001")
    for shard in shards:
        metrics.record_fetch("orders", shard, 5, time.time() - 120, None, 0.01)
    prom = prometheus([f"127.0.0.1:{server.port}"])

    def lag_per_shard() -> dict[str, float]:
        found = prom.query('stream_projector_iterator_age_seconds{stream="orders"}')
        return {s.labels["shard"]: s.value for s in found}

    wait_until(lambda: set(lag_per_shard()) == set(shards), timeout=30, what="both shards")
    assert all(age >= 100 for age in lag_per_shard().values())

    for shard in shards:
        metrics.record_checkpoint("orders", shard)
        metrics.record_fetch("orders", shard, 0, None, None, 0.01)
    wait_until(lambda: lag_per_shard() == dict.fromkeys(shards, 0.0), timeout=30, what="caught up")


def test_a_shard_starts_its_checkpoint_clock_when_reading_starts() -> None:
    now = [NOW]
    metrics = Metrics(clock=lambda: now[0])
    metrics.reading_started("orders", "shard-1")
    name = "stream_projector_last_checkpoint_timestamp_seconds"
    # A shard stuck before its first checkpoint is measured from when it was taken.
    assert value(metrics, name, stream="orders", shard="shard-1") == NOW
    assert value(metrics, "stream_projector_shards", state="running") == 1
