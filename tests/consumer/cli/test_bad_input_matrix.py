"""Every mistake a person can make on the command line, run as a real process against real
servers (moto's server, PostgreSQL): the right exit code within a time bound, one line that
names the setting or resource, no traceback, no plain text beside the JSON logs, no secret."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import orjson
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from consumer.cli.failures import DEBUG_ENV, EXIT_FAILURE, EXIT_USAGE
from consumer.demo.trip_saga import create_trip_table
from tests.fixtures.aws import REGION
from tests.fixtures.servers import ROOT, free_port

# What must never be printed: the AWS example secret key, and a PostgreSQL password.
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY"
PASSWORD = "Pa55-w0rd-never-shown"
# Generous: a bound against hanging or retrying for minutes, not a speed measurement.
TIME_BOUND_SECONDS = 20

TRIP = """
application = "{app}"
[source]
table = "{source}"
[http]
port = {http_port}
[[projections]]
name = "trip_search"
class = "projections.scenarios.trip_search:TripSearchProjection"
[projections.settings]
table = "{search}"
"""
SHOP = """
application = "{app}"
[source]
table = "{source}"
[http]
port = {http_port}
[postgres]
{dsn_line}
[[projections]]
name = "shop"
class = "projections.scenarios.shop:ShopProjection"
"""
KINESIS = """
[source]
kind = "kinesis"
{stream_line}
[[projections]]
name = "trip_search"
class = "projections.scenarios.trip_search:TripSearchProjection"
"""
MISSING_STREAM_ARN = (
    "arn:aws:dynamodb:us-east-1:123456789012:table/Gone/stream/2024-01-01T00:00:00.000"
)
UNSET = "<unset>"


@dataclass(frozen=True)
class Case:
    """One command line: its arguments, config text and environment, and what it must print.

    `{name}` placeholders in args, config, env and messages are filled from the test's world.
    """

    args: tuple[str, ...]
    config: str = TRIP
    env: dict[str, str] = field(default_factory=dict)
    exit_code: int = EXIT_FAILURE
    messages: tuple[str, ...] = ()


CASES: dict[str, Case] = {
    # -- AWS: where and as whom --------------------------------------------------------------
    "no_region": Case(
        ("run", "--config", "{config}"),
        env={"AWS_REGION": UNSET, "AWS_DEFAULT_REGION": UNSET},
        messages=("aws.region", "AWS_REGION"),
    ),
    "no_credentials": Case(
        ("run", "--config", "{config}"),
        env={
            "AWS_ACCESS_KEY_ID": UNSET,
            "AWS_SECRET_ACCESS_KEY": UNSET,
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
            "AWS_CONFIG_FILE": "/nonexistent",
            "AWS_EC2_METADATA_DISABLED": "true",
        },
        messages=("AWS credentials", "AWS_ACCESS_KEY_ID"),
    ),
    "nothing_listening_at_endpoint": Case(
        ("run", "--config", "{config}"),
        env={"AWS_ENDPOINT_URL": "http://127.0.0.1:{dead_port}"},
        messages=("http://127.0.0.1:{dead_port}", "aws.endpoint_url"),
    ),
    # -- the stream ----------------------------------------------------------------------------
    "source_table_missing": Case(
        ("run", "--config", "{config}"),
        config=TRIP.replace("{source}", "NoSuchTable"),
        messages=("source.table", "NoSuchTable", "does not exist"),
    ),
    "source_table_without_stream": Case(
        ("run", "--config", "{config}"),
        config=TRIP.replace("{source}", "{streamless}"),
        messages=("source.table", "{streamless}", "no stream"),
    ),
    "dynamodb_stream_arn_missing": Case(
        ("run", "--config", "{config}"),
        config=TRIP.replace('table = "{source}"', f'stream_arn = "{MISSING_STREAM_ARN}"'),
        messages=("source.stream_arn", "does not exist"),
    ),
    "kinesis_stream_name_missing": Case(
        ("run", "--config", "{config}"),
        config=KINESIS.replace("{stream_line}", 'stream_name = "no-such-stream"'),
        messages=("source.stream_name", "no-such-stream", "does not exist"),
    ),
    "dead_letter_queue_missing": Case(
        ("run", "--config", "{config}"),
        config=TRIP + '[dead_letter]\nqueue_url = "{moto}/123456789012/no-such-queue"\n',
        messages=("dead_letter.queue_url", "no-such-queue", "does not exist"),
    ),
    "dead_letter_bucket_missing": Case(
        ("run", "--config", "{config}"),
        config=TRIP + '[dead_letter]\nqueue_url = "{queue}"\nbucket = "no-such-bucket-{app}"\n',
        messages=("dead_letter.bucket", "no-such-bucket", "does not exist"),
    ),
    # -- the HTTP port and the command line ------------------------------------------------------
    "http_port_in_use": Case(
        ("run", "--config", "{config}"),
        config=TRIP.replace("{http_port}", "{busy_port}"),
        messages=("http.port", "{busy_port}", "in use"),
    ),
    "http_port_env_not_a_number": Case(
        ("run", "--config", "{config}"),
        env={"STREAM_PROJECTOR_HTTP__PORT": "http"},
        messages=("STREAM_PROJECTOR_HTTP__PORT",),
    ),
    "unknown_log_level": Case(
        ("run", "--config", "{config}", "--log-level", "LOUD"),
        exit_code=EXIT_USAGE,
        messages=("--log-level", "LOUD"),
    ),
    "config_option_missing": Case(("run",), exit_code=EXIT_USAGE, messages=("--config",)),
    "unknown_command": Case(("runn",), exit_code=EXIT_USAGE, messages=("runn",)),
    "config_file_missing": Case(
        ("run", "--config", "/nonexistent/config.toml"), messages=("--config", "no such file")
    ),
    "config_not_toml": Case(
        ("run", "--config", "{config}"), config="[source\n", messages=("not valid TOML",)
    ),
    "setting_out_of_range": Case(
        ("run", "--config", "{config}"),
        config=TRIP + "[polling]\nmax_records = 0\n",
        messages=("polling.max_records", "STREAM_PROJECTOR_POLLING__MAX_RECORDS"),
    ),
    "projection_class_missing": Case(
        ("run", "--config", "{config}"),
        config=TRIP + '[[projections]]\nname = "x"\nclass = "nowhere:Nothing"\n',
        messages=("projections[1].class", "nowhere"),
    ),
    # -- PostgreSQL ------------------------------------------------------------------------------
    "postgres_dsn_garbage": Case(
        ("run", "--config", "{config}"),
        config=SHOP.replace("{dsn_line}", 'dsn = "not a dsn password={password}"'),
        messages=("postgres.dsn", "not a valid connection string"),
    ),
    "postgres_dsn_typo_with_password": Case(
        ("run", "--config", "{config}"),
        config=SHOP.replace("{dsn_line}", 'dsn = "postgresql://user:{password}@[fd00::1/db"'),
        messages=("postgres.dsn", "not a valid connection string"),
    ),
    "postgres_dsn_bad_port": Case(
        ("run", "--config", "{config}"),
        config=SHOP.replace(
            "{dsn_line}", 'dsn = "host=127.0.0.1 port=abc user=x password={password}"'
        ),
        messages=("postgres.dsn", "port"),
    ),
    "postgres_setting_misspelled": Case(
        ("run", "--config", "{config}"),
        config=SHOP.replace("{dsn_line}", 'dns = "{dsn_down}"'),
        messages=("postgres.dns", "did you mean postgres.dsn"),
    ),
    "postgres_database_missing": Case(
        ("run", "--config", "{config}"),
        config=SHOP.replace("{dsn_line}", 'dsn = "{dsn_no_database}"'),
        messages=("postgres.dsn", "does not exist"),
    ),
    "migrate_with_postgres_down": Case(
        ("migrate", "--config", "{config}"),
        config=SHOP.replace("{dsn_line}", 'dsn = "{dsn_down}"'),
        messages=("postgres", "{dead_port}", "running"),
    ),
    # -- other commands --------------------------------------------------------------------------
    "search_table_missing": Case(
        ("search", "trips", "--config", "{config}"),
        config=TRIP.replace("{search}", "NoSearchTable"),
        messages=("NoSearchTable", "does not exist", "migrate"),
    ),
    "search_projection_unknown": Case(
        ("search", "trips", "--config", "{config}", "--projection", "nope"),
        messages=("--projection", "nope"),
    ),
    "search_limit_zero": Case(
        ("search", "trips", "--config", "{config}", "--limit", "0"),
        exit_code=EXIT_USAGE,
        messages=("--limit",),
    ),
    "dlq_without_queue": Case(
        ("dlq", "inspect", "--config", "{config}"), messages=("dead_letter.queue_url",)
    ),
}


@pytest.fixture(scope="module")
def world(moto_endpoint: str, postgres_dsn: str) -> Iterator[dict[str, str]]:
    """Names and ports every case may use; a socket holds `busy_port` for the whole module."""
    suffix = uuid.uuid4().hex[:8]
    dynamodb = boto3.client("dynamodb", region_name=REGION, endpoint_url=moto_endpoint)
    source, streamless = f"Trips-{suffix}", f"Streamless-{suffix}"
    create_trip_table(dynamodb, source)
    dynamodb.create_table(
        TableName=streamless,
        KeySchema=[{"AttributeName": "PK", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "PK", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    dead_port = free_port()
    admin = conninfo_to_dict(postgres_dsn)
    sqs = boto3.client("sqs", region_name=REGION, endpoint_url=moto_endpoint)
    queue = sqs.create_queue(QueueName=f"letters-{suffix}")["QueueUrl"]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        yield {
            "app": f"matrix-{suffix}",
            "source": source,
            "streamless": streamless,
            "search": f"Search-{suffix}",
            "http_port": str(free_port()),
            "busy_port": str(busy.getsockname()[1]),
            "dead_port": str(dead_port),
            "password": PASSWORD,
            "moto": moto_endpoint,
            "queue": queue,
            "dsn_down": f"postgresql://reader:{PASSWORD}@127.0.0.1:{dead_port}/shop",
            "dsn_no_database": make_conninfo(
                "", **{**admin, "dbname": f"missing_{suffix}", "password": PASSWORD}
            ),
        }


def fill(text: str, world: dict[str, str]) -> str:
    for name, value in world.items():
        text = text.replace("{" + name + "}", value)
    return text


def run_case(
    case: Case, world: dict[str, str], tmp_path: Path
) -> subprocess.CompletedProcess[bytes]:
    config = tmp_path / "config.toml"
    config.write_text(fill(case.config, world))
    values = {**world, "config": str(config)}
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": world["moto"],
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "PYTHONPATH": str(ROOT),
    }
    env.pop("DATABASE_URL", None)
    for name, value in case.env.items():
        if value == UNSET:
            env.pop(name, None)
        else:
            env[name] = fill(value, values)
    return subprocess.run(
        [sys.executable, "-m", "consumer", *(fill(arg, values) for arg in case.args)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        timeout=TIME_BOUND_SECONDS,
        check=False,
    )


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_clear_line(name: str, world: dict[str, str], tmp_path: Path) -> None:
    case = CASES[name]
    done = run_case(case, world, tmp_path)
    output = done.stdout + done.stderr
    stderr = done.stderr.decode(errors="replace")
    assert done.returncode == case.exit_code, stderr
    assert b"Traceback" not in output, stderr
    for secret in (SECRET_KEY, PASSWORD):
        assert secret.encode() not in output, f"{name} printed a secret: {stderr}"
    for message in case.messages:
        assert fill(message, world) in stderr, stderr
    if case.exit_code == EXIT_FAILURE:
        # Log lines are JSON (on stdout for `run`, stderr otherwise); the failure is the one
        # line that is not, and it comes last.
        *logs, last = stderr.strip().splitlines()
        assert last.startswith("error: "), stderr
        for line in [*logs, *done.stdout.decode().splitlines()]:
            assert isinstance(orjson.loads(line), dict), line


def test_debug_shows_the_traceback(world: dict[str, str], tmp_path: Path) -> None:
    case = CASES["source_table_missing"]
    debug = Case(("--debug", *case.args), config=case.config)
    done = run_case(debug, world, tmp_path)
    assert done.returncode == EXIT_FAILURE
    assert b"Traceback" in done.stderr and b"ConfigError" in done.stderr


def test_the_kcl_processor_fails_in_one_line_and_shows_the_traceback_when_asked() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("STREAM_PROJECTOR_CONFIG", None)
    env.pop(DEBUG_ENV, None)

    def kcl(**extra: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "consumer.runtimes.kcl"],
            env={**env, **extra},
            input=b"",
            capture_output=True,
            timeout=TIME_BOUND_SECONDS,
            check=False,
        )

    done = kcl()
    assert done.returncode == EXIT_FAILURE
    assert done.stderr.decode().splitlines() == [
        "stream-projector kcl: error: STREAM_PROJECTOR_CONFIG: set it to the path of the TOML "
        "configuration file"
    ]
    assert done.stdout == b""  # stdout is the MultiLang protocol's channel
    debug = kcl(**{DEBUG_ENV: "1"})
    assert debug.returncode == EXIT_FAILURE
    assert b"Traceback" in debug.stderr and b"ConfigError" in debug.stderr
