"""moto's server with DynamoDB Streams pages written by json.dumps, not moto's serializer.

moto 5.2 writes every response through a generic serializer driven by the service model, one
attribute value at a time: a 1,000-record GetRecords page costs it 1.7-2.4 s of CPU, which is
what a benchmark reading a stream through it then measures. Here GetRecords alone answers
with `json.dumps` of what moto's DynamoDB Streams backend returns: the same records, shard
iterators and sequence numbers, and a body that parses to the same JSON as the serializer's
(ApproximateCreationDateTime cut to milliseconds as it does; tests/bench checks the two are
equal). Every other call is moto's own.

    python -m bench.moto_json_pages -H 127.0.0.1 -p 5000
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any


def _encode(value: object) -> float:
    # The serializer's timestamps: epoch seconds cut (not rounded) to milliseconds.
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000) / 1000
    raise TypeError(f"cannot encode {type(value).__name__} in a GetRecords page")


def get_records(handler: Any) -> str:
    """DynamoDBStreamsHandler.get_records, answered with json.dumps."""
    iterator = handler._get_param("ShardIterator")
    limit = handler._get_param("Limit") or 1000
    return json.dumps(handler.backend.get_records(iterator, limit), default=_encode)


def install() -> None:
    """Answer GetRecords with json.dumps in this process's moto."""
    from moto.dynamodbstreams.responses import DynamoDBStreamsHandler

    DynamoDBStreamsHandler.get_records = get_records  # type: ignore[method-assign,assignment]


def main(argv: Sequence[str] | None = None) -> None:
    """moto.server's command line, GetRecords answered with json.dumps."""
    from moto.server import main as moto_main

    install()
    moto_main(list(argv) if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()
