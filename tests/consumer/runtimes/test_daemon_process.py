"""The real daemon process. What is only unreachable is waited out, visibly: it keeps running,
/readyz answers 503 naming what it waits for, a JSON log line repeats it, no secret is printed,
and once the resource is there the records are applied (docs/errors.md). And it has one
worker id, the same in its logs, the lease table and `status`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest
import requests
from structlog.testing import capture_logs

from consumer.config import load_settings
from consumer.demo.trip_saga import SAGA, create_trip_table, write_saga
from projections.scenarios.trip_search import create_table as create_search_table
from tests.fixtures.aws import REGION
from tests.fixtures.postgres import PostgresServer, PostgresUnavailableError, find_bin_dir
from tests.fixtures.servers import ROOT, free_port, wait_until
from tests.support.daemon import FAST_LEASES, FAST_POLLING, daemon_thread

PASSWORD = "Pa55-w0rd-never-shown"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY"
FAST = """
[leases]
failover_seconds = 3
renew_interval_seconds = 0.5
take_interval_seconds = 0.5
shard_sync_interval_seconds = 1
[polling]
idle_backoff_seconds = 0.1
min_interval_seconds = 0.02
[retry]
base_seconds = 0.05
cap_seconds = 0.5
[http]
host = "127.0.0.1"
port = {port}
readiness_log_interval_seconds = 0.5
"""


class DaemonProcess:
    """`python -m consumer run` with its stdout and stderr kept apart, and its HTTP port."""

    def __init__(self, config: Path, port: int, env: dict[str, str], tmp_path: Path) -> None:
        self.config = config
        self.port = port
        self.stdout_path, self.stderr_path = tmp_path / "stdout", tmp_path / "stderr"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "consumer", "run", "--config", str(config)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), **env},
            stdout=self.stdout_path.open("wb"),
            stderr=self.stderr_path.open("wb"),
        )

    def readyz(self) -> requests.Response:
        return requests.get(f"http://127.0.0.1:{self.port}/readyz", timeout=10)

    def log_lines(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.stdout_path.read_bytes().splitlines()]

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)

    def output(self) -> bytes:
        return self.stdout_path.read_bytes() + self.stderr_path.read_bytes()


@pytest.fixture
def daemon_process(tmp_path: Path, moto_endpoint: str) -> Iterator[Any]:
    started: list[DaemonProcess] = []

    def start(config_text: str, env: dict[str, str] | None = None) -> DaemonProcess:
        port = free_port()
        config = tmp_path / "config.toml"
        config.write_text(config_text + FAST.format(port=port))
        environment = {"AWS_ENDPOINT_URL": moto_endpoint, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
        daemon = DaemonProcess(config, port, {**environment, **(env or {})}, tmp_path)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        if daemon.process.poll() is None:
            daemon.process.kill()
            daemon.process.wait()


def logged(daemon: DaemonProcess, event: str, naming: str = "") -> bool:
    """A JSON log line with this event whose reason names `naming`."""
    return any(
        line["event"] == event and naming in line.get("reason", "") for line in daemon.log_lines()
    )


def assert_clean(daemon: DaemonProcess) -> None:
    """Exit 0 after SIGTERM, JSON only on stdout, nothing on stderr, no secret anywhere."""
    assert daemon.stop() == 0, daemon.stderr_path.read_text()
    assert daemon.stderr_path.read_bytes() == b""
    daemon.log_lines()  # every line parses as JSON
    for secret in (PASSWORD, SECRET_KEY):
        assert secret.encode() not in daemon.output()


def test_missing_read_model_table_is_a_readiness_failure_that_names_it(
    daemon_process: Any, moto_endpoint: str
) -> None:
    dynamodb = boto3.client("dynamodb", region_name=REGION, endpoint_url=moto_endpoint)
    suffix = uuid.uuid4().hex[:8]
    source, search = f"Trips-{suffix}", f"Search-{suffix}"
    create_trip_table(dynamodb, source)
    write_saga(dynamodb, SAGA, source)
    daemon = daemon_process(
        f'application = "outage-{suffix}"\n[source]\ntable = "{source}"\n'
        '[[projections]]\nname = "trip_search"\n'
        'class = "projections.scenarios.trip_search:TripSearchProjection"\n'
        f'[projections.settings]\ntable = "{search}"\n'
    )

    def names_the_table() -> bool:
        response = daemon.readyz()
        return response.status_code == 503 and f"table {search} does not exist" in response.text

    wait_until(names_the_table, timeout=30, what="/readyz naming the missing table")
    assert "stream-projector migrate" in daemon.readyz().text
    wait_until(lambda: logged(daemon, "not ready", search), what="a log line naming the table")
    create_search_table(dynamodb, search)
    wait_until(lambda: daemon.readyz().status_code == 200, timeout=30, what="ready once created")
    wait_until(
        lambda: dynamodb.get_item(
            TableName=search, Key={"trip_id": {"S": "trip-streams-cancel-001"}}
        ).get("Item"),
        timeout=30,
        what="the waiting records applied",
    )
    wait_until(lambda: logged(daemon, "ready again"), what="a log line once ready")
    assert_clean(daemon)


def test_postgres_down_at_start_up_is_waited_out_without_printing_the_password(
    daemon_process: Any, moto_endpoint: str
) -> None:
    dynamodb = boto3.client("dynamodb", region_name=REGION, endpoint_url=moto_endpoint)
    suffix = uuid.uuid4().hex[:8]
    source = f"Trips-{suffix}"
    create_trip_table(dynamodb, source)
    try:
        find_bin_dir()
    except PostgresUnavailableError:
        pytest.skip("needs the PostgreSQL server binaries to start a server later")
    # Not under pytest's tmp dir, which the postgres user cannot traverse.
    base = Path(tempfile.mkdtemp(prefix="stream-projector-pg-"))
    base.chmod(0o755)
    server = PostgresServer(base)
    dsn = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{server.port}/postgres"
    daemon = daemon_process(
        f'application = "pg-down-{suffix}"\n[source]\ntable = "{source}"\n'
        f'[postgres]\ndsn = "{dsn}"\n'
        '[[projections]]\nname = "audit"\n'
        'class = "projections.scenarios.audit_log:AuditLogProjection"\n'
    )

    def names_postgres() -> bool:
        response = daemon.readyz()
        return response.status_code == 503 and "postgres" in response.text

    wait_until(names_postgres, timeout=30, what="/readyz naming postgres")
    assert PASSWORD not in daemon.readyz().text
    wait_until(lambda: logged(daemon, "not ready", "postgres"), what="a line naming postgres")
    server.init()
    server.start()
    try:
        wait_until(lambda: daemon.readyz().status_code == 200, timeout=60, what="ready")
        assert daemon.process.poll() is None
        assert_clean(daemon)
    finally:
        server.destroy()
    # psycopg_pool's own complaints went through the JSON logs, redacted.
    assert any(line.get("logger", "").startswith("psycopg") for line in daemon.log_lines())


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_stream_gone_while_running_is_logged_once_and_shown_in_readyz(
    moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    kinesis = boto3.client("kinesis", region_name=REGION, endpoint_url=moto_endpoint)
    name = f"gone-{uuid.uuid4().hex[:8]}"
    kinesis.create_stream(StreamName=name, ShardCount=1)
    wait_until(
        lambda: (
            kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"][
                "StreamStatus"
            ]
            == "ACTIVE"
        ),
        what="stream active",
    )
    settings = load_settings(
        None,
        application=f"gone-{name}",
        source={"kind": "kinesis", "stream_name": name},
        projections=[
            {
                "name": "t",
                "class": "tests.support.recording:RecordingProjection",
                "settings": {"table": "never-written"},
            }
        ],
        leases=FAST_LEASES,
        polling=FAST_POLLING,
    )
    with daemon_thread(settings) as daemon:
        wait_until(lambda: daemon.readiness()[0], timeout=30, what="ready")
        with capture_logs() as logs:
            kinesis.delete_stream(StreamName=name)
            wait_until(
                lambda: "ResourceNotFound" in daemon.readiness()[1],
                timeout=30,
                what="/readyz naming the missing stream",
            )
            wait_until(lambda: daemon.worker.steps_failed >= 10, timeout=30, what="10 failed steps")
        failures = [entry for entry in logs if entry["event"] == "worker step failed"]
        assert len(failures) == 1, failures


def test_one_worker_id_in_the_logs_the_lease_table_and_status(
    daemon_process: Any, moto_endpoint: str, tmp_path: Path
) -> None:
    dynamodb = boto3.client("dynamodb", region_name=REGION, endpoint_url=moto_endpoint)
    suffix = uuid.uuid4().hex[:8]
    source, app = f"Trips-{suffix}", f"ids-{suffix}"
    create_trip_table(dynamodb, source)
    config = (
        f'application = "{app}"\n[source]\ntable = "{source}"\n'
        '[[projections]]\nname = "t"\nclass = "tests.support.recording:RecordingProjection"\n'
        '[projections.settings]\ntable = "never-written"\n'
    )
    daemon = daemon_process(config)
    leases = f"{app}-leases"

    def owners() -> set[str]:
        items = dynamodb.scan(TableName=leases).get("Items", [])
        return {item["leaseOwner"]["S"] for item in items if "leaseOwner" in item}

    (owner,) = wait_until(owners, timeout=30, what="a lease taken")  # type: ignore[misc]
    logged_ids = {line["worker_id"] for line in daemon.log_lines()}
    status = subprocess.run(
        [sys.executable, "-m", "consumer", "status", "--json", "--config", str(daemon.config)],
        cwd=ROOT,
        env={**os.environ, "AWS_ENDPOINT_URL": moto_endpoint},
        capture_output=True,
        timeout=60,
        check=True,
    )
    assert logged_ids == {owner}
    assert {row["owner"] for row in orjson.loads(status.stdout)} == {owner}
    assert_clean(daemon)
