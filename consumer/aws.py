"""The AWS boundary: boto3 clients configured for a daemon, and call pacing.

What a failed call means is decided in consumer/aws_errors.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import boto3
from botocore.config import Config

DEFAULT_MAX_POOL_CONNECTIONS = 32
# A GetRecords page of 1 MB (DynamoDB Streams) or 10 MB (Kinesis) can take seconds to arrive;
# connecting should not.
CONNECT_TIMEOUT_SECONDS = 5.0
READ_TIMEOUT_SECONDS = 30.0
MAX_ATTEMPTS = 4


def client_config(max_pool_connections: int = DEFAULT_MAX_POOL_CONNECTIONS) -> Config:
    """The botocore Config every client of the daemon shares: standard retries, bounded waits."""
    return Config(
        retries={"mode": "standard", "max_attempts": MAX_ATTEMPTS},
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        read_timeout=READ_TIMEOUT_SECONDS,
        max_pool_connections=max_pool_connections,
        tcp_keepalive=True,
    )


def make_client(
    service: str,
    region: str | None = None,
    endpoint_url: str | None = None,
    max_pool_connections: int = DEFAULT_MAX_POOL_CONNECTIONS,
) -> Any:
    """A boto3 client; boto3 itself honours AWS_ENDPOINT_URL[_<SERVICE>], endpoint_url overrides.

    Each client gets its own Session because boto3's default session is not thread-safe.
    """
    session = boto3.session.Session(region_name=region)
    # The stubs type client() once per literal service name; this one comes from the caller.
    create: Callable[..., Any] = session.client
    return create(service, endpoint_url=endpoint_url, config=client_config(max_pool_connections))


class Pacer:
    """Spaces calls at least `min_interval` apart by sleeping only the remainder of the interval.

    AWS limits GetRecords (5/s per shard) and DescribeStream (10/s per stream); keeping under
    them client-side avoids burning retries on throttling.
    """

    def __init__(
        self,
        min_interval: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.min_interval = min_interval
        self._clock = clock
        self._sleep = sleep
        self._last: float | None = None
        self._interval = min_interval

    def wait(self) -> None:
        """Block until the next call is allowed, and mark that call as started now."""
        if self._last is not None:
            remaining = self._last + self._interval - self._clock()
            if remaining > 0:
                self._sleep(remaining)
        self._last = self._clock()
        self._interval = self.min_interval

    def stretch(self, seconds: float) -> None:
        """Space the next call at least `seconds` after the last one (a large page's bytes)."""
        self._interval = max(self._interval, seconds)
