"""The KCL record processor, driven over pipes the way the MultiLangDaemon drives it.

Each test starts `python -m consumer.runtimes.kcl` as a subprocess, plays the daemon's side
of the MultiLang protocol and checks what the projection wrote to moto's DynamoDB, what
reached the dead-letter queue, and every checkpoint it asked for. The framing is the
daemon's (software.amazon.kinesis.multilang MessageWriter / GetNextMessageTask): one compact
JSON message per line on the child's stdin, flushed; from its stdout, one message per line,
empty lines skipped. A checkpoint reply can be held back, as a slow lease-table write holds
the real one, so what the processor did before asking becomes visible.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from consumer.record import position_of
from tests.fixtures.servers import ROOT
from tests.support.recording import create_recording_table, recorded

pytestmark = pytest.mark.integration

SHARD = "shardId-000000000001"
REPLY_TIMEOUT = 30.0


def seq(n: int) -> str:
    """A Kinesis-like 56-digit sequence number; n orders them."""
    return f"4959033827149025660855969253836157109592157598913658{n:04d}"


def record(n: int, key: str, *, marker: str = "", sub: int = 0, data: bytes | None = None) -> dict:
    """A MultiLang `record` as the daemon sends it (data base64, arrival in epoch millis)."""
    body = data if data is not None else json.dumps({"key": key, "n": n, "marker": marker}).encode()
    return {
        "action": "record",
        "data": base64.b64encode(body).decode(),
        "partitionKey": key,
        "sequenceNumber": seq(n),
        "subSequenceNumber": sub,
        "approximateArrivalTimestamp": 1_795_412_183_033 + n,
    }


class FakeDaemonSide:
    """The MultiLangDaemon's half of the conversation with one processor subprocess."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.strip():
                self._lines.put(line)
        self._lines.put(None)

    def send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message, separators=(",", ":")) + os.linesep)
        self.process.stdin.flush()

    def expect(self) -> dict[str, Any]:
        """The processor's next message (fails if it exits or says nothing in time)."""
        line = self._lines.get(timeout=REPLY_TIMEOUT)
        assert line is not None, f"processor exited with {self.process.wait()}"
        return json.loads(line)

    def expect_status(self, action: str) -> None:
        assert self.expect() == {"action": "status", "responseFor": action}

    def expect_checkpoint_request(self, sequence: str | None, sub: int | None) -> None:
        """Assert the next message is this checkpoint request; the reply is up to the test."""
        assert self.expect() == {
            "action": "checkpoint",
            "sequenceNumber": sequence,
            "subSequenceNumber": sub,
        }

    def expect_checkpoint(self, sequence: str | None, sub: int | None, error: str | None = None):
        """Assert the next message is this checkpoint request, then answer it at once."""
        self.expect_checkpoint_request(sequence, sub)
        self.answer_checkpoint(sequence, sub, error)

    def answer_checkpoint(self, sequence: str | None, sub: int | None, error: str | None = None):
        """The daemon's reply to a checkpoint request: `error` names the KCL exception."""
        self.send(
            {
                "action": "checkpoint",
                "sequenceNumber": sequence,
                "subSequenceNumber": sub,
                "error": error,
            }
        )

    def close(self) -> int:
        assert self.process.stdin is not None
        self.process.stdin.close()
        return self.process.wait(timeout=REPLY_TIMEOUT)


@pytest.fixture
def kcl_env(
    moto_endpoint: str,
    aws_client: Callable[..., Any],
    unique_name: Callable[[str], str],
    tmp_path: Path,
) -> dict[str, Any]:
    """A recording table, a dead-letter queue and the TOML file naming them."""
    table = unique_name("kcl-recorded")
    create_recording_table(aws_client("dynamodb"), table)
    queue_url = aws_client("sqs").create_queue(QueueName=unique_name("kcl-dlq"))["QueueUrl"]
    config = tmp_path / "kcl.toml"
    config.write_text(
        f"""
application = "kcl-test"
[source]
kind = "kinesis"
stream_name = "orders"
[aws]
region = "us-east-1"
endpoint_url = "{moto_endpoint}"
[retry]
base_seconds = 0.01
cap_seconds = 0.05
[dead_letter]
queue_url = "{queue_url}"
[[projections]]
name = "recording"
class = "tests.support.recording:RecordingProjection"
[projections.settings]
table = "{table}"
fail_on = "poison"
"""
    )
    return {"table": table, "queue_url": queue_url, "config": config}


