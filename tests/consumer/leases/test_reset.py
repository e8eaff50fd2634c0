"""`leases reset` and `leases list`: the plan, and resets against a real daemon on kinesis-local
(replay to TRIM_HORIZON, fencing a live worker with --force, AT_TIMESTAMP, SEQUENCE)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import Result
from structlog.testing import capture_logs

from consumer.config import Settings, load_settings
from consumer.errors import LeaseLostError, OperatorInputError
from consumer.leases.coordinator import LeaseCoordinator
from consumer.leases.lease import SENTINEL_SHARD_END, SENTINEL_TRIM_HORIZON, Lease
from consumer.leases.reset import ResetTarget, plan_reset
from consumer.leases.store import DynamoDBLeaseStore
from consumer.sources.shard import ShardInfo
from tests.fixtures.servers import wait_until
from tests.support.daemon import FAST_LEASES, FAST_POLLING, daemon_thread, invoke_cli
from tests.support.recording import create_recording_table, recorded
from tests.support.streams import kinesis_stream

NOW = 1_000_000.0


def owned(key: str, renewed_ago: float | None, checkpoint: str = "100") -> Lease:
    renewal = None if renewed_ago is None else NOW - renewed_ago
    return Lease(
        key, lease_owner="w1", lease_counter=5, checkpoint=checkpoint, last_renewal=renewal
    )


# -- the plan (pure) ---------------------------------------------------------------------------


def test_a_live_lease_is_refused_unless_forced_and_an_expired_one_is_reset() -> None:
    leases_ = [owned("live", 1.0), owned("dead", 60.0), owned("kcl", None), Lease("free")]
    target = ResetTarget.parse("TRIM_HORIZON", None)

    steps = {
        s.lease.lease_key: s for s in plan_reset(leases_, target, now=NOW, failover_seconds=10)
    }
    assert steps["live"].action == "refused" and "live worker w1" in steps["live"].reason
    assert "--force" in steps["live"].reason
    # A renewal time nobody stamped (a KCL worker) is never taken for a dead worker.
    assert steps["kcl"].action == "refused" and "renewal time unknown" in steps["kcl"].reason
    assert steps["dead"].action == "reset" and steps["free"].action == "unchanged"

    forced = plan_reset(leases_, target, now=NOW, failover_seconds=10, force=True)
    assert {s.lease.lease_key: s.action for s in forced}["live"] == "reset"


def test_latest_leaves_finished_shards_alone_and_shards_can_be_chosen() -> None:
    finished = Lease("a", checkpoint=SENTINEL_SHARD_END)
    steps = plan_reset(
        [finished, Lease("b", checkpoint="7")],
        ResetTarget.parse("LATEST", None),
        now=NOW,
        failover_seconds=10,
    )
    assert [(s.lease.lease_key, s.action) for s in steps] == [("a", "unchanged"), ("b", "reset")]
    only_b = plan_reset(
        [finished, Lease("b")],
        ResetTarget.parse("trim_horizon", None),
        shards=["b"],
        now=NOW,
        failover_seconds=10,
    )
    assert [s.lease.lease_key for s in only_b] == ["b"]


@pytest.mark.parametrize(
    ("kind", "value", "shards", "message"),
    [
        ("EARLIEST", None, (), "expected one of TRIM_HORIZON"),
        ("LATEST", "5", (), "takes no value"),
        ("AT_TIMESTAMP", None, (), "needs a value"),
        ("AT_TIMESTAMP", "yesterday", (), "ISO 8601"),
        ("SEQUENCE", "12ab", (), "all digits"),
        ("SEQUENCE", "12", (), "name it with --shard"),
        ("TRIM_HORIZON", None, ("nope",), "--shard nope: no lease"),
    ],
)
def test_bad_reset_input_is_refused_with_what_to_write(
    kind: str, value: str | None, shards: tuple[str, ...], message: str
) -> None:
    with pytest.raises(OperatorInputError, match=message):
        target = ResetTarget.parse(kind, value)
        plan_reset([Lease("a"), Lease("b")], target, shards=shards, now=NOW, failover_seconds=1)


def test_at_timestamp_accepts_iso_8601_and_epoch_seconds() -> None:
    iso = ResetTarget.parse("AT_TIMESTAMP", "2025-04-01T09:00:00Z")
    assert iso.timestamp == ResetTarget.parse("AT_TIMESTAMP", "1743498000").timestamp
    assert iso.describe() == "AT_TIMESTAMP 2025-04-01T09:00:00+00:00"


def test_the_start_up_log_says_when_initial_position_is_ignored(
    aws_client: Callable[..., Any], unique_name: Callable[[str], str]
) -> None:
    store = DynamoDBLeaseStore(aws_client("dynamodb"), unique_name("leases"))
    store.ensure_table()
    store.create_if_absent(Lease("shard-0", checkpoint="42"))
    coordinator = LeaseCoordinator(store, "w1")
    with capture_logs() as logs:
        coordinator.ensure_leases([ShardInfo("shard-0", ())], "LATEST")
        coordinator.ensure_leases([ShardInfo("shard-0", ())], "LATEST")
    notes = [entry for entry in logs if "initial_position" in entry["event"]]
    assert len(notes) == 1  # once per start, not at every shard sync
    assert "leases reset --to LATEST" in notes[0]["event"]
    assert notes[0]["log_level"] == "warning"


# -- against a running daemon ----------------------------------------------------------------


@dataclass
class Stream:
    """A one-shard Kinesis stream on kinesis-local, read into a recording table."""

    name: str
    table: str
    config: Path
    settings: Settings
    store: DynamoDBLeaseStore
    kinesis: Any
    dynamodb: Any
    sequences: list[str]

    def put(self, first: int, count: int) -> None:
        response = self.kinesis.put_records(
            StreamName=self.name,
            Records=[
                {"Data": orjson.dumps({"key": f"k{n}", "n": n}), "PartitionKey": f"k{n}"}
                for n in range(first, first + count)
            ],
        )
        self.sequences.extend(r["SequenceNumber"] for r in response["Records"])

    def shard(self) -> str:
        (lease,) = self.store.list_leases()
        return lease.lease_key

    def checkpoint_reached(self, sequence: str) -> bool:
        leases_ = self.store.list_leases()
        return len(leases_) == 1 and leases_[0].checkpoint == sequence

    def read_model(self) -> dict[tuple[str, str], str]:
        return {
            (i["record_key"], i["position"]): i["n"] for i in recorded(self.dynamodb, self.table)
        }

    def applied_at(self) -> dict[str, str]:
        return {i["record_key"]: i["applied_ns"] for i in recorded(self.dynamodb, self.table)}

    def run_to_end(self) -> None:
        with daemon_thread(self.settings):
            wait_until(lambda: self.checkpoint_reached(self.sequences[-1]), what="the last record")


@pytest.fixture
def stream(
    aws_client: Callable[..., Any],
    kinesis_local_endpoint: str,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    kinesis_env: None,
) -> Iterator[Stream]:
    kinesis, dynamodb = aws_client("kinesis", kinesis_local_endpoint), aws_client("dynamodb")
    name, table, app = unique_name("reset"), unique_name("recorded"), unique_name("app")
    kinesis_stream(kinesis, name)
    create_recording_table(dynamodb, table)
    config = tmp_path / "config.toml"
    config.write_text(
        f"""
