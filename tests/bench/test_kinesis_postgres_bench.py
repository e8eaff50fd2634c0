"""The Kinesis -> PostgreSQL benchmark's daemon side still runs on both Kinesis servers, at a
tiny size (no timing)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import boto3
import psycopg
import pytest
from psycopg.types.json import Jsonb

from bench.kinesis_postgres_bench import (
    REGION,
    TABLE,
    Endpoints,
    baseline_command,
    check_final_state,
    create_stream,
    create_table,
    daemon_command,
    main,
    make_events,
    measure,
    put_events,
)

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("server", ["kinesis-local", "replay"])
def test_the_daemon_side_applies_every_record(
    server: str,
    request: pytest.FixtureRequest,
    moto_endpoint: str,
    pg_dsn: str,
    tmp_path: Path,
    unique_name: Callable[[str], str],
) -> None:
    kinesis = request.getfixturevalue(
        "replay_url" if server == "replay" else "kinesis_local_endpoint"
    )
    stream = unique_name("bench-smoke")
    endpoints = Endpoints(
        kinesis, moto_endpoint, pg_dsn, replay_url=kinesis if server == "replay" else None
    )
    client = boto3.client("kinesis", region_name=REGION, endpoint_url=kinesis)
    create_stream(client, stream, 2)
    events = make_events(200, 50)
    put_events(client, stream, events)
    command = daemon_command(endpoints, stream, tmp_path)
    # measure() returns only once sum(version) over the table equals the 200 records (each
    # key's stored version counts its events applied), then checks every key's row against its
    # last event (version, price, body); it raises if the daemon dies or a row is wrong.
    measured = measure(
        "daemon", command, endpoints, 200, tmp_path / "sides.log", timeout=120, events=events
    )
    assert measured.records <= 200 and measured.seconds_from_spawn > 0
    assert measured.records_served >= 200  # counted by the replay server, or the stream's
    with psycopg.connect(pg_dsn) as conn:
        stored = conn.execute(f"SELECT count(*), max(version) FROM {TABLE}").fetchone()
    assert stored == (50, 4)  # 50 keys, each at its 4th and last version


def test_a_wrong_row_fails_the_final_state_check(pg_dsn: str) -> None:
    events = make_events(6, 3)
    create_table(pg_dsn)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        for event in events[3:]:
            conn.execute(
                f"INSERT INTO {TABLE} (id, version, price, body) VALUES (%s, %s, %s, %s)",
                (event["id"], event["version"], event["price"], Jsonb(event)),
            )
        check_final_state(conn, events)  # every key at its last event: passes
        conn.execute(f"UPDATE {TABLE} SET price = price + 1 WHERE id = %s", (events[4]["id"],))
        with pytest.raises(RuntimeError, match="1 of 3 keys wrong"):
            check_final_state(conn, events)


def test_the_baseline_side_runs_the_other_checkouts_daemon(tmp_path: Path) -> None:
    # A stand-in checkout whose `python -m consumer` only says where it came from.
    package = tmp_path / "consumer"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text(
        "import sys\nprint('baseline consumer', __file__, sys.argv[1:])\n"
    )
    argv = baseline_command(tmp_path, ["python", "-m", "consumer", "run", "--config", "x.toml"])
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.startswith(f"baseline consumer {package / '__main__.py'}")
    assert "['run', '--config', 'x.toml']" in done.stdout


def test_a_baseline_root_that_is_no_checkout_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--baseline-root", str(tmp_path)])
    assert exit_.value.code == 2
    assert "is not a stream-projector checkout" in capsys.readouterr().err
