"""The command line, run as a real process: migrate, run's start-up errors, status, search."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest

from consumer.demo.trip_saga import SAGA, create_trip_table, write_saga
from tests.fixtures.servers import ROOT
from tests.support.daemon import FAST_LEASES, FAST_POLLING, daemon_thread, wait_caught_up
from tests.support.daemon import run_cli as cli


def config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return str(path)


TRIP_CONFIG = """
application = "{app}"
[source]
kind = "dynamodb"
table = "{source}"
[[projections]]
name = "trip_search"
class = "projections.scenarios.trip_search:TripSearchProjection"
[projections.settings]
table = "{search}"
"""


def test_migrate_twice_creates_dynamodb_and_postgres_tables_once(
    tmp_path: Path,
    aws_client: Callable[..., Any],
    moto_endpoint: str,
    unique_name: Callable[[str], str],
    pg_dsn: str,
) -> None:
    source, search = unique_name("Trips"), unique_name("Search")
    create_trip_table(aws_client("dynamodb"), source)
    path = config(
        tmp_path,
        TRIP_CONFIG.format(app=unique_name("app"), source=source, search=search)
        + '[[projections]]\nname = "shop"\nclass = "projections.scenarios.shop:ShopProjection"\n',
    )
    env = {"AWS_ENDPOINT_URL": moto_endpoint, "DATABASE_URL": pg_dsn}
    for _ in range(2):
        done = cli("migrate", "--config", path, env=env)
        assert done.returncode == 0, done.stderr
        assert "trip_search: migrated" in done.stdout and "shop: migrated" in done.stdout
    table = aws_client("dynamodb").describe_table(TableName=search)["Table"]
    assert [i["IndexName"] for i in table["GlobalSecondaryIndexes"]] == [
        "flight_status-departure_time-index"
    ]
    with psycopg.connect(pg_dsn) as conn:
        names = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables")}
    assert {"read_products", "read_carts", "read_orders", "read_inventory"} <= names


AUDIT = (
    '[[projections]]\nname = "x"\nclass = "projections.scenarios.audit_log:AuditLogProjection"\n'
)


@pytest.mark.parametrize(
    ("extra", "env", "named"),
    [
        ("[polling]\nmax_records = 0\n", {}, "polling.max_records"),
        ("", {"STREAM_PROJECTOR_HTTP__PORT": "http"}, "STREAM_PROJECTOR_HTTP__PORT"),
        ('[[projections]]\nname = "x"\nclass = "nowhere:Nothing"\n', {}, "projections[1].class"),
        (AUDIT + 'settings = { tabel = "a" }\n', {}, "projections[1].settings.tabel: unknown"),
        (
            AUDIT + 'settings = { pool_timeout = "soon" }\n',
            {},
            "projections[1].settings.pool_timeout: Input should be a valid number",
        ),
        (
            '[[projections]]\nname = "x"\nclass = "projections.filter:FilteredProjection"\n'
            'settings = { projection = "projections.scenarios.audit_log:AuditLogProjection",'
            ' settings = { table = "" } }\n',
            {},
            "projections[1].settings.settings.table: String should have at least 1 character",
        ),
    ],
)
def test_run_refuses_a_bad_setting_and_names_it(
    tmp_path: Path, extra: str, env: dict[str, str], named: str
) -> None:
    path = config(tmp_path, TRIP_CONFIG.format(app="a", source="T", search="S") + extra)
    done = cli("run", "--config", path, env=env)
    assert done.returncode != 0
    assert named in done.stderr
    assert "Traceback" not in done.stderr


def test_status_and_search_after_a_run(
    tmp_path: Path,
    aws_client: Callable[..., Any],
    moto_endpoint: str,
    unique_name: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from consumer.config import load_settings

    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    dynamodb = aws_client("dynamodb")
    app, source, search = unique_name("app"), unique_name("Trips"), unique_name("Search")
    create_trip_table(dynamodb, source)
    path = config(tmp_path, TRIP_CONFIG.format(app=app, source=source, search=search))
    env = {"AWS_ENDPOINT_URL": moto_endpoint}
    assert cli("migrate", "--config", path, env=env).returncode == 0
    write_saga(dynamodb, SAGA, source)
    settings = load_settings(Path(path), leases=FAST_LEASES, polling=FAST_POLLING)
    with daemon_thread(settings) as daemon:
        wait_caught_up(daemon)
        (shard_id,) = daemon.worker.running_shards()

    status = cli("status", "--config", path, "--json", env=env)
    assert status.returncode == 0, status.stderr
    (row,) = orjson.loads(status.stdout)
    assert row["shard_id"] == shard_id
    assert row["owner"] is None  # released at the graceful stop
    assert row["checkpoint"].isdigit()
    table = cli("status", "--config", path, env=env)
    assert shard_id in table.stdout and "CHECKPOINT" in table.stdout

    found = cli("search", "trips", "--config", path, "--status", "CANCELLED", env=env)
    assert found.returncode == 0, found.stderr
    body = orjson.loads(found.stdout)
    assert [t["trip_id"] for t in body["trips"]] == ["trip-streams-cancel-001"]
    ranged = cli(
        "search",
        "trips",
        "--config",
        path,
        "--status",
        "CONFIRMED",
        "--from",
        "2026-03-01T00:00:00",
        "--to",
        "2026-03-31T23:59:59",
        env=env,
    )
    assert [t["trip_id"] for t in orjson.loads(ranged.stdout)["trips"]] == ["trip-streams-001"]
    bad = cli("search", "trips", "--config", path, "--limit", "0", env=env)
    assert bad.returncode == 2


@pytest.mark.parametrize("name", ["trip-search.toml", "shop.toml"])
def test_the_example_configs_migrate_for_real(name: str, moto_endpoint: str, pg_dsn: str) -> None:
    path = str(ROOT / "deploy" / "config" / name)
    env = {"AWS_ENDPOINT_URL": moto_endpoint, "DATABASE_URL": pg_dsn}
    for _ in range(2):
        done = cli("migrate", "--config", path, env=env)
        assert done.returncode == 0, done.stderr
        assert done.stdout.count(": migrated") >= 1
