"""A "poisoned" run shared by the dead-letter tool tests: a bad deploy of GuardedItems read a
Kinesis stream on kinesis-local and dead-lettered six records into moto's SQS."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import Result

from consumer.config import load_settings
from consumer.leases.store import DynamoDBLeaseStore
from tests.fixtures.servers import wait_until
from tests.support.daemon import FAST_LEASES, FAST_POLLING, daemon_thread, invoke_cli
from tests.support.guarded import create_table
from tests.support.streams import kinesis_stream

PROJECTION = "tests.support.guarded:GuardedItems"
KEY = "a-test-signing-key-of-at-least-32-bytes"


def changes() -> list[tuple[str, str]]:
    """(key, value) in stream order: three versions of 20 keys, some the old code cannot handle.

    k1 v1 and k3 v2 are buggy but later overwritten (a redrive of them must be stale-skipped);
    k2 v3 is buggy and last (a redrive must apply it); all of k4 is buggy.
    """
    buggy = {("k1", 1), ("k3", 2), ("k2", 3), ("k4", 1), ("k4", 2), ("k4", 3)}
    return [
        (f"k{n}", f"{'bug' if (f'k{n}', v) in buggy else 'ok'}-k{n}-v{v}")
        for v in (1, 2, 3)
        for n in range(20)
    ]


@dataclass
class Poisoned:
    """The stream, queue and tables of one poisoned run, and configs to run the tools with."""

    app: str
    stream: str
    queue_url: str
    bucket: str
    table: str
    last_sequence: str
    dynamodb: Any
    sqs: Any
    s3: Any
    tmp_path: Path
    signing_key: str

    def config(self, name: str, *, fixed: bool, table: str | None = None, app: str = "") -> Path:
        """A config file for the daemon or the tools; same application unless `app`."""
        path = self.tmp_path / f"{name}.toml"
        key = f'signing_key = "{self.signing_key}"' if self.signing_key else ""
        path.write_text(
            f"""
application = "{app or self.app}"
[source]
kind = "kinesis"
stream_name = "{self.stream}"

[dead_letter]
queue_url = "{self.queue_url}"
bucket = "{self.bucket}"
{key}

[[projections]]
name = "items"
class = "{PROJECTION}"
settings = {{ table = "{table or self.table}", fixed = {"true" if fixed else "false"} }}
"""
        )
        return path

    def run_to_the_end(self, path: Path) -> None:
        """Run a daemon with this config until its checkpoint is at the last record."""
        settings = load_settings(
            path,
            leases=FAST_LEASES,
            polling=FAST_POLLING,
            retry={"base_seconds": 0.01, "cap_seconds": 0.2},
        )
        store = DynamoDBLeaseStore(self.dynamodb, settings.lease_table)
        with daemon_thread(settings):
            wait_until(
                lambda: [lease.checkpoint for lease in store.list_leases()] == [self.last_sequence],
                what="checkpoint at the last record",
            )

    def dlq(self, *args: str) -> Result:
        """`stream-projector dlq ARGS` in-process, with the fixed config unless one is given."""
        if "--config" not in args:
            args = (*args, "--config", str(self.config("fixed", fixed=True)))
        return invoke_cli(["dlq", *args])

    def messages(self) -> dict[str, dict[str, Any]]:
        """Every message in the queue now, by id (received, then made visible again)."""
        found: dict[str, dict[str, Any]] = {}
        empty = 0
        while empty < 3:
            got = self.sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=10, VisibilityTimeout=30
            ).get("Messages", [])
            fresh = [m for m in got if m["MessageId"] not in found]
            empty = 0 if fresh else empty + 1
            found.update((m["MessageId"], m) for m in fresh)
        for message in found.values():
            self.sqs.change_message_visibility(
                QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
            )
        return found

    def letters(self) -> list[dict[str, Any]]:
        """The JSON bodies of every message that is JSON."""
        bodies = []
        for message in self.messages().values():
            try:
                bodies.append(orjson.loads(message["Body"]))
            except orjson.JSONDecodeError:
                continue
        return bodies


def poisoned_run(
    aws_client: Callable[..., Any],
    kinesis_local_endpoint: str,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    signing_key: str,
) -> Poisoned:
    """Needs the endpoints of `kinesis_env` set (make_poisoned does)."""
    kinesis = aws_client("kinesis", kinesis_local_endpoint)
    dynamodb, sqs, s3 = aws_client("dynamodb"), aws_client("sqs"), aws_client("s3")
    name, table, bucket = unique_name("poisoned"), unique_name("items"), unique_name("letters")
    kinesis_stream(kinesis, name, 1)
    create_table(dynamodb, table)
    s3.create_bucket(Bucket=bucket)
    queue_url = sqs.create_queue(QueueName=name)["QueueUrl"]
    response = kinesis.put_records(
        StreamName=name,
        Records=[
            {"Data": orjson.dumps({"key": k, "value": v}), "PartitionKey": k} for k, v in changes()
        ],
    )
    run = Poisoned(
        app=unique_name("app"),
        stream=name,
        queue_url=queue_url,
        bucket=bucket,
        table=table,
        last_sequence=response["Records"][-1]["SequenceNumber"],
        dynamodb=dynamodb,
        sqs=sqs,
        s3=s3,
        tmp_path=tmp_path,
        signing_key=signing_key,
    )
    run.run_to_the_end(run.config("buggy", fixed=False))
    return run


@pytest.fixture
def make_poisoned(
    aws_client: Callable[..., Any],
    kinesis_local_endpoint: str,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    kinesis_env: None,
) -> Callable[[str], Poisoned]:
    """A poisoned run, its letters signed with the given key ("" for none)."""
    return lambda key: poisoned_run(aws_client, kinesis_local_endpoint, unique_name, tmp_path, key)


@pytest.fixture
def poisoned(make_poisoned: Callable[[str], Poisoned]) -> Poisoned:
    """Six letters in the queue, unsigned (no signing key in the configs)."""
    return make_poisoned("")


@pytest.fixture
def signed_poisoned(make_poisoned: Callable[[str], Poisoned]) -> Poisoned:
    """Six letters signed with KEY; every config of this run has dead_letter.signing_key."""
    return make_poisoned(KEY)
