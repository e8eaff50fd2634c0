"""The AWS boundary: boto3 clients configured for a daemon, call pacing, and error mapping."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NoReturn

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ConnectionError, HTTPClientError

from consumer.errors import (
    ExpiredIteratorError,
    StreamProjectorError,
    ThrottledError,
    TransientError,
    TrimmedDataError,
)

DEFAULT_MAX_POOL_CONNECTIONS = 32
# A GetRecords page of 1 MB (DynamoDB Streams) or 10 MB (Kinesis) can take seconds to arrive;
# connecting should not.
CONNECT_TIMEOUT_SECONDS = 5.0
READ_TIMEOUT_SECONDS = 30.0
MAX_ATTEMPTS = 4

THROTTLING_CODES = frozenset(
    {
        "LimitExceededException",
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "Throttling",
        "RequestLimitExceeded",
        "TooManyRequestsException",
    }
)
EXPIRED_ITERATOR_CODE = "ExpiredIteratorException"
TRIMMED_DATA_CODE = "TrimmedDataAccessException"
SERVER_ERROR_CODES = frozenset({"InternalServerError", "InternalFailure", "ServiceUnavailable"})


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
    return session.client(
        service, endpoint_url=endpoint_url, config=client_config(max_pool_connections)
    )


def error_code(exc: ClientError) -> str:
    """The service's error code of a ClientError ("" when absent)."""
    return str(exc.response.get("Error", {}).get("Code", ""))


def translate_error(exc: BaseException, what: str) -> StreamProjectorError | None:
    """Our typed error for a botocore failure, or None when it is not one the loop can classify.

    `what` names the call and shard, so the message says where it happened.
    """
    if isinstance(exc, ClientError):
        code = error_code(exc)
        message = f"{what}: {code}: {exc.response.get('Error', {}).get('Message', '')}"
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code == EXPIRED_ITERATOR_CODE:
            return ExpiredIteratorError(message)
        if code == TRIMMED_DATA_CODE:
            return TrimmedDataError(message)
        if code in THROTTLING_CODES:
            return ThrottledError(message)
        if status >= 500 or code in SERVER_ERROR_CODES:
            return TransientError(message)
        return None
    if isinstance(exc, ConnectionError | HTTPClientError):
        return TransientError(f"{what}: {type(exc).__name__}: {exc}")
    return None


def raise_translated(exc: BotoCoreError | ClientError, what: str) -> NoReturn:
    """Raise the typed error for `exc` (chained to it), or `exc` itself when it has none."""
    translated = translate_error(exc, what)
    if translated is None:
        raise exc
    raise translated from exc


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

    def wait(self) -> None:
        """Block until the next call is allowed, and mark that call as started now."""
        if self._last is not None:
            remaining = self._last + self.min_interval - self._clock()
            if remaining > 0:
                self._sleep(remaining)
        self._last = self._clock()
