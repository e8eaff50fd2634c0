"""The runtime and demo images, built and run by a real engine.

Each test starts from an empty moto server. The demo image's `demo --seed-only` creates TripTable
and TripSearchTable and writes the trip saga (as compose's seeder does); daemon containers then
run the runtime image's CMD on the shipped deploy/config/trip-search.toml, hardened as the
Kubernetes manifest runs them.
"""

from __future__ import annotations

import json
import re
from typing import Any

import boto3
import pytest
from prometheus_client.parser import text_string_to_metric_families

from consumer.demo.trip_saga import SAGA, TRIP_TABLE, Step, write_saga
from tests.fixtures.aws import REGION
from tests.fixtures.servers import wait_until
from tests.support.daemon_container import (
    CONFIG,
    CONFIG_IN_IMAGE,
    HARDENED,
    SEARCH_TABLE,
    SHUTDOWN_DEADLINE,
    Daemon,
    StartDaemon,
    aws_env,
    env_options,
    leases,
    seed,
)
from tests.support.docker import Engine
from tests.support.trip_search import EXPECTED, documents

pytestmark = [pytest.mark.container, pytest.mark.timeout(1800)]

SIGKILLED = 128 + 9


@pytest.fixture
def dynamodb(moto: str) -> Any:
    """A boto3 DynamoDB client on the containers' moto server."""
    return boto3.client("dynamodb", region_name=REGION, endpoint_url=moto)


def migrate(engine: Engine, moto: str) -> str:
    """The runtime image's `migrate` on the mounted config, read-only; its output."""
    done = engine.docker(
        "run",
        "--rm",
        *HARDENED,
        f"--volume={CONFIG}:{CONFIG_IN_IMAGE}:ro",
        *env_options(aws_env(moto)),
        engine.runtime_image,
        *("migrate", "--config", CONFIG_IN_IMAGE),
        timeout=180,
    )
    return done.stdout


def lease_owner(dynamodb: Any) -> str | None:
    """The owner of the stream's single shard; None while nobody holds it."""
    (lease,) = leases(dynamodb)
    return lease.get("leaseOwner")


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def records_handled(daemon: Daemon) -> float:
    """Records the daemon's trip_search projection handled, whatever the outcome."""
    return metric(daemon.metrics(), "stream_projector_records_total", projection="trip_search")


def another_trip(trip_id: str) -> tuple[list[Step], dict[str, Any]]:
    """The confirmed trip's writes under a new id, and the document they end in."""
    first = "trip-streams-001"
    steps = [(trip_id, component, attrs) for trip, component, attrs in SAGA if trip == first]
    return steps, {**EXPECTED[first], "trip_id": trip_id}


def wait_documents(dynamodb: Any, expected: dict[str, Any], *daemons: Daemon) -> None:
    """Poll TripSearchTable until it holds exactly `expected`; show the daemons' logs if not."""
    try:
        wait_until(
            lambda: documents(dynamodb, SEARCH_TABLE) == expected,
            timeout=90,
            interval=0.5,
            what="TripSearchTable to hold the expected documents",
        )
    except TimeoutError:
        logs = "\n".join(f"--- {d.worker}\n{d.container.logs()[-3000:]}" for d in daemons)
        assert documents(dynamodb, SEARCH_TABLE) == expected, logs


def test_daemon_runs_read_only_without_capabilities_healthy_and_projects_the_saga(
    engine: Engine, moto: str, start_daemon: StartDaemon, dynamodb: Any
) -> None:
    seed(engine, moto)
    assert "trip_search: migrated" in migrate(engine, moto)
    daemon = start_daemon("alone")
    daemon.container.wait_healthy()

    wait_documents(dynamodb, EXPECTED, daemon)
    (lease,) = leases(dynamodb)
    assert lease["leaseOwner"] == "alone"
    wait_until(lambda: records_handled(daemon) == len(SAGA), timeout=30, what="every record")
    text = daemon.metrics()
    labels = {"projection": "trip_search", "outcome": "applied"}
    assert metric(text, "stream_projector_records_total", **labels) == len(SAGA)
    assert metric(text, "stream_projector_leases_held") == 1

    # Inside: PID 1 is the daemon itself (exec form), as UID 10001 with no capability left.
    status = daemon.container.exec("cat", "/proc/1/status")
    assert re.search(r"^Uid:\s+10001\s+10001\s+10001", status, re.M), status
    assert re.search(r"^CapEff:\s+0+$", status, re.M), status
    assert re.search(r"^NoNewPrivs:\s+1$", status, re.M), status
    argv = daemon.container.exec("cat", "/proc/1/cmdline").split("\0")
    assert argv[1].endswith("/stream-projector") and argv[2:4] == ["run", "--config"], argv
    touched = engine.docker("exec", daemon.container.name, "touch", "/tmp/x", check=False)
    assert touched.returncode != 0 and "Read-only file system" in touched.stderr


