"""A Kinesis endpoint for the benchmarks that costs almost no CPU per record served.

kinesis-local spends about 120-260 us of CPU per record it serves, on the same two cores as
the clients it serves, so a benchmark against it measures the emulator. This server keeps
each stream in memory as the wire bytes of its GetRecords pages: PutRecords encodes each
record once (sequence number, arrival time, data, partition key) and appends it to its shard's
buffer; GetRecords answers with one slice of that buffer between a fixed prefix and suffix, so
serving a page is a copy of bytes, not work per record.

It speaks the Kinesis JSON protocol (application/x-amz-json-1.1, X-Amz-Target
Kinesis_20131202.<Action>) for what the benchmarks' writers and readers call: CreateStream,
DescribeStream, DescribeStreamSummary, ListShards, PutRecord(s), GetShardIterator
(TRIM_HORIZON, LATEST, AT/AFTER_SEQUENCE_NUMBER, AT_TIMESTAMP) and GetRecords (Limit up to
10,000 records and 10 MB, NextShardIterator, MillisBehindLatest: how old the first record not
yet returned is, 0 at the tip, where a page is empty). Any other action gets a 400
UnknownOperationException naming it. Partition keys are hashed to shards by MD5 over evenly
split hash key ranges, as Kinesis does.

What it leaves out, on purpose: no throttling (neither 5 GetRecords/s nor 2 MB/s per shard
is enforced: a reader that paces itself, as the daemon does, is not held back by the server,
and one that does not is not punished), no iterator expiry, no retention, no resharding
(every shard stays open), no authentication (any signature is accepted), one region.

GET /stats answers {"get_records_calls", "records_served"} so a benchmark can put the
server's CPU per record served beside its clients'. Run it in its own process:

    python -m bench.kinesis_replay --port 4567
"""

from __future__ import annotations

import argparse
import base64
import bisect
import contextlib
import hashlib
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

from tests.fixtures.servers import ROOT, free_port, port_open, wait_until

TARGET_PREFIX = "Kinesis_20131202."
CONTENT_TYPE = "application/x-amz-json-1.1"
REGION = "us-east-1"
ACCOUNT = "000000000000"
PAGE_RECORDS = 10_000
PAGE_BYTES = 10 * 1024 * 1024
HASH_SPACE = 2**128
# Sequence numbers are 56 digits, as Kinesis' are: a prefix, the shard, the record's position.
SEQUENCE_PREFIX = "4960"
SHARD_DIGITS = 10
POSITION_DIGITS = 56 - len(SEQUENCE_PREFIX) - SHARD_DIGITS


class KinesisError(Exception):
    """An error answered as Kinesis answers it: HTTP 400 and {"__type", "message"}."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Shard:
    """One shard's records as wire bytes: `wire` holds them comma-separated, in order."""

    index: int
    starting_hash_key: int
    ending_hash_key: int
    wire: bytearray = field(default_factory=bytearray)
    # ends[i]: where record i's bytes end in `wire`; arrivals[i]: its arrival, epoch ms.
    ends: list[int] = field(default_factory=list)
    arrivals: list[int] = field(default_factory=list)

    @property
    def shard_id(self) -> str:
        """Kinesis' shard id format."""
        return f"shardId-{self.index:012d}"

    def sequence_number(self, position: int) -> str:
        """The sequence number of the record at `position`."""
        return f"{SEQUENCE_PREFIX}{self.index:0{SHARD_DIGITS}d}{position:0{POSITION_DIGITS}d}"

    def position_of(self, sequence_number: str) -> int:
        """The position a sequence number of this shard names."""
        shard_part = sequence_number[len(SEQUENCE_PREFIX) : len(SEQUENCE_PREFIX) + SHARD_DIGITS]
        if (
            len(sequence_number) != 56
            or not sequence_number.isdigit()
            or int(shard_part) != self.index
        ):
            raise KinesisError(
                "InvalidArgumentException",
                f"StartingSequenceNumber {sequence_number} used in GetShardIterator on shard "
                f"{self.shard_id} is invalid because it did not come from this stream.",
            )
        return int(sequence_number[-POSITION_DIGITS:])

    def append(self, data: str, partition_key: str, arrival_ms: int) -> str:
        """Encode one record once, as GetRecords will return it; its sequence number."""
        sequence_number = self.sequence_number(len(self.ends))
        record = orjson.dumps(
            {
                "SequenceNumber": sequence_number,
                "ApproximateArrivalTimestamp": arrival_ms / 1000,
                "Data": data,
                "PartitionKey": partition_key,
            }
        )
        if self.ends:
            self.wire += b","
        self.wire += record
        self.ends.append(len(self.wire))
        self.arrivals.append(arrival_ms)
        return sequence_number

    def description(self) -> dict[str, Any]:
        """The shard as ListShards and DescribeStream show it."""
        return {
            "ShardId": self.shard_id,
            "HashKeyRange": {
                "StartingHashKey": str(self.starting_hash_key),
                "EndingHashKey": str(self.ending_hash_key),
            },
            "SequenceNumberRange": {"StartingSequenceNumber": self.sequence_number(0)},
        }


