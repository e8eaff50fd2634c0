"""The docker command line for tests: an engine with the images built for them, and containers.

`scripts/container-test.sh prepare` finds or starts a Docker engine and builds the runtime and
demo images; `cleanup` removes the test containers left and stops an engine it started. A
machine-wide lock keeps two runs from sharing an engine that one of them then stops.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.fixtures.servers import ROOT, ServerDiedError, wait_until

SCRIPT = ROOT / "scripts" / "container-test.sh"
LOCK = Path(tempfile.gettempdir()) / "stream-projector-container-test.lock"
SKIPPED = 77  # the script's exit status when no engine can be had here
MISSING = 78  # ... when a tool scripts/install-test-deps.sh installs is missing


class EngineUnavailableError(RuntimeError):
    """No Docker engine can be had on this machine; the message names the step that failed."""


class ToolMissingError(RuntimeError):
    """A tool the install script provides is missing: `what` and the `fix`."""

    def __init__(self, what: str, fix: str) -> None:
        super().__init__(f"{what} is not installed: {fix}")
        self.what = what
        self.fix = fix


class ContainerExitedError(ServerDiedError):
    """A container stopped while a test waited for it to become healthy."""


@dataclass(frozen=True)
class Engine:
    """A reachable Docker engine, the client that talks to it and the images built for tests."""

    client: str
    docker_host: str
    runtime_image: str
    demo_image: str
    base_image: str
    label: str

    @classmethod
    def from_env_file(cls, path: Path) -> Engine:
        """Read the KEY=VALUE lines `scripts/container-test.sh prepare` wrote."""
        values = dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
        return cls(
            client=values["DOCKER"],
            docker_host=values.get("DOCKER_HOST", ""),
            runtime_image=values["RUNTIME_IMAGE"],
            demo_image=values["DEMO_IMAGE"],
            base_image=values["BASE_IMAGE"],
            label=values["LABEL"],
        )

    def docker(
        self, *args: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run one docker command; with `check`, a failure raises with its output."""
        env = {**os.environ, **({"DOCKER_HOST": self.docker_host} if self.docker_host else {})}
        done = subprocess.run(
            [self.client, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"docker {' '.join(args)} exited {done.returncode}:\n{done.stdout}{done.stderr}"
            )
        return done

    def start(self, name: str, image: str, options: list[str], command: list[str]) -> Container:
        """`docker run --detach` with the test label, so cleanup finds what a test left."""
        self.docker(
            "run", "--detach", "--name", name, "--label", self.label, *options, image, *command
        )
        return Container(self, name)


@dataclass(frozen=True)
class Container:
    """One container a test started, by name."""

    engine: Engine
    name: str

    def inspect(self, template: str) -> str:
        """`docker inspect --format` of this container."""
        return self.engine.docker("inspect", "--format", template, self.name).stdout.strip()

    def logs(self) -> str:
        """Everything the container wrote to stdout and stderr."""
        done = self.engine.docker("logs", self.name, check=False)
        return done.stdout + done.stderr

    def exec(self, *argv: str) -> str:
        """Run a command inside the running container; its stdout."""
        return self.engine.docker("exec", self.name, *argv).stdout

    def exit_code(self) -> int:
        """The exit status of a stopped container (137 after SIGKILL)."""
        return int(self.inspect("{{.State.ExitCode}}"))

    def wait_healthy(self, timeout: float = 90) -> None:
        """Poll Docker's HEALTHCHECK status until healthy; fail at once if the container exits."""

        def healthy() -> bool:
            status, health = self.inspect("{{.State.Status}} {{.State.Health.Status}}").split()
            if status != "running":
                raise ContainerExitedError(f"{self.name} is {status}:\n{self.logs()[-3000:]}")
            return health == "healthy"

        try:
            wait_until(healthy, timeout=timeout, interval=0.5, what=f"{self.name} healthy")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{self.logs()[-3000:]}") from None

    def stop(self, grace_seconds: int) -> None:
        """`docker stop`: SIGTERM to PID 1, SIGKILL after `grace_seconds`."""
        self.engine.docker(
            "stop", "--time", str(grace_seconds), self.name, timeout=grace_seconds + 60
        )

    def kill(self) -> None:
        """`docker kill`: SIGKILL, no chance to release anything."""
        self.engine.docker("kill", self.name)


@contextmanager
def machine_lock(timeout: float = 1800) -> Iterator[None]:
    """Hold the container tests' lock on this machine, waiting for another run to finish."""
    # Read-only is enough for flock, and works whoever created the file.
    fd = os.open(LOCK, os.O_RDONLY | os.O_CREAT, 0o644)
    try:

        def locked() -> bool:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError: retry
            return True

        wait_until(locked, timeout=timeout, interval=1, what=f"the lock {LOCK}")
        yield
    finally:
        os.close(fd)


def _script(step: str, state: Path) -> subprocess.CompletedProcess[str]:
    # PYTHON: the wheelhouse is downloaded with this interpreter's pip.
    return subprocess.run(
        [str(SCRIPT), step, str(state)],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )


@contextmanager
def prepared_engine(state: Path) -> Iterator[tuple[Engine, list[str]]]:
    """The engine with fresh images, and the script's step lines (what it did, how long).

    Raises EngineUnavailableError where no engine can be had, ToolMissingError where a tool
    the install script provides is missing; a failed build is an AssertionError with its log.
    On exit, test containers are removed and an engine the script started is stopped.
    """
    with machine_lock():
        try:
            done = _script("prepare", state)
            if done.returncode == SKIPPED:
                raise EngineUnavailableError((state / "skip").read_text().strip())
            if done.returncode == MISSING:
                raise ToolMissingError(*(state / "missing").read_text().splitlines()[:2])
            assert done.returncode == 0, f"container-test.sh prepare failed:\n{done.stderr[-6000:]}"
            steps = [ln for ln in done.stderr.splitlines() if ln.startswith("container-test: ")]
            yield Engine.from_env_file(state / "env"), steps
        finally:
            _script("cleanup", state)
