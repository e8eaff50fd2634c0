"""The container image on a real engine: image sizes, start to healthy, `docker stop` time.

Prepares the engine and the images as tests/container does (scripts/container-test.sh: dockerd
started when no engine answers, the Debian base when the registry's python image cannot be
pulled) and prints what each step did and took. Then, `--runs` times on an emptied moto server:
the demo image seeds the trip saga, and a daemon container starts from the runtime image as
shipped (the image's own HEALTHCHECK: every 15 s, start period 30 s), hardened, on
deploy/config/trip-search.toml. Measured from just before `docker run`: the first 200 from
/healthz (the daemon is up), and Docker's health status turning `healthy`. Once the saga is
projected, `docker stop --time <shutdown deadline>`: wall time, exit status, lease released.

Run: `python -m bench container [--runs N] [--json]`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import boto3
import requests

from tests.fixtures.aws import CREDENTIALS, REGION, start_moto
from tests.fixtures.servers import free_port, wait_until
from tests.support.daemon_container import (
    SEARCH_TABLE,
    SHUTDOWN_DEADLINE,
    daemon_options,
    leases,
    seed,
)
from tests.support.docker import Engine, prepared_engine
from tests.support.trip_search import EXPECTED, documents


@dataclass
class Run:
    """One container's life: seconds from `docker run` and how it stopped."""

    to_healthz: float
    to_healthy: float
    stop_seconds: float
    exit_code: int
    lease_released: bool


def megabytes(engine: Engine, image: str) -> float:
    """The image's size as `docker image inspect` counts it (all layers, uncompressed)."""
    size = engine.docker("image", "inspect", "--format", "{{.Size}}", image).stdout
    return round(int(size) / 1e6, 1)


def one_run(engine: Engine, moto: str, dynamodb: Any) -> Run:
    """Seed, start a daemon container, time it to healthy, project the saga, time the stop."""
    requests.post(f"{moto}/moto-api/reset", timeout=10).raise_for_status()
    seed(engine, moto)
    port = free_port()
    name = f"stream-projector-bench-{uuid.uuid4().hex[:8]}"
    options = daemon_options(moto, "bench", port, {})
    started = time.monotonic()
    container = engine.start(name, engine.runtime_image, options, [])
    try:
        wait_until(
            lambda: requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok,
            timeout=120,
            interval=0.05,
            what="/healthz",
        )
        to_healthz = time.monotonic() - started
        wait_until(
            lambda: container.inspect("{{.State.Health.Status}}") == "healthy",
            timeout=120,
            interval=0.2,
            what="healthy",
        )
        to_healthy = time.monotonic() - started
        wait_until(
            lambda: documents(dynamodb, SEARCH_TABLE) == EXPECTED, timeout=120, what="the saga"
        )
        stopping = time.monotonic()
        container.stop(SHUTDOWN_DEADLINE)
        stop_seconds = time.monotonic() - stopping
        (lease,) = leases(dynamodb)
        return Run(
            to_healthz=round(to_healthz, 2),
            to_healthy=round(to_healthy, 2),
            stop_seconds=round(stop_seconds, 2),
            exit_code=container.exit_code(),
            lease_released="leaseOwner" not in lease,
        )
    finally:
        engine.docker("rm", "--force", name, check=False)


def spread(values: Sequence[float]) -> str:
    """median (min-max) in seconds."""
    return f"{statistics.median(values):.2f} s ({min(values):.2f}-{max(values):.2f})"


def main(argv: Sequence[str]) -> int:
    """Prepare the images, measure `--runs` containers, print a summary (or JSON)."""
    parser = argparse.ArgumentParser(prog="python -m bench container")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    with (
        tempfile.TemporaryDirectory() as tmp,
        prepared_engine(Path(tmp) / "state") as (engine, steps),
    ):
        images = {
            "base": megabytes(engine, engine.base_image),
            "runtime": megabytes(engine, engine.runtime_image),
            "demo": megabytes(engine, engine.demo_image),
        }
        server, moto = start_moto(Path(tmp))
        try:
            dynamodb = boto3.client(
                "dynamodb",
                region_name=REGION,
                endpoint_url=moto,
                aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            )
            runs = [one_run(engine, moto, dynamodb) for _ in range(args.runs)]
        finally:
            server.stop()
    if args.json:
        print(json.dumps({"steps": steps, "images_mb": images, "runs": [asdict(r) for r in runs]}))
        return 0
    print("\n".join(steps))
    print(
        f"image size: runtime {images['runtime']} MB, demo {images['demo']} MB"
        f" (base {images['base']} MB)"
    )
    print(f"start to /healthz 200: {spread([r.to_healthz for r in runs])}")
    print(f"start to healthy (image HEALTHCHECK): {spread([r.to_healthy for r in runs])}")
    print(f"docker stop --time {SHUTDOWN_DEADLINE}: {spread([r.stop_seconds for r in runs])}")
    released = all(r.lease_released for r in runs)
    print(f"exit codes: {[r.exit_code for r in runs]}, lease released: {released}")
    return 0
