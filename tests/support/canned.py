"""FAKE responses, for faults no emulator produces on demand: throttling, 5xx, an iterator
expiring after 5-15 min, trimmed data, a DynamoDB Streams shard that ends or pages.

The next calls of an operation get canned (status, JSON body) HTTP responses instead of
reaching the server; everything else about a call is real: serialization, botocore's parsers
and retries, and the server for every other call.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
from botocore.awsrequest import AWSResponse


class _Body:
    """The minimal raw stream AWSResponse reads its content from."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._body


def inject_responses(
    client: Any, operation: str, responses: list[tuple[int, dict[str, Any]]]
) -> list[dict[str, Any]]:
    """FAKE: the next calls of `operation` get these responses, in order; then the server
    answers again. Returns the intercepted request bodies."""
    seen: list[dict[str, Any]] = []
    service_id = client.meta.service_model.service_id.hyphenize()

    def respond(request: Any, **_: Any) -> AWSResponse | None:
        if len(seen) >= len(responses):
            return None
        status, body = responses[len(seen)]
        seen.append(orjson.loads(request.body))
        headers = {"Content-Type": "application/x-amz-json-1.0"}
        return AWSResponse(request.url, status, headers, _Body(orjson.dumps(body)))

    client.meta.events.register_first(f"before-send.{service_id}.{operation}", respond)
    return seen


def inject_response(
    client: Any, operation: str, status: int, body: dict[str, Any]
) -> list[dict[str, Any]]:
    """FAKE: the next call of `operation` gets this response (see inject_responses)."""
    return inject_responses(client, operation, [(status, body)])


def inject_error(client: Any, operation: str, code: str, status: int = 400) -> None:
    """FAKE: the next call of `operation` fails with the AWS error `code` (JSON protocols)."""
    inject_response(client, operation, status, {"__type": code, "message": "canned response"})