application = "{app}"
[source]
kind = "kinesis"
stream_name = "{name}"
[leases]
failover_seconds = {FAST_LEASES["failover_seconds"]}
renew_interval_seconds = {FAST_LEASES["renew_interval_seconds"]}
[[projections]]
name = "recording"
class = "tests.support.recording:RecordingProjection"
settings = {{ table = "{table}" }}
"""
    )
    settings = load_settings(config, leases=FAST_LEASES, polling=FAST_POLLING)
    store = DynamoDBLeaseStore(dynamodb, settings.lease_table)
    yield Stream(name, table, config, settings, store, kinesis, dynamodb, [])


def reset(stream: Stream, *args: str) -> Result:
    return invoke_cli(["leases", "reset", "--config", str(stream.config), *args])


def test_reset_to_trim_horizon_replays_and_leaves_the_read_model_identical(stream: Stream) -> None:
    stream.put(0, 30)
    stream.run_to_end()
    before, first_applied = stream.read_model(), stream.applied_at()

    dry = reset(stream, "--to", "TRIM_HORIZON", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "would be reset" in dry.output and stream.checkpoint_reached(stream.sequences[-1])
    unconfirmed = reset(stream, "--to", "TRIM_HORIZON")  # no terminal, no --yes: nothing done
    assert unconfirmed.exit_code == 1 and "add --yes" in unconfirmed.output
    assert stream.checkpoint_reached(stream.sequences[-1])

    done = reset(stream, "--to", "TRIM_HORIZON", "--yes")
    assert done.exit_code == 0, done.output
    assert stream.checkpoint_reached(SENTINEL_TRIM_HORIZON)
    stream.run_to_end()

    assert stream.read_model() == before and len(before) == 30
    replayed = stream.applied_at()
    assert all(replayed[key] > first_applied[key] for key in first_applied)  # every one again


def test_reset_force_fences_a_running_worker_whose_next_checkpoint_is_refused(
    stream: Stream,
) -> None:
    stream.put(0, 20)
    # Renewals far apart, so the lease the worker holds is still the one the reset fences.
    slow_renewal = {**FAST_LEASES, "failover_seconds": 60, "renew_interval_seconds": 20}
    settings = load_settings(stream.config, leases=slow_renewal, polling=FAST_POLLING)
    with daemon_thread(settings) as daemon:
        wait_until(lambda: stream.checkpoint_reached(stream.sequences[-1]), what="checkpoint")
        shard = stream.shard()
        held = daemon.coordinator.held()[shard]

        refused = reset(stream, "--to", "TRIM_HORIZON", "--yes")
        assert refused.exit_code == 1
        assert "held by live worker" in refused.output and "nothing changed" in refused.output
        assert stream.store.get(shard) is not None
        assert stream.checkpoint_reached(stream.sequences[-1])

        forced = reset(stream, "--to", "TRIM_HORIZON", "--force", "--yes")
        assert forced.exit_code == 0, forced.output
        assert "fences live worker" in forced.output
        # What the old owner holds can no longer be written: its checkpoint is refused...
        with pytest.raises(LeaseLostError):
            stream.store.checkpoint(held, stream.sequences[-1], 0)
        # ...and the worker notices, takes the freed lease and replays from TRIM_HORIZON.
        wait_until(
            lambda: daemon.metrics.registry.get_sample_value(
                "stream_projector_lease_events_total", {"kind": "lost"}
            ),
            what="the worker lost its lease",
        )
        stream.put(20, 5)
        wait_until(lambda: stream.checkpoint_reached(stream.sequences[-1]), what="caught up")
    assert len(stream.read_model()) == 25


def test_reset_to_at_timestamp_replays_from_that_moment(stream: Stream) -> None:
    stream.put(0, 10)
    # A moment strictly between the two batches' arrival times (kept in milliseconds).
    start = time.time()
    wait_until(lambda: time.time() > start + 0.05, what="the first batch is in the past")
    moment = time.time()
    wait_until(lambda: time.time() > moment + 0.05, what="the moment is in the past")
    stream.put(10, 10)
    stream.run_to_end()
    first = stream.applied_at()

    done = reset(stream, "--to", "AT_TIMESTAMP", str(moment), "--yes")
    assert done.exit_code == 0, done.output
    lease = stream.store.get(stream.shard())
    assert lease is not None and lease.checkpoint_timestamp == pytest.approx(moment, abs=0.001)
    stream.run_to_end()

    again = stream.applied_at()
    replayed = sorted(int(key[1:]) for key in first if again[key] != first[key])
    assert replayed == list(range(10, 20))


def test_reset_to_a_sequence_resumes_after_it_and_an_unknown_one_is_refused(
    stream: Stream,
) -> None:
    stream.put(0, 10)
    stream.run_to_end()
    shard, first = stream.shard(), stream.applied_at()

    bad = reset(stream, "--to", "SEQUENCE", "123", "--shard", shard, "--yes")
    assert bad.exit_code == 1 and "has no readable record" in bad.output
    assert stream.checkpoint_reached(stream.sequences[-1])

    done = reset(stream, "--to", "SEQUENCE", stream.sequences[6], "--shard", shard, "--yes")
    assert done.exit_code == 0, done.output
    stream.run_to_end()
    again = stream.applied_at()
    assert sorted(int(k[1:]) for k in first if again[k] != first[k]) == [7, 8, 9]


def test_leases_list_shows_counter_renewal_and_an_expired_lease(stream: Stream) -> None:
    stream.put(0, 3)
    stream.run_to_end()
    shard = stream.shard()
    lease = stream.store.get(shard)
    assert lease is not None
    # A worker that took the lease, then died: its last renewal is a minute old.
    ghost = DynamoDBLeaseStore(
        stream.dynamodb, stream.store.table_name, wall_clock=lambda: time.time() - 60
    )
    ghost.take(lease, "dead-worker")

    listed = invoke_cli(["leases", "list", "--config", str(stream.config), "--json"])
    assert listed.exit_code == 0, listed.output
    (row,) = orjson.loads(listed.stdout)
    assert row["owner"] == "dead-worker" and row["state"] == "expired"
    assert row["counter"] == lease.lease_counter + 1 and row["renewal_age_seconds"] >= 59
    table = invoke_cli(["leases", "list", "--config", str(stream.config)])
    header, line = table.output.splitlines()[:2]
    assert header.split()[:4] == ["SHARD", "PARENTS", "OWNER", "COUNTER"]
    assert line.split()[-1] == "expired" and "s ago" in line

    # An expired lease needs no --force.
    done = reset(stream, "--to", "TRIM_HORIZON", "--yes")
    assert done.exit_code == 0, done.output


def test_leases_list_says_initial_position_latest_does_not_move_existing_leases(
    stream: Stream, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream.put(0, 3)
    stream.run_to_end()
    monkeypatch.setenv("STREAM_PROJECTOR_SOURCE__INITIAL_POSITION", "LATEST")
    listed = invoke_cli(["leases", "list", "--config", str(stream.config)])
    assert listed.exit_code == 0, listed.output
    assert "initial_position = LATEST applies only to shards without a lease" in listed.output
    assert "leases reset --to LATEST" in listed.output
