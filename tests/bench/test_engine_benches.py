"""The engine benchmarks' daemon runner still works, at a tiny size (no timing)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from bench.daemon_run import REGION, run_daemon_child, write_backlog
from consumer.aws import make_client

pytestmark = pytest.mark.integration


def test_the_runner_applies_every_record_with_adaptive_pages_and_lanes(
    kinesis_local_endpoint: str,
    moto_endpoint: str,
    tmp_path: Path,
    unique_name: Callable[[str], str],
) -> None:
    stream = unique_name("bench-engine")
    write_backlog(make_client("kinesis", REGION, kinesis_local_endpoint), stream, 700, keys=20)
    options = {
        "stream": stream,
        "records": 700,
        "latency_ms": 0.1,
        "polling": {"min_records": 100, "max_records": 400, "parallelization_factor": 3},
    }
    env = {"AWS_ENDPOINT_URL": moto_endpoint, "AWS_ENDPOINT_URL_KINESIS": kinesis_local_endpoint}
    run = run_daemon_child(options, env, tmp_path)
    assert run.records == 700
    assert run.largest_limit == 400  # 100, 200, 400: the pages grew while behind
    assert run.batches > 3  # lanes apply their parts of a batch separately
    assert run.max_rss_mb > 0 and run.cpu_us_per_record > 0
