"""dynalite, a DynamoDB API server on Node.js, for a read model that moto's CPU does not limit.

moto spends 7-9 ms of CPU on every UpdateItem (its dispatcher, expression parser and
validator, all in one Python process); dynalite answers the same guarded UpdateItem in about
1 ms, in memory (memory-level). It implements DynamoDB's tables, indexes, condition and
update expressions, but not Streams, TTL or throttling, so benchmarks keep the stream on moto
and put only read-model tables here.

Benchmark-only: installed from the npm registry into .bench-tools/dynalite on first use (not
by `make test-deps`, so CI installs nothing for it), like async-kinesis's virtualenv.
"""

from __future__ import annotations

import fcntl
import shutil
import subprocess
from pathlib import Path

from tests.fixtures.servers import ROOT, free_port, port_open, wait_until

VERSION = "4.0.0"
HOME = ROOT / ".bench-tools" / "dynalite"
INSTALL_SECONDS = 300


class DynaliteUnavailable(RuntimeError):
    """dynalite cannot be installed or started here; the message names the fix."""


def ensure_installed() -> Path:
    """dynalite's cli.js, installed with npm into .bench-tools/dynalite on first use."""
    stamp, cli = HOME / ".installed", HOME / "node_modules" / "dynalite" / "cli.js"
    if stamp.exists() and stamp.read_text() == VERSION and cli.exists():
        return cli
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise DynaliteUnavailable(
            "dynalite needs Node.js 20+ and npm: install them (Debian: apt-get install nodejs npm)"
        )
    HOME.mkdir(parents=True, exist_ok=True)
    # Two benchmark or test processes may install at once; npm into one prefix is not safe.
    with (HOME / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists() and stamp.read_text() == VERSION and cli.exists():
            return cli
        command = [npm, "install", "--prefix", str(HOME), "--no-audit", "--no-fund"]
        try:
            done = subprocess.run(
                [*command, "--loglevel=error", f"dynalite@{VERSION}"],
                capture_output=True,
                text=True,
                timeout=INSTALL_SECONDS,
            )
        except subprocess.TimeoutExpired:
            done = None
        if done is None or done.returncode != 0 or not cli.exists():
            why = "timed out" if done is None else (done.stderr.strip().splitlines() or ["?"])[-1]
            raise DynaliteUnavailable(
                f"npm could not install dynalite@{VERSION} into {HOME} ({why}): check that the "
                "npm registry is reachable, or run without --read-model-server dynalite"
            )
        stamp.write_text(VERSION)
    return cli


def start() -> tuple[subprocess.Popen[bytes], str]:
    """dynalite in memory on a free port, in its own process; the process and its URL."""
    cli = ensure_installed()
    port = free_port()
    # Tables are ACTIVE at once (the default keeps them CREATING for 500 ms).
    process = subprocess.Popen(
        ["node", str(cli), "--host", "127.0.0.1", "--port", str(port),
         "--createTableMs", "0", "--deleteTableMs", "0", "--updateTableMs", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip

    def ready() -> bool:
        if process.poll() is not None:
            raise DynaliteUnavailable(
                f"dynalite exited with {process.returncode} at start: run `node {cli} --port "
                f"{port}` to see why (Node.js 20+ is needed)"
            )
        return port_open(port)

    try:
        wait_until(ready, timeout=30, what=f"dynalite on port {port}")
    except BaseException:
        process.kill()
        process.wait()
        raise
    return process, f"http://127.0.0.1:{port}"
