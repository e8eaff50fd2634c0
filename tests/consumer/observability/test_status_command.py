"""`stream-projector status` as a real process: before the lease table exists, and with
iterator ages read from a running daemon's /metrics (and from one that does not answer)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from consumer.config import load_settings
from tests.fixtures.servers import free_port
from tests.support.daemon import (
    FAST_LEASES,
    FAST_POLLING,
    daemon_thread,
    run_cli,
    wait_caught_up,
)
from tests.support.recording import create_recording_table
from tests.support.streams import kinesis_stream


def status(config: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_cli("status", "--config", str(config), *args, env=env)


def write_config(tmp_path: Path, app: str, stream: str, table: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        f"""
application = "{app}"
[source]
kind = "kinesis"
stream_name = "{stream}"
[[projections]]
name = "recording"
class = "tests.support.recording:RecordingProjection"
settings = {{ table = "{table}" }}
"""
    )
    return path


def test_status_before_the_lease_table_exists_is_one_line_naming_it(
    moto_endpoint: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    app = unique_name("app")
    done = status(write_config(tmp_path, app, "s", "t"), env={"AWS_ENDPOINT_URL": moto_endpoint})
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert f"lease table '{app}-leases' does not exist yet" in line
    assert "stream-projector run" in line


def test_status_reads_iterator_ages_from_every_running_daemons_metrics(
    aws_client: Callable[..., Any],
    moto_endpoint: str,
    kinesis_local_endpoint: str,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    kinesis_env: None,
) -> None:
    kinesis, dynamodb = aws_client("kinesis", kinesis_local_endpoint), aws_client("dynamodb")
    stream, table, app = unique_name("status"), unique_name("recorded"), unique_name("app")
    kinesis_stream(kinesis, stream, 2)
    create_recording_table(dynamodb, table)
    kinesis.put_records(
        StreamName=stream,
        Records=[{"Data": orjson.dumps({"n": n}), "PartitionKey": f"k{n}"} for n in range(20)],
    )
    config = write_config(tmp_path, app, stream, table)
    settings = load_settings(
        config, leases=FAST_LEASES, polling=FAST_POLLING, http={"host": "127.0.0.1", "port": 0}
    )
    env = {"AWS_ENDPOINT_URL": moto_endpoint}
    nobody = f"http://127.0.0.1:{free_port()}/metrics"
    with daemon_thread(settings, serve_http=True) as daemon:
        wait_caught_up(daemon)
        url = f"http://127.0.0.1:{daemon.health.port}/metrics"  # type: ignore[union-attr]
        done = status(config, "--json", "--metrics-url", url, "--metrics-url", nobody, env=env)
        table_output = status(config, "--metrics-url", url, env=env)
    assert done.returncode == 0, done.stderr
    rows = orjson.loads(done.stdout)
    assert len(rows) == 2
    assert all(row["state"] == "running" for row in rows)
    assert all(isinstance(row["iterator_age_seconds"], float) for row in rows)
    assert f"warning: {nobody}: not read" in done.stderr
    for line in table_output.stdout.splitlines()[1:]:
        assert line.split()[-1].endswith("s")  # an age, not "-"
