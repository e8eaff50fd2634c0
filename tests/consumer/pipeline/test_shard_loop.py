"""The shard loop against moto's DynamoDB Streams: fencing, bounded prefetch, and the metrics
that follow a shard: lag where records are applied, and no series left once it is gone."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest
from prometheus_client import generate_latest

from consumer.config import Settings, load_settings
from consumer.errors import LeaseLostError, TransientError
from consumer.leases.lease import Lease
from consumer.leases.store import DynamoDBLeaseStore
from consumer.record import ChangeRecord
from consumer.sources.dynamodb_streams import DynamoDBStreamsSource
from projections.projection import BaseProjection
from projections.results import Results
from tests.fixtures.servers import wait_until
from tests.support.collecting import CollectingProjection
from tests.support.daemon import FAST_LEASES, FAST_POLLING, daemon_thread, wait_caught_up


def create_source_table(dynamodb: Any, table: str) -> None:
    dynamodb.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
    )


def write_items(dynamodb: Any, table: str, numbers: range) -> None:
    for n in numbers:
        dynamodb.put_item(TableName=table, Item={"id": {"S": f"i{n}"}, "n": {"N": str(n)}})


def settings_for(
    table: str, app: str, leases: dict[str, Any] | None = None, **polling: Any
) -> Settings:
    return load_settings(
        None,
        application=app,
        source={"kind": "dynamodb", "table": table},
        leases={**FAST_LEASES, **(leases or {})},
        polling={**FAST_POLLING, **polling},
    )


@pytest.fixture
def source_table(
    aws_client: Callable[..., Any],
    unique_name: Callable[[str], str],
    moto_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
) -> str:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    table = unique_name("source")
    create_source_table(aws_client("dynamodb"), table)
    return table


def steal(store: DynamoDBLeaseStore, shard_id: str, thief: str) -> Lease:
    """Take the lease as another worker would, from a fresh read each try: the owner renews it
    meanwhile, and a take from an older read would fail on the counter."""
    stolen: list[Lease] = []

    def take() -> bool:
        lease = store.get(shard_id)
        assert lease is not None
        try:
            stolen.append(store.take(lease, thief))
        except LeaseLostError:
            return False
        return True

    wait_until(take, timeout=30, what=f"{thief} takes {shard_id}")
    return stolen[0]


def test_a_worker_whose_lease_was_taken_stops_the_shard_and_never_checkpoints_again(
    aws_client: Callable[..., Any], unique_name: Callable[[str], str], source_table: str
) -> None:
    dynamodb = aws_client("dynamodb")
    settings = settings_for(source_table, unique_name("app"))
    store = DynamoDBLeaseStore(dynamodb, settings.lease_table)
    projection = CollectingProjection()
    with daemon_thread(settings, projections=[projection]) as daemon:
        write_items(dynamodb, source_table, range(0, 5))
        wait_caught_up(daemon)
        (shard_id,) = daemon.worker.running_shards()
        lease = store.get(shard_id)
        assert lease is not None and lease.lease_owner == daemon.coordinator.worker_id
        before = lease.checkpoint

        # Another worker takes the lease while a batch is in flight.
        projection.gate.clear()
        projection.entered.clear()
        write_items(dynamodb, source_table, range(5, 10))
        wait_until(projection.entered.is_set, timeout=30, what="batch in flight")
        stolen = steal(store, shard_id, "thief")
        projection.gate.set()

        wait_until(lambda: shard_id not in daemon.worker.running_shards(), timeout=30, what="stop")
        assert shard_id not in daemon.coordinator.held()
        after = store.get(shard_id)
        assert after is not None
        assert after.lease_owner == "thief"
        assert after.checkpoint == before == stolen.checkpoint
        assert after.lease_counter == stolen.lease_counter
        lost = daemon.metrics.registry.get_sample_value(
            "stream_projector_lease_events_total", {"kind": "lost"}
        )
        assert lost == 1

        # The shard is another worker's now: none of its series is left in /metrics.
        def exposed() -> str:
            return generate_latest(daemon.metrics.registry).decode()

        wait_until(lambda: f'shard="{shard_id}"' not in exposed(), timeout=10, what="forgotten")
        assert "stream_projector_leases_held 0.0" in exposed()


def test_an_idle_shard_whose_lease_was_taken_stops_polling(
    aws_client: Callable[..., Any], unique_name: Callable[[str], str], source_table: str
) -> None:
    """An idle shard never checkpoints, so only the lease renewal can tell it the lease is gone:
    the worker must stop its consumer then (consumer.lease_lost()), or it polls forever."""
    dynamodb = aws_client("dynamodb")
    # Failover far beyond the test, so the daemon cannot take the lease back meanwhile.
    settings = settings_for(source_table, unique_name("app"), leases={"failover_seconds": 300})
    store = DynamoDBLeaseStore(dynamodb, settings.lease_table)
    with daemon_thread(settings, projections=[CollectingProjection()]) as daemon:
        write_items(dynamodb, source_table, range(0, 3))
        wait_caught_up(daemon)
        (shard_id,) = daemon.worker.running_shards()

        stolen = steal(store, shard_id, "thief")

        wait_until(lambda: shard_id not in daemon.worker.running_shards(), timeout=30, what="stop")
        after = store.get(shard_id)
        assert after is not None
        assert (after.lease_owner, after.lease_counter) == ("thief", stolen.lease_counter)
        lost = daemon.metrics.registry.get_sample_value(
            "stream_projector_lease_events_total", {"kind": "lost"}
        )
        assert lost == 1


@pytest.mark.parametrize(
    "bound",
    [{"prefetch_batches": 2}, {"prefetch_batches": 10, "prefetch_records": 20}],
    ids=["in batches", "in records"],
)
def test_prefetch_is_bounded_while_a_batch_is_stuck(
    aws_client: Callable[..., Any],
    unique_name: Callable[[str], str],
    source_table: str,
    bound: dict[str, int],
) -> None:
    dynamodb = aws_client("dynamodb")
    write_items(dynamodb, source_table, range(0, 200))
    settings = settings_for(source_table, unique_name("app"), max_records=10, **bound)
    projection = CollectingProjection()
    projection.gate.clear()
    with daemon_thread(settings, projections=[projection]) as daemon:
        registry = daemon.metrics.registry

        def fetched() -> float:
            samples = [
                s.value
                for metric in registry.collect()
                if metric.name == "stream_projector_records_fetched"
                for s in metric.samples
                if s.name.endswith("_total")
            ]
            return sum(samples)

        # One batch of 10 in the projection and 20 records queued; no page is fetched before
        # there is room for it, so none waits outside the bound.
        wait_until(lambda: fetched() == 30, timeout=30, what="prefetch to fill")
        with pytest.raises(TimeoutError):
            wait_until(lambda: fetched() > 30, timeout=1.0, what="prefetch beyond its bound")
        projection.gate.set()
        wait_caught_up(daemon)
    assert projection.applied == list(range(200))


def sample(daemon: Any, name: str, **labels: str) -> float | None:
    value = daemon.metrics.registry.get_sample_value(name, labels or None)
    return None if value is None else float(value)


def test_iterator_age_is_measured_where_records_are_applied(
    aws_client: Callable[..., Any], unique_name: Callable[[str], str], source_table: str
) -> None:
    """The case fetch-time age missed: records fetched at once, then waiting behind a slow
    batch, read 0 at fetch time while nothing was applied."""
    dynamodb = aws_client("dynamodb")
    settings = settings_for(source_table, unique_name("app"))
    projection = CollectingProjection()
    with daemon_thread(settings, projections=[projection]) as daemon:
        write_items(dynamodb, source_table, range(0, 3))
        wait_caught_up(daemon)
        (shard_id,) = daemon.worker.running_shards()
        labels = {"stream": daemon.worker.stream, "shard": shard_id}
        projection.gate.clear()
        projection.entered.clear()
        write_items(dynamodb, source_table, range(3, 6))
        wait_until(projection.entered.is_set, timeout=30, what="batch in flight")

        def waiting_and_visible() -> bool:
            fetch_age = sample(
                daemon, "stream_projector_get_records_iterator_age_seconds", **labels
            )
            age = sample(daemon, "stream_projector_iterator_age_seconds", **labels) or 0.0
            pending = sample(daemon, "stream_projector_records_pending", **labels)
            # GetRecords is caught up (0) while the records wait: the age keeps growing.
            return fetch_age == 0.0 and pending == 3 and age >= 1.5

        wait_until(waiting_and_visible, timeout=30, what="age growing while records wait")
        projection.gate.set()
        wait_until(
            lambda: (
                sample(daemon, "stream_projector_records_pending", **labels) == 0
                and sample(daemon, "stream_projector_iterator_age_seconds", **labels) == 0.0
            ),
            timeout=30,
            what="applied and caught up",
        )
    assert projection.applied == list(range(6))


def test_a_lease_lost_while_waiting_for_its_parent_leaves_no_series(
    aws_client: Callable[..., Any], unique_name: Callable[[str], str], source_table: str
) -> None:
    dynamodb = aws_client("dynamodb")
    # Failover far beyond the test: neither lease is taken over meanwhile.
    settings = settings_for(source_table, unique_name("app"), leases={"failover_seconds": 300})
    store = DynamoDBLeaseStore(dynamodb, settings.lease_table)
    store.ensure_table()
    (shard,) = DynamoDBStreamsSource(
        aws_client("dynamodbstreams"), dynamodb, table_name=source_table
    ).list_shards()
    # The shard's parent is another worker's and unfinished, so the shard must wait for it.
    store.create_if_absent(Lease("ghost-parent", lease_owner="other", lease_counter=1))
    store.create_if_absent(Lease(shard.shard_id, parent_shard_ids=frozenset({"ghost-parent"})))
    with daemon_thread(settings, projections=[CollectingProjection()]) as daemon:
        wait_until(
            lambda: sample(daemon, "stream_projector_shards", state="waiting_parent") == 1,
            timeout=30,
            what="the shard waiting for its parent",
        )
        steal(store, shard.shard_id, "thief")
        wait_until(
            lambda: sample(daemon, "stream_projector_lease_events_total", kind="lost") == 1,
            timeout=30,
            what="the lease lost",
        )
        wait_until(
            lambda: sample(daemon, "stream_projector_shards", state="waiting_parent") == 0,
            timeout=10,
            what="the waiting shard forgotten",
        )
        assert daemon.metrics.shard_snapshot() == {}


class DownSink(BaseProjection):
    """A projection whose sink is down for as long as the test wants: the shard stalls."""

    def apply(self, records: Sequence[ChangeRecord]) -> Results:
        raise TransientError("sink down")


def test_a_stalled_shard_that_loses_its_lease_leaves_no_series(
    aws_client: Callable[..., Any], unique_name: Callable[[str], str], source_table: str
) -> None:
    dynamodb = aws_client("dynamodb")
    settings = settings_for(source_table, unique_name("app"), leases={"failover_seconds": 300})
    store = DynamoDBLeaseStore(dynamodb, settings.lease_table)
    with daemon_thread(settings, projections=[DownSink("down")]) as daemon:
        write_items(dynamodb, source_table, range(0, 3))
        wait_until(
            lambda: sample(daemon, "stream_projector_shards", state="stalled") == 1,
            timeout=30,
            what="the shard stalled",
        )
        (shard_id,) = daemon.worker.running_shards()
        assert "sink down" in daemon.readiness()[1]
        steal(store, shard_id, "thief")

        def gone() -> bool:
            text = generate_latest(daemon.metrics.registry).decode()
            return f'shard="{shard_id}"' not in text

        wait_until(gone, timeout=30, what="every series of the shard removed")
        assert sample(daemon, "stream_projector_shards", state="stalled") == 0
        assert "stalled" not in daemon.readiness()[1]