@pytest.fixture
def daemon(kcl_env: dict[str, Any]) -> Iterator[FakeDaemonSide]:
    """A processor subprocess, initialized for SHARD."""
    env = {
        **os.environ,
        "STREAM_PROJECTOR_CONFIG": str(kcl_env["config"]),
        "PYTHONPATH": str(ROOT),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "consumer.runtimes.kcl"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=None,
        text=True,
    )
    side = FakeDaemonSide(process)
    side.send(
        {
            "action": "initialize",
            "shardId": SHARD,
            "sequenceNumber": "TRIM_HORIZON",
            "subSequenceNumber": 0,
        }
    )
    side.expect_status("initialize")
    yield side
    if process.poll() is None:
        process.kill()
        process.wait()


def positions(aws_client: Callable[..., Any], table: str) -> list[tuple[str, str]]:
    return sorted(
        (item["record_key"], item["position"]) for item in recorded(aws_client("dynamodb"), table)
    )


def dead_letters(aws_client: Callable[..., Any], queue_url: str) -> list[dict[str, Any]]:
    messages = (
        aws_client("sqs")
        .receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        .get("Messages", [])
    )
    return sorted((json.loads(m["Body"]) for m in messages), key=lambda e: e["sequence_number"])


def test_applies_each_batch_then_checkpoints_its_last_record_and_shard_end(
    daemon: FakeDaemonSide, kcl_env: dict[str, Any], aws_client: Callable[..., Any]
) -> None:
    daemon.send(
        {
            "action": "processRecords",
            "millisBehindLatest": 0,
            "records": [record(1, "a"), record(2, "b"), record(3, "a")],
        }
    )
    daemon.expect_checkpoint(seq(3), 0)
    daemon.expect_status("processRecords")
    assert positions(aws_client, kcl_env["table"]) == [
        ("a", position_of(seq(1))),
        ("a", position_of(seq(3))),
        ("b", position_of(seq(2))),
    ]

    # Two user records of one KPL aggregate, de-aggregated by the KCL: the checkpoint names the
    # last sub-sequence, and each user record keeps its own position.
    daemon.send(
        {
            "action": "processRecords",
            "millisBehindLatest": 0,
            "records": [record(4, "c", sub=0), record(4, "c", sub=1)],
        }
    )
    daemon.expect_checkpoint(seq(4), 1)
    daemon.expect_status("processRecords")
    assert ("c", position_of(seq(4), 1)) in positions(aws_client, kcl_env["table"])
    assert ("c", position_of(seq(4), 0)) in positions(aws_client, kcl_env["table"])

    daemon.send({"action": "processRecords", "millisBehindLatest": 0, "records": []})
    daemon.expect_status("processRecords")  # nothing new: no checkpoint

    daemon.send({"action": "shardEnded"})
    daemon.expect_checkpoint(None, None)  # SHARD_END
    daemon.expect_status("shardEnded")
    assert daemon.close() == 0


def test_poison_and_undecodable_records_are_dead_lettered_and_the_batch_checkpointed(
    daemon: FakeDaemonSide, kcl_env: dict[str, Any], aws_client: Callable[..., Any]
) -> None:
    daemon.send(
        {
            "action": "processRecords",
            "millisBehindLatest": 0,
            "records": [
                record(10, "a"),
                record(11, "b", marker="poison"),
                record(12, "c", data=b"not json"),
                record(13, "d"),
            ],
        }
    )
    daemon.expect_checkpoint(seq(13), 0)
    daemon.expect_status("processRecords")
    assert positions(aws_client, kcl_env["table"]) == [
        ("a", position_of(seq(10))),
        ("d", position_of(seq(13))),
    ]
    letters = dead_letters(aws_client, kcl_env["queue_url"])
    assert [(e["sequence_number"], e["projection"], e["reason"]) for e in letters] == [
        (seq(11), "recording", "projection_error"),
        (seq(12), "(decode)", "decode_error"),
    ]
    assert letters[0]["shard_id"] == SHARD and letters[0]["stream"] == "orders"
    assert letters[0]["error_type"] == "ValueError"
    # The full record travels with the letter, as the KCL delivered it.
    assert letters[1]["record"]["Data"] == base64.b64encode(b"not json").decode()
    assert daemon.close() == 0


