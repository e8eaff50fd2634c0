"""SqsDeadLetterSink against moto's SQS and S3: batches, attributes, FIFO, S3 for big letters."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from consumer.dead_letters.letter import DeadLetter
from consumer.dead_letters.sqs import MAX_MESSAGE_BYTES, SqsDeadLetterSink, dedup_id
from consumer.errors import TransientError
from tests.fixtures.servers import free_port


def letter(n: int, payload: str = "", projection: str = "trip_search") -> DeadLetter:
    now = time.time()
    return DeadLetter(
        source="kinesis",
        stream="orders",
        shard_id="shardId-000000000001",
        sequence_number=str(49_000 + n),
        sub_sequence_number=0,
        event_id=f"e{n}",
        approximate_creation_time=now,
        projection=projection,
        reason="projection_error",
        error_type="ValueError",
        error_message="boom",
        attempts=3,
        first_failure_time=now,
        last_failure_time=now,
        record={"Data": payload or f"record-{n}", "PartitionKey": f"pk{n}"},
    )


def drain(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    """Every message now in the queue (received and deleted)."""
    messages: list[dict[str, Any]] = []
    while True:
        got = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
        ).get("Messages", [])
        if not got:
            return messages
        messages.extend(got)
        for m in got:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])


class CountingSqs:
    """Counts SendMessageBatch calls and the entries in each, passing them to moto."""

    def __init__(self, sqs: Any) -> None:
        self._sqs = sqs
        self.batches: list[int] = []

    def send_message_batch(self, **kwargs: Any) -> Any:
        self.batches.append(len(kwargs["Entries"]))
        return self._sqs.send_message_batch(**kwargs)


@pytest.fixture
def sqs(aws_client: Callable[..., Any]) -> Any:
    return aws_client("sqs")


def test_letters_go_in_batches_of_ten_with_filterable_attributes(
    sqs: Any, unique_name: Callable[[str], str]
) -> None:
    url = sqs.create_queue(QueueName=unique_name("dlq"))["QueueUrl"]
    counting = CountingSqs(sqs)
    SqsDeadLetterSink(counting, url).send([letter(n) for n in range(25)])
    assert counting.batches == [10, 10, 5]
    messages = drain(sqs, url)
    bodies = sorted((orjson.loads(m["Body"]) for m in messages), key=lambda b: b["event_id"])
    assert len(bodies) == 25
    assert bodies[0]["record"] == {"Data": "record-0", "PartitionKey": "pk0"}
    assert bodies[0]["sequence_number"] == "49000" and bodies[0]["attempts"] == 3
    attrs = {k: v["StringValue"] for k, v in messages[0]["MessageAttributes"].items()}
    assert attrs == {
        "reason": "projection_error",
        "projection": "trip_search",
        "source": "kinesis",
        "error_type": "ValueError",
    }


def test_batches_stay_under_the_total_size_limit(
    sqs: Any, unique_name: Callable[[str], str]
) -> None:
    url = sqs.create_queue(QueueName=unique_name("dlq"))["QueueUrl"]
    counting = CountingSqs(sqs)
    # Four letters of ~100 KiB each: at most two fit in one 256 KiB call.
    SqsDeadLetterSink(counting, url).send([letter(n, "x" * 100_000) for n in range(4)])
    assert counting.batches == [2, 2]
    assert len(drain(sqs, url)) == 4


def test_fifo_queue_groups_by_shard_and_a_retried_send_is_not_duplicated(
    sqs: Any, unique_name: Callable[[str], str]
) -> None:
    url = sqs.create_queue(
        QueueName=unique_name("dlq") + ".fifo", Attributes={"FifoQueue": "true"}
    )["QueueUrl"]
    letters = [letter(n) for n in range(3)]
    SqsDeadLetterSink(sqs, url).send(letters)
    # A new process (nothing remembered) sends the same letters again: SQS deduplicates.
    SqsDeadLetterSink(sqs, url).send(letters)
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"])[
        "Messages"
    ]
    assert [orjson.loads(m["Body"])["event_id"] for m in got] == ["e0", "e1", "e2"]
    assert {m["Attributes"]["MessageGroupId"] for m in got} == {"shardId-000000000001"}
    assert got[0]["Attributes"]["MessageDeduplicationId"] == dedup_id(letters[0])


def test_an_envelope_over_the_sqs_limit_is_stored_in_s3_with_a_pointer(
    aws_client: Callable[..., Any], sqs: Any, unique_name: Callable[[str], str]
) -> None:
    s3, bucket = aws_client("s3"), unique_name("letters")
    s3.create_bucket(Bucket=bucket)
    url = sqs.create_queue(QueueName=unique_name("dlq"))["QueueUrl"]
    big = "y" * (MAX_MESSAGE_BYTES + 1000)
    SqsDeadLetterSink(sqs, url, s3=s3, bucket=bucket).send([letter(7, big), letter(8)])
    by_event = {
        orjson.loads(m["Body"])["event_id"]: orjson.loads(m["Body"]) for m in drain(sqs, url)
    }
    message = by_event["e7"]
    assert "record" not in message
    assert message["reason"] == "projection_error" and message["sequence_number"] == "49007"
    assert message["s3"]["bucket"] == bucket
    stored = orjson.loads(s3.get_object(Bucket=bucket, Key=message["s3"]["key"])["Body"].read())
    assert stored["record"]["Data"] == big
    assert message["envelope_bytes"] > MAX_MESSAGE_BYTES
    assert by_event["e8"]["record"]["Data"] == "record-8"


def test_an_oversized_envelope_without_a_bucket_is_not_skipped(
    sqs: Any, unique_name: Callable[[str], str]
) -> None:
    url = sqs.create_queue(QueueName=unique_name("dlq"))["QueueUrl"]
    with pytest.raises(TransientError, match=r"dead_letter\.bucket is not set"):
        SqsDeadLetterSink(sqs, url).send([letter(1, "z" * MAX_MESSAGE_BYTES)])


def test_an_unreachable_queue_raises_transient(aws_client: Callable[..., Any]) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    sqs = aws_client("sqs", endpoint_url=dead)
    with pytest.raises(TransientError):
        SqsDeadLetterSink(sqs, f"{dead}/123456789012/gone").send([letter(1)])


class PartlyRefusing:
    """A fake: SQS refusing some entries of a batch is a fault moto cannot produce on demand.

    Refuses the entry with Id "1" for the first `refusals` calls, accepts everything else.
    """

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.sent: list[list[str]] = []

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> Any:
        self.sent.append([orjson.loads(e["MessageBody"])["event_id"] for e in Entries])
        ok = [e for e in Entries if e["Id"] != "1" or self.refusals <= 0]
        failed = [e for e in Entries if e not in ok]
        self.refusals -= 1
        return {
            "Successful": [{"Id": e["Id"]} for e in ok],
            "Failed": [
                {"Id": e["Id"], "Code": "InternalError", "SenderFault": False} for e in failed
            ],
        }


def test_a_partial_batch_failure_resends_only_the_refused_entries() -> None:
    fake = PartlyRefusing(refusals=1)
    SqsDeadLetterSink(fake, "q").send([letter(n) for n in range(3)])
    assert fake.sent == [["e0", "e1", "e2"], ["e1"]]


def test_a_partial_failure_that_persists_raises_and_a_retry_sends_only_the_rest() -> None:
    fake = PartlyRefusing(refusals=3)
    sink = SqsDeadLetterSink(fake, "q")
    letters = [letter(n) for n in range(3)]
    with pytest.raises(TransientError, match="1 of 3 refused"):
        sink.send(letters)
    sink.send(letters)  # the pipeline's retry: the delivered letters are not sent twice
    assert fake.sent[-1] == ["e1"]
