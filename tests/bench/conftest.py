"""Servers of the benchmarks' own: bench/kinesis_replay.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench import kinesis_replay
from bench.processes import stop


@pytest.fixture(scope="session")
def replay_url() -> Iterator[str]:
    """bench/kinesis_replay.py in its own process, as the benchmarks start it."""
    process, url = kinesis_replay.start()
    yield url
    stop(process)