@dataclass
class Stream:
    """A stream of shards that split the MD5 hash key space evenly."""

    name: str
    shards: list[Shard]
    created: float = field(default_factory=time.time)

    @classmethod
    def create(cls, name: str, shard_count: int) -> Stream:
        """`shard_count` open, empty shards."""
        bounds = [HASH_SPACE * i // shard_count for i in range(shard_count + 1)]
        return cls(name, [Shard(i, bounds[i], bounds[i + 1] - 1) for i in range(shard_count)])

    @property
    def arn(self) -> str:
        """The stream's ARN in the one region and account served."""
        return f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/{self.name}"

    def shard_for(self, partition_key: str, explicit_hash_key: str | None) -> Shard:
        """The shard whose hash key range holds the key's MD5 (or the explicit hash key)."""
        if explicit_hash_key is not None:
            hash_key = int(explicit_hash_key)
        else:
            hash_key = int.from_bytes(hashlib.md5(partition_key.encode()).digest(), "big")
        starts = [shard.starting_hash_key for shard in self.shards]
        return self.shards[bisect.bisect_right(starts, hash_key) - 1]

    def shard(self, shard_id: str) -> Shard:
        """The shard named `shard_id`, or ResourceNotFoundException."""
        for shard in self.shards:
            if shard.shard_id == shard_id:
                return shard
        raise KinesisError(
            "ResourceNotFoundException", f"Shard {shard_id} in stream {self.name} does not exist"
        )


class Replay:
    """The streams served, and what GetRecords has served (for GET /stats)."""

    def __init__(self) -> None:
        self.streams: dict[str, Stream] = {}
        self.lock = threading.Lock()
        self.get_records_calls = 0
        self.records_served = 0

    # -- the actions --------------------------------------------------------------------------

    def create_stream(self, request: dict[str, Any]) -> dict[str, Any]:
        """A new stream, ACTIVE at once."""
        name = _required(request, "StreamName")
        count = int(request.get("ShardCount") or 1)
        if not 1 <= count <= 1000:
            raise KinesisError("InvalidArgumentException", f"ShardCount {count} is not 1-1000")
        with self.lock:
            if name in self.streams:
                raise KinesisError("ResourceInUseException", f"Stream {name} already exists")
            self.streams[name] = Stream.create(name, count)
        return {}

    def describe_stream(self, request: dict[str, Any]) -> dict[str, Any]:
        """Every shard in one page (HasMoreShards false)."""
        stream = self._stream(request)
        return {
            "StreamDescription": {
                **self._summary(stream),
                "Shards": [shard.description() for shard in stream.shards],
                "HasMoreShards": False,
            }
        }

    def describe_stream_summary(self, request: dict[str, Any]) -> dict[str, Any]:
        """The stream's status and shard count."""
        stream = self._stream(request)
        return {
            "StreamDescriptionSummary": {
                **self._summary(stream),
                "OpenShardCount": len(stream.shards),
                "ConsumerCount": 0,
            }
        }

    def list_shards(self, request: dict[str, Any]) -> dict[str, Any]:
        """Every shard in one page (no NextToken)."""
        return {"Shards": [shard.description() for shard in self._stream(request).shards]}

    def put_records(self, request: dict[str, Any]) -> dict[str, Any]:
        """Append every entry to its shard; none fails."""
        stream = self._stream(request)
        arrival = int(time.time() * 1000)
        results = []
        with self.lock:
            for entry in request.get("Records") or ():
                shard = stream.shard_for(entry["PartitionKey"], entry.get("ExplicitHashKey"))
                sequence_number = shard.append(entry["Data"], entry["PartitionKey"], arrival)
                results.append({"SequenceNumber": sequence_number, "ShardId": shard.shard_id})
        return {"FailedRecordCount": 0, "Records": results}

    def put_record(self, request: dict[str, Any]) -> dict[str, Any]:
        """PutRecords of one entry."""
        entry = {k: request[k] for k in ("Data", "PartitionKey", "ExplicitHashKey") if k in request}
        result = self.put_records({**request, "Records": [entry]})["Records"][0]
        return dict(result)

    def get_shard_iterator(self, request: dict[str, Any]) -> dict[str, Any]:
        """An iterator: the stream, the shard and a position in it, base64-encoded."""
        stream = self._stream(request)
        shard = stream.shard(_required(request, "ShardId"))
        kind = _required(request, "ShardIteratorType")
        if kind == "TRIM_HORIZON":
            position = 0
        elif kind == "LATEST":
            position = len(shard.ends)
        elif kind in ("AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER"):
            position = shard.position_of(_required(request, "StartingSequenceNumber"))
            position += kind == "AFTER_SEQUENCE_NUMBER"
        elif kind == "AT_TIMESTAMP":
            at_ms = int(float(_required(request, "Timestamp")) * 1000)
            position = bisect.bisect_left(shard.arrivals, at_ms)
        else:
            raise KinesisError("InvalidArgumentException", f"ShardIteratorType {kind} is unknown")
        return {"ShardIterator": _iterator(stream.name, shard.index, position)}

    def get_records(self, request: dict[str, Any]) -> bytes:
        """A slice of the shard's wire bytes, already the JSON of its records."""
        limit = int(request.get("Limit") or PAGE_RECORDS)
        if not 1 <= limit <= PAGE_RECORDS:
            raise KinesisError(
                "ValidationException",
                f"1 validation error detected: Value '{limit}' at 'limit' failed to satisfy "
                f"constraint: Member must have value between 1 and {PAGE_RECORDS}",
            )
        name, index, position = _parse_iterator(_required(request, "ShardIterator"))
        stream = self._stream({"StreamName": name})
        if not 0 <= index < len(stream.shards):
            raise KinesisError("ResourceNotFoundException", f"Shard {index} does not exist")
        shard = stream.shards[index]
        ends, count = shard.ends, len(shard.ends)
        if not 0 <= position <= count:
            raise KinesisError("InvalidArgumentException", f"ShardIterator position {position}")
        start = ends[position - 1] + 1 if position else 0
        stop = min(position + limit, count)
        if stop > position:  # at most 10 MB a page, and at least one record
            stop = min(stop, max(bisect.bisect_right(ends, start + PAGE_BYTES), position + 1))
        # A bytearray slice is one copy; join takes it as it is.
        records = shard.wire[start : ends[stop - 1]] if stop > position else b""
        now_ms = int(time.time() * 1000)
        behind = max(0, now_ms - shard.arrivals[stop]) if stop < count else 0
        with self.lock:
            self.get_records_calls += 1
            self.records_served += stop - position
        return b"".join(
            (
                b'{"Records":[',
                records,
                b'],"NextShardIterator":"',
                _iterator(name, index, stop).encode(),
                b'","MillisBehindLatest":',
                str(behind).encode(),
                b"}",
            )
        )

    def stats(self) -> dict[str, int]:
        """GetRecords calls and records served so far."""
        with self.lock:
            return {
                "get_records_calls": self.get_records_calls,
                "records_served": self.records_served,
            }

    # -- helpers ------------------------------------------------------------------------------

    def _stream(self, request: dict[str, Any]) -> Stream:
        name = request.get("StreamName")
        if name is None and (arn := request.get("StreamARN")):
            name = str(arn).rsplit("/", 1)[-1]
        if name is None:
            raise KinesisError("ValidationException", "StreamName or StreamARN is required")
        stream = self.streams.get(name)
        if stream is None:
            raise KinesisError(
                "ResourceNotFoundException", f"Stream {name} under account {ACCOUNT} not found."
            )
        return stream

    @staticmethod
    def _summary(stream: Stream) -> dict[str, Any]:
        return {
            "StreamName": stream.name,
            "StreamARN": stream.arn,
            "StreamStatus": "ACTIVE",
            "StreamModeDetails": {"StreamMode": "PROVISIONED"},
            "RetentionPeriodHours": 24,
            "StreamCreationTimestamp": stream.created,
            "EnhancedMonitoring": [{"ShardLevelMetrics": []}],
            "EncryptionType": "NONE",
        }


def _required(request: dict[str, Any], name: str) -> str:
    value = request.get(name)
    if value is None:
        raise KinesisError("ValidationException", f"{name} is required")
    return str(value)


def _iterator(stream: str, shard_index: int, position: int) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([stream, shard_index, position])).decode()


