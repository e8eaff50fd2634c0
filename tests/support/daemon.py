"""Run the daemon in a thread (in-process tests) or as a real process (multi-worker tests)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from consumer.config import Settings
from consumer.runtimes.daemon import Daemon, build_daemon, run_daemon
from tests.fixtures.servers import ROOT, wait_until

FAST_LEASES = {
    "failover_seconds": 3,
    "renew_interval_seconds": 0.5,
    "take_interval_seconds": 0.5,
    "shard_sync_interval_seconds": 1,
}
FAST_POLLING = {"idle_backoff_seconds": 0.1, "min_interval_seconds": 0.02}


@contextmanager
def daemon_thread(settings: Settings, serve_http: bool = False, **build: Any) -> Iterator[Daemon]:
    """A daemon running on a thread; stopped gracefully (and checked) when the block ends."""
    daemon = build_daemon(settings, **build)
    stop = threading.Event()
    result: list[int] = []
    thread = threading.Thread(
        target=lambda: result.append(run_daemon(daemon, stop, serve_http=serve_http)),
        daemon=True,
    )
    thread.start()
    try:
        yield daemon
    finally:
        stop.set()
        thread.join(60)
        assert not thread.is_alive(), "daemon did not stop within 60 s"
        assert result == [0]


def wait_caught_up(daemon: Daemon, timeout: float = 60.0) -> None:
    """Poll until the worker has read every shard to its tip, twice in a row."""
    streak = [0]

    def twice() -> bool:
        streak[0] = streak[0] + 1 if daemon.worker.caught_up() else 0
        return streak[0] >= 2

    wait_until(twice, timeout=timeout, interval=0.1, what="daemon caught up")


def write_config(path: Path, text: str) -> Path:
    """Write a TOML config file and return its path."""
    path.write_text(text)
    return path


def start_worker_process(config: Path, env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """`python -m consumer run --config ...` as its own process, output to `log_path`."""
    return subprocess.Popen(
        [sys.executable, "-m", "consumer", "run", "--config", str(config)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
    )


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m consumer ARGS...` as a real process, its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "consumer", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def invoke_cli(args: list[str], input: str | None = None) -> Any:
    """`stream-projector ARGS` in-process (click's CliRunner), through the real error path.

    `main` configures structlog with cached loggers; that is put back afterwards, or every
    logger used later in this process would keep the command's configuration and tests that
    capture logs would see nothing.
    """
    import structlog
    from click.testing import CliRunner

    from consumer.cli.main import main

    try:
        return CliRunner().invoke(main, args, input=input)
    finally:
        structlog.reset_defaults()
