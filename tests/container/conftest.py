"""The engine, the images, moto and the daemon containers of tests/container.

A tool that scripts/install-test-deps.sh installs (dockerd, mmdebstrap) missing is treated like
every missing tool (tests/fixtures/tools.py): skipped, or failed under
STREAM_PROJECTOR_REQUIRE_TOOLS=1. Where no engine can be had (no root to start dockerd, the
engine does not start, no base image) the tests are skipped with the reason; CONTAINER_TESTS=
require fails them instead, for a machine known to have an engine, and CONTAINER_TESTS=off skips
them without trying.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.fixtures.aws import start_moto
from tests.fixtures.servers import free_port
from tests.fixtures.tools import missing
from tests.support.daemon import FAST_LEASES, FAST_POLLING
from tests.support.daemon_container import Daemon, StartDaemon, daemon_options, settings_env
from tests.support.docker import (
    Container,
    Engine,
    EngineUnavailableError,
    ToolMissingError,
    prepared_engine,
)

STEPS = pytest.StashKey[list[str]]()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """What scripts/container-test.sh did and how long each step took, after the results."""
    steps = config.stash.get(STEPS, [])
    if steps:
        terminalreporter.write_sep("-", "container images")
        for line in steps:
            terminalreporter.write_line(line)


# Package scope: the engine stops and the machine lock is released as soon as these tests are
# done, not at the end of the whole suite.
@pytest.fixture(scope="package")
def engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Engine]:
    """A Docker engine with the runtime and demo images built from this checkout."""
    mode = os.environ.get("CONTAINER_TESTS", "auto")
    if mode == "off":
        pytest.skip("container tests turned off (CONTAINER_TESTS=off)")
    try:
        with prepared_engine(tmp_path_factory.mktemp("container-test")) as (engine, steps):
            request.config.stash[STEPS] = steps
            yield engine
    except ToolMissingError as exc:
        missing(exc.what, exc.fix)
    except EngineUnavailableError as exc:
        if mode == "require":
            pytest.fail(f"container tests: {exc} (CONTAINER_TESTS=require)")
        pytest.skip(f"container tests: {exc}")


@pytest.fixture(scope="module")
def container_moto(server_logs: Path) -> Iterator[str]:
    """A moto server of its own: the tests empty it, so the config's fixed names are free."""
    server, url = start_moto(server_logs, "moto-containers")
    yield url
    server.stop()


@pytest.fixture
def moto(engine: Engine, container_moto: str) -> str:
    """The containers' moto server, emptied; containers reach it on the host's loopback."""
    requests.post(f"{container_moto}/moto-api/reset", timeout=10).raise_for_status()
    return container_moto


@pytest.fixture
def start_daemon(engine: Engine, moto: str) -> Iterator[StartDaemon]:
    """Start the runtime image's CMD (`run` on the mounted config), hardened; removed after.

    Leases and polling are the fast ones of the in-process tests (keyword arguments override
    lease settings). The HEALTHCHECK command is the image's, probed every second, not every 15 s.
    """
    started: list[Container] = []

    def start(worker: str, **leases: float) -> Daemon:
        port = free_port()
        env = {
            **settings_env("leases", {**FAST_LEASES, **leases}),
            **settings_env("polling", FAST_POLLING),
        }
        options = ["--health-interval=1s", *daemon_options(moto, worker, port, env)]
        name = f"stream-projector-test-{worker}-{uuid.uuid4().hex[:8]}"
        container = engine.start(name, engine.runtime_image, options, [])
        started.append(container)
        return Daemon(container, worker, port)

    yield start
    for container in started:
        engine.docker("rm", "--force", container.name, check=False)