def test_throttled_checkpoint_is_retried_and_a_lost_lease_stops_checkpointing(
    daemon: FakeDaemonSide, kcl_env: dict[str, Any], aws_client: Callable[..., Any]
) -> None:
    daemon.send({"action": "processRecords", "millisBehindLatest": 5, "records": [record(20, "a")]})
    daemon.expect_checkpoint(seq(20), 0, error="ThrottlingException")
    daemon.expect_checkpoint(seq(20), 0)  # retried after backoff, then accepted
    daemon.expect_status("processRecords")

    daemon.send({"action": "processRecords", "millisBehindLatest": 5, "records": [record(21, "a")]})
    daemon.expect_checkpoint(seq(21), 0, error="ShutdownException")
    daemon.expect_status("processRecords")  # not retried: the lease belongs to someone else

    daemon.send({"action": "leaseLost"})
    daemon.expect_status("leaseLost")  # and no checkpoint request before it
    assert daemon.close() == 0
    assert ("a", position_of(seq(21))) in positions(aws_client, kcl_env["table"])


def test_lease_lost_never_checkpoints_even_with_work_pending(daemon: FakeDaemonSide) -> None:
    daemon.send({"action": "processRecords", "millisBehindLatest": 0, "records": [record(30, "a")]})
    daemon.expect_checkpoint(seq(30), 0, error="InvalidStateException")  # final: not retried
    daemon.expect_status("processRecords")
    daemon.send({"action": "leaseLost"})
    daemon.expect_status("leaseLost")
    # Record 30 is applied and not checkpointed, which shutdownRequested would normally fix.
    daemon.send({"action": "shutdownRequested"})
    daemon.expect_status("shutdownRequested")
    assert daemon.close() == 0


def test_the_checkpoint_is_asked_for_only_once_the_batch_is_applied(
    daemon: FakeDaemonSide, kcl_env: dict[str, Any], aws_client: Callable[..., Any]
) -> None:
    """docs/design.md, invariant 1, in the KCL runtime: the daemon holds its checkpoint reply,
    and while the processor waits for it every record of the batch is already written."""
    daemon.send(
        {
            "action": "processRecords",
            "millisBehindLatest": 0,
            "records": [record(60, "a"), record(61, "b"), record(62, "c")],
        }
    )
    daemon.expect_checkpoint_request(seq(62), 0)
    assert positions(aws_client, kcl_env["table"]) == [
        ("a", position_of(seq(60))),
        ("b", position_of(seq(61))),
        ("c", position_of(seq(62))),
    ]
    daemon.answer_checkpoint(seq(62), 0)  # late: the records were applied before it came
    daemon.expect_status("processRecords")
    assert daemon.close() == 0


def test_after_a_checkpoint_says_the_lease_is_gone_the_processor_never_checkpoints_again(
    daemon: FakeDaemonSide, kcl_env: dict[str, Any], aws_client: Callable[..., Any]
) -> None:
    """docs/design.md, invariant 3: another worker owns the shard now."""
    daemon.send({"action": "processRecords", "millisBehindLatest": 0, "records": [record(70, "a")]})
    daemon.expect_checkpoint(seq(70), 0, error="ShutdownException")
    daemon.expect_status("processRecords")
    # Records the KCL had fetched before it noticed: applied (idempotently), never checkpointed.
    daemon.send({"action": "processRecords", "millisBehindLatest": 0, "records": [record(71, "b")]})
    daemon.expect_status("processRecords")
    assert ("b", position_of(seq(71))) in positions(aws_client, kcl_env["table"])
    daemon.send({"action": "shutdownRequested"})
    daemon.expect_status("shutdownRequested")
    assert daemon.close() == 0


def test_shutdown_requested_checkpoints_what_was_applied_but_not_yet_checkpointed(
    daemon: FakeDaemonSide,
) -> None:
    daemon.send({"action": "processRecords", "millisBehindLatest": 0, "records": [record(40, "a")]})
    daemon.expect_checkpoint(seq(40), 0, error="InvalidStateException")
    daemon.expect_status("processRecords")
    daemon.send({"action": "shutdownRequested"})
    daemon.expect_checkpoint(seq(40), 0)
    daemon.expect_status("shutdownRequested")
    # Everything is checkpointed now: a second request has nothing to do.
    daemon.send({"action": "shutdownRequested"})
    daemon.expect_status("shutdownRequested")
    assert daemon.close() == 0


def test_processor_logs_only_to_stderr_so_stdout_carries_the_protocol(
    daemon: FakeDaemonSide,
) -> None:
    # Logging happens on every batch (warnings on retries, info lines); any of it on stdout
    # would reach `expect` here as a non-protocol line.
    daemon.send(
        {
            "action": "processRecords",
            "millisBehindLatest": 0,
            "records": [record(50, "a", marker="poison")],
        }
    )
    daemon.expect_checkpoint(seq(50), 0)
    daemon.expect_status("processRecords")
    assert daemon.close() == 0