def test_docker_stop_exits_0_releases_the_lease_and_the_next_container_resumes(
    engine: Engine, moto: str, start_daemon: StartDaemon, dynamodb: Any
) -> None:
    seed(engine, moto)
    first = start_daemon("first")
    first.container.wait_healthy()
    wait_documents(dynamodb, EXPECTED, first)

    # Docker sends SIGKILL when the grace period ends: exit status 0 means the daemon finished
    # on its own within the shutdown deadline.
    first.container.stop(SHUTDOWN_DEADLINE)
    assert first.container.exit_code() == 0, first.container.logs()[-3000:]
    (lease,) = leases(dynamodb)
    assert "leaseOwner" not in lease, lease
    assert lease["checkpoint"].isdigit(), lease
    stopped_at = int(lease["checkpoint"])

    steps, document = another_trip("trip-streams-002")
    write_saga(dynamodb, steps, TRIP_TABLE)
    # A failover time of an hour: the next container can only take a lease nobody holds.
    second = start_daemon("second", failover_seconds=3600, renew_interval_seconds=3)
    wait_documents(dynamodb, {**EXPECTED, document["trip_id"]: document}, second)
    wait_until(
        lambda: int(leases(dynamodb)[0]["checkpoint"]) > stopped_at,
        timeout=30,
        what="the second container's checkpoint",
    )
    assert lease_owner(dynamodb) == "second"
    # It resumed at the checkpoint: only the writes made after the stop went through it.
    wait_until(lambda: records_handled(second) >= len(steps), timeout=30, what="the new writes")
    assert records_handled(second) == len(steps)

    second.container.stop(SHUTDOWN_DEADLINE)
    assert second.container.exit_code() == 0


def test_docker_kill_of_the_owner_hands_its_shard_to_the_other_after_failover(
    engine: Engine, moto: str, start_daemon: StartDaemon, dynamodb: Any
) -> None:
    seed(engine, moto)
    daemons = {d.worker: d for d in (start_daemon("one"), start_daemon("two"))}
    for daemon in daemons.values():
        daemon.container.wait_healthy()
    wait_documents(dynamodb, EXPECTED, *daemons.values())
    owner = daemons[str(wait_until(lambda: lease_owner(dynamodb), what="a lease owner"))]
    (other,) = (d for d in daemons.values() if d is not owner)

    owner.container.kill()
    assert owner.container.exit_code() == SIGKILLED
    assert lease_owner(dynamodb) == owner.worker  # a killed process releases nothing

    steps, document = another_trip("trip-streams-003")
    write_saga(dynamodb, steps, TRIP_TABLE)
    wait_until(
        lambda: lease_owner(dynamodb) == other.worker,
        timeout=60,
        what=f"{other.worker} to take the shard after failover",
    )
    wait_documents(dynamodb, {**EXPECTED, document["trip_id"]: document}, other)
    other.container.stop(SHUTDOWN_DEADLINE)
    assert other.container.exit_code() == 0


def demo_documents(output: str) -> dict[str, Any]:
    """The TripSearchTable documents `stream-projector demo` prints, without `updated_at`."""
    decoder = json.JSONDecoder()
    found = {}
    for header in re.finditer(r"^TripSearchTable\[(.+)\]$\n", output, re.M):
        document, _ = decoder.raw_decode(output, header.end())
        document.pop("updated_at")
        found[header.group(1)] = document
    return found


def test_demo_image_runs_the_demo_end_to_end(engine: Engine) -> None:
    done = engine.docker(
        "run", "--rm", "--network=host", "--label", engine.label, engine.demo_image, timeout=300
    )
    assert demo_documents(done.stdout) == EXPECTED, done.stdout