def _parse_iterator(token: str) -> tuple[str, int, int]:
    try:
        name, index, position = orjson.loads(base64.urlsafe_b64decode(token))
        return str(name), int(index), int(position)
    except (ValueError, TypeError) as exc:
        raise KinesisError(
            "InvalidArgumentException", f"ShardIterator {token!r} is invalid"
        ) from exc


# The actions served, and Replay's method for each.
ACTIONS = {
    "CreateStream": "create_stream",
    "DescribeStream": "describe_stream",
    "DescribeStreamSummary": "describe_stream_summary",
    "ListShards": "list_shards",
    "PutRecords": "put_records",
    "PutRecord": "put_record",
    "GetShardIterator": "get_shard_iterator",
    "GetRecords": "get_records",
}


class Handler(BaseHTTPRequestHandler):
    """One Kinesis JSON call per POST; keep-alive, as the SDKs' connection pools expect."""

    protocol_version = "HTTP/1.1"
    server: ReplayServer

    def do_POST(self) -> None:
        """Dispatch on X-Amz-Target; answer JSON, or a Kinesis error."""
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        target = self.headers.get("X-Amz-Target") or ""
        action = target.removeprefix(TARGET_PREFIX)
        try:
            method = ACTIONS.get(action) if target.startswith(TARGET_PREFIX) else None
            if method is None:
                raise KinesisError(
                    "UnknownOperationException",
                    f"bench.kinesis_replay does not serve {target or 'a call without X-Amz-Target'}"
                    f"; it serves {', '.join(ACTIONS)}",
                )
            handler: Callable[[dict[str, Any]], dict[str, Any] | bytes]
            handler = getattr(self.server.replay, method)
            result = handler(orjson.loads(body) if body else {})
            payload = result if isinstance(result, bytes) else orjson.dumps(result)
            self._answer(HTTPStatus.OK, payload)
        except KinesisError as exc:
            error = {"__type": exc.code, "message": exc.message}
            self._answer(HTTPStatus.BAD_REQUEST, orjson.dumps(error))
        except (ValueError, KeyError, TypeError) as exc:
            error = {"__type": "SerializationException", "message": f"{action}: {exc!r}"}
            self._answer(HTTPStatus.BAD_REQUEST, orjson.dumps(error))

    def do_GET(self) -> None:
        """GET /stats: what GetRecords has served."""
        if self.path != "/stats":
            self._answer(HTTPStatus.NOT_FOUND, b'{"message": "only /stats is served on GET"}')
            return
        self._answer(HTTPStatus.OK, orjson.dumps(self.server.replay.stats()))

    def _answer(self, status: HTTPStatus, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("x-amzn-RequestId", "bench-kinesis-replay")
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        """No log line per request: the server is measured, and logging costs CPU."""


class ReplayServer(ThreadingHTTPServer):
    """A thread per connection, each serving its keep-alive requests."""

    daemon_threads = True

    def __init__(self, port: int) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.replay = Replay()


def start(port: int | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """The server in its own process (so its CPU is its own); its process and URL."""
    port = port or free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.kinesis_replay", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_until(lambda: port_open(port), timeout=30, what=f"bench.kinesis_replay on port {port}")
    return process, f"http://127.0.0.1:{port}"


def stats(url: str) -> dict[str, int]:
    """GET /stats of a running server."""
    import urllib.request

    with urllib.request.urlopen(f"{url.rstrip('/')}/stats", timeout=10) as response:
        return dict(orjson.loads(response.read()))


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m bench.kinesis_replay", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    server = ReplayServer(args.port)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
