"""`dlq inspect`, `dlq purge` and `dlq delete` against moto's SQS, S3 and DynamoDB."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import Result

from consumer.dead_letters.ledger import LETTER, DeadLetterLedger
from consumer.dead_letters.sqs import SqsDeadLetterSink
from tests.consumer.dead_letters.test_sqs import letter
from tests.support.daemon import invoke_cli

# moto's SQS walks every message of the queue several times per call (it recomputes the
# queue's attributes), so its cost grows with the square of the queue: measured on the 2-core
# VM, 500 letters took 17 s to send and 73 s to inspect. 150 letters keep each test short
# while still reading past the old default --max 100; the stopping rule itself does not
# depend on the queue's size.
LETTERS = 150
DUPLICATES = 10


class Queue:
    """A queue with its bucket and ledger, and a config naming them."""

    def __init__(
        self, aws_client: Callable[..., Any], unique_name: Callable[[str], str], tmp_path: Path
    ) -> None:
        self.sqs, self.s3, self.dynamodb = (
            aws_client("sqs"),
            aws_client("s3"),
            aws_client("dynamodb"),
        )
        self.url = self.sqs.create_queue(QueueName=unique_name("dlq"))["QueueUrl"]
        self.bucket = unique_name("letters")
        self.s3.create_bucket(Bucket=self.bucket)
        app = unique_name("app")
        self.ledger = DeadLetterLedger(self.dynamodb, f"{app}-dead-letters")
        self.config = tmp_path / "config.toml"
        self.config.write_text(
            f"""
application = "{app}"
[source]
kind = "kinesis"
stream_name = "orders"
[dead_letter]
queue_url = "{self.url}"
bucket = "{self.bucket}"
"""
        )

    def sink(self, ledger: bool = True) -> SqsDeadLetterSink:
        return SqsDeadLetterSink(
            self.sqs,
            self.url,
            s3=self.s3,
            bucket=self.bucket,
            application="shop",
            ledger=self.ledger if ledger else None,
        )

    def dlq(self, *args: str, input: str | None = None) -> Result:
        return invoke_cli(["dlq", *args, "--config", str(self.config)], input=input)

    def visible(self) -> int:
        attributes = self.sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=["All"])
        return int(attributes["Attributes"]["ApproximateNumberOfMessages"])

    def ledger_letters(self) -> int:
        items = self.dynamodb.scan(TableName=self.ledger.table_name)["Items"]
        return sum(item["id"]["S"].startswith(LETTER) for item in items)


@pytest.fixture
def queue(
    aws_client: Callable[..., Any],
    moto_endpoint: str,
    unique_name: Callable[[str], str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Queue:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    return Queue(aws_client, unique_name, tmp_path)


def json_record(n: int) -> str:
    return base64.b64encode(orjson.dumps({"order": f"o{n}", "total": n})).decode()


def test_inspect_reads_the_whole_queue_and_groups_duplicates(queue: Queue) -> None:
    letters = [letter(n, json_record(n)) for n in range(LETTERS)]
    queue.sink().send(letters)
    # Duplicates, as a sender without the ledger would make them (at-least-once).
    queue.sink(ledger=False).send(letters[:DUPLICATES])

    inspected = queue.dlq("inspect", "--json", "--samples", "2")
    assert inspected.exit_code == 0, inspected.output
    report = orjson.loads(inspected.stdout)
    assert report["messages"] == LETTERS + DUPLICATES
    assert report["distinct_letters"] == LETTERS
    assert report["duplicates"] == DUPLICATES
    assert report["by_reason"] == {"projection_error": LETTERS}
    doubled = [entry for entry in report["letters"] if len(entry["message_ids"]) == 2]
    assert len(doubled) == DUPLICATES
    # JSON payloads are shown as JSON, not base64.
    sample = report["samples"][0]["record"]
    assert sample["data_encoding"] == "json" and sample["Data"]["order"].startswith("o")
    # Looking hid nothing: every message is visible again at once.
    assert queue.visible() == LETTERS + DUPLICATES


def test_inspect_stops_at_max_distinct_letters_and_shows_binary_as_base64(
    queue: Queue,
) -> None:
    binary = base64.b64encode(b"\xf3\x89\x9a\xc2 KPL-ish bytes").decode()
    queue.sink().send([letter(0, binary), *(letter(n) for n in range(1, 30))])
    inspected = queue.dlq("inspect", "--json", "--max", "5", "--samples", "30")
    report = orjson.loads(inspected.stdout)
    assert report["distinct_letters"] == 5
    text = queue.dlq("inspect", "--samples", "30")
    assert text.exit_code == 0, text.output
    assert "30 messages read: 30 distinct letters, 0 duplicates" in text.output
    full = orjson.loads(queue.dlq("inspect", "--json", "--samples", "30").stdout)
    (sample,) = [s for s in full["samples"] if s["event_id"] == "e0"]
    assert sample["record"] == {**sample["record"], "Data": binary, "data_encoding": "base64"}


def test_purge_needs_yes_then_deletes_letters_envelopes_and_ledger_entries(
    queue: Queue,
) -> None:
    big = letter(1, "x" * 300_000)  # stored in S3
    queue.sink().send([big, letter(2), replace(letter(3), projection="other")])
    assert queue.ledger_letters() == 3

    refused = queue.dlq("purge")  # no terminal, no --yes
    assert refused.exit_code == 1 and "add --yes" in refused.output
    assert queue.visible() == 3
    aborted = queue.dlq("purge", input="n\n")
    assert aborted.exit_code == 1 and queue.visible() == 3
    dry = queue.dlq("purge", "--dry-run")
    assert dry.exit_code == 0 and "would delete about 3 messages" in dry.output

    one = queue.dlq("purge", "--projection", "other", "--yes")
    assert one.exit_code == 0, one.output
    assert "deleted: 1; kept: 2" in one.output
    done = queue.dlq("purge", "--yes")
    assert done.exit_code == 0, done.output
    assert "deleted: 2; kept: 0" in done.output
    assert queue.visible() == 0
    assert queue.s3.list_objects_v2(Bucket=queue.bucket).get("KeyCount") == 0
    assert queue.ledger_letters() == 0


def test_delete_removes_only_the_named_messages_and_reports_unknown_ids(queue: Queue) -> None:
    queue.sink().send([letter(n) for n in range(5)])
    ids = [
        entry["message_ids"][0]
        for entry in orjson.loads(queue.dlq("inspect", "--json").stdout)["letters"]
    ]

    refused = queue.dlq("delete", "--id", ids[0])
    assert refused.exit_code == 1 and queue.visible() == 5
    done = queue.dlq("delete", "--id", ids[0], "--id", ids[1], "--yes")
    assert done.exit_code == 0, done.output
    assert "deleted: 2; not found: 0" in done.output
    assert queue.visible() == 3 and queue.ledger_letters() == 3
    missing = queue.dlq("delete", "--id", ids[0], "--yes")
    assert missing.exit_code == 1 and f"{ids[0]}: not in the queue" in missing.output
    assert queue.visible() == 3
