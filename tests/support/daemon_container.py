"""The daemon as a container: the shipped config mounted, hardened as the manifests run it."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests

from consumer.demo.trip_saga import SAGA
from tests.fixtures.aws import CREDENTIALS
from tests.fixtures.servers import ROOT
from tests.support.docker import Container, Engine

# The example config compose mounts, at the path the image's CMD reads.
CONFIG = ROOT / "deploy" / "config" / "trip-search.toml"
CONFIG_IN_IMAGE = "/etc/stream-projector/config.toml"
SETTINGS: dict[str, Any] = tomllib.loads(CONFIG.read_text())
SHUTDOWN_DEADLINE = int(SETTINGS["shutdown"]["deadline_seconds"])
LEASE_TABLE = f"{SETTINGS['application']}-leases"
SEARCH_TABLE: str = SETTINGS["projections"][0]["settings"]["table"]
# Read-only root filesystem, every capability dropped, no privilege escalation (the Kubernetes
# manifest's securityContext); host networking, since an engine started by
# scripts/container-test.sh has no bridge, so moto and /metrics are on the host's loopback.
HARDENED = ["--network=host", "--read-only", "--cap-drop=ALL", "--security-opt=no-new-privileges"]


def aws_env(moto: str) -> dict[str, str]:
    """What a container needs to reach moto: fake credentials and the endpoint."""
    return {**CREDENTIALS, "AWS_ENDPOINT_URL": moto}


def settings_env(section: str, values: dict[str, Any]) -> dict[str, str]:
    """STREAM_PROJECTOR_<SECTION>__<KEY> overrides of the mounted TOML."""
    return {f"STREAM_PROJECTOR_{section.upper()}__{k.upper()}": str(v) for k, v in values.items()}


def env_options(env: dict[str, str]) -> list[str]:
    """`--env KEY=VALUE` for each entry."""
    return [option for key, value in env.items() for option in ("--env", f"{key}={value}")]


def daemon_options(moto: str, worker: str, port: int, env: dict[str, str]) -> list[str]:
    """`docker run` options for `stream-projector run` on the mounted config."""
    settings = {"STREAM_PROJECTOR_WORKER_ID": worker, "STREAM_PROJECTOR_HTTP__PORT": str(port)}
    return [
        *HARDENED,
        f"--volume={CONFIG}:{CONFIG_IN_IMAGE}:ro",
        *env_options({**aws_env(moto), **settings, **env}),
    ]


@dataclass(frozen=True)
class Daemon:
    """A daemon container: its worker id in the lease table and its HTTP port on the host."""

    container: Container
    worker: str
    port: int

    def metrics(self) -> str:
        """The text of /metrics."""
        response = requests.get(f"http://127.0.0.1:{self.port}/metrics", timeout=5)
        response.raise_for_status()
        return response.text


StartDaemon = Callable[..., Daemon]


def seed(engine: Engine, moto: str) -> None:
    """The demo image as compose's seeder: TripTable, TripSearchTable and the saga's writes."""
    done = engine.docker(
        "run",
        "--rm",
        "--network=host",
        *env_options(aws_env(moto)),
        engine.demo_image,
        *("demo", "--seed-only", "--endpoint-url", moto),
        timeout=180,
    )
    assert f"seeded TripTable with {len(SAGA)} saga writes" in done.stdout


def leases(dynamodb: Any) -> list[dict[str, str]]:
    """The lease table's items, attribute name to value."""
    items = dynamodb.scan(TableName=LEASE_TABLE, ConsistentRead=True)["Items"]
    return [{k: str(next(iter(v.values()))) for k, v in item.items()} for item in items]
