"""The dead-letter ledger on moto's DynamoDB, and the sink using it against moto's SQS:
a replay or a race sends a letter once; a send that failed after the claim is sent later."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from consumer.config import load_settings
from consumer.dead_letters.ledger import Claim, DeadLetterLedger
from consumer.dead_letters.signing import Signer
from consumer.dead_letters.sqs import SqsDeadLetterSink
from consumer.errors import TransientError
from consumer.leases.coordinator import LeaseCoordinator
from consumer.leases.lease import SENTINEL_SHARD_END, SENTINEL_TRIM_HORIZON, Lease
from consumer.leases.store import DynamoDBLeaseStore
from tests.consumer.dead_letters.test_sqs import drain, letter
from tests.fixtures.servers import free_port, wait_until
from tests.support.daemon import FAST_LEASES, FAST_POLLING, daemon_thread
from tests.support.recording import create_recording_table
from tests.support.streams import kinesis_stream


@pytest.fixture
def ledger_table(aws_client: Callable[..., Any], unique_name: Callable[[str], str]) -> str:
    name = unique_name("dead-letters")
    DeadLetterLedger(aws_client("dynamodb"), name).ensure_table()
    return name


def ledger(aws_client: Callable[..., Any], table: str, **options: Any) -> DeadLetterLedger:
    return DeadLetterLedger(aws_client("dynamodb"), table, **options)


def test_the_table_is_created_with_ttl_and_creating_it_again_is_harmless(
    aws_client: Callable[..., Any], ledger_table: str
) -> None:
    dynamodb = aws_client("dynamodb")
    ttl = dynamodb.describe_time_to_live(TableName=ledger_table)["TimeToLiveDescription"]
    assert ttl["AttributeName"] == "expires_at" and ttl["TimeToLiveStatus"] == "ENABLED"
    ledger(aws_client, ledger_table).ensure_table()


def test_a_claim_is_ours_to_send_then_sent_for_everyone(
    aws_client: Callable[..., Any], ledger_table: str
) -> None:
    first, second = ledger(aws_client, ledger_table), ledger(aws_client, ledger_table)
    assert first.claim("a") is Claim.SEND
    assert first.claim("a") is Claim.SEND  # our own retry after a failed send
    assert second.claim("a") is Claim.BUSY  # someone is sending it right now
    first.mark_sent("a")
    assert second.claim("a") is Claim.SENT
    first.forget("a")  # the letter left the queue: a new failure is a new letter
    assert second.claim("a") is Claim.SEND


def test_a_claim_whose_sender_died_is_taken_over_after_claim_seconds(
    aws_client: Callable[..., Any], ledger_table: str
) -> None:
    now = [1000.0]
    dead = ledger(aws_client, ledger_table, clock=lambda: now[0])
    alive = ledger(aws_client, ledger_table, clock=lambda: now[0], claim_seconds=60)
    assert dead.claim("a") is Claim.SEND
    now[0] += 59
    assert alive.claim("a") is Claim.BUSY
    now[0] += 2
    assert alive.claim("a") is Claim.SEND


def test_a_shards_furthest_checkpoint_is_kept(
    aws_client: Callable[..., Any], ledger_table: str
) -> None:
    book = ledger(aws_client, ledger_table)
    book.record_checkpoint("s1", "900")
    book.record_checkpoint("s1", "1000")  # longer, so lexically smaller: still further
    book.record_checkpoint("s1", "TRIM_HORIZON")
    book.record_checkpoint("s2", SENTINEL_SHARD_END)
    book.record_checkpoint("s2", "5")
    assert book.shard_checkpoints() == {"s1": "1000", "s2": SENTINEL_SHARD_END}


def test_a_finished_lease_deleted_by_the_coordinator_stays_known_to_the_ledger(
    aws_client: Callable[..., Any], ledger_table: str, unique_name: Callable[[str], str]
) -> None:
    store = DynamoDBLeaseStore(aws_client("dynamodb"), unique_name("leases"))
    store.ensure_table()
    store.create_if_absent(Lease("gone", checkpoint=SENTINEL_SHARD_END))
    book = ledger(aws_client, ledger_table)
    coordinator = LeaseCoordinator(
        store,
        "w1",
        before_delete=lambda lease: book.record_checkpoint(lease.lease_key, lease.checkpoint),
    )
    coordinator.ensure_leases([], "TRIM_HORIZON")
    assert coordinator.delete_finished(set()) == ["gone"]
    assert store.get("gone") is None
    assert book.shard_checkpoints() == {"gone": SENTINEL_SHARD_END}


# -- the sink with its ledger ----------------------------------------------------------------


def sink(
    aws_client: Callable[..., Any], url: str, table: str, sqs: Any = None, **options: Any
) -> SqsDeadLetterSink:
    return SqsDeadLetterSink(
        sqs or aws_client("sqs"),
        url,
        application="shop",
        ledger=ledger(aws_client, table, **options),
    )


def test_a_replay_sends_no_letter_twice(
    aws_client: Callable[..., Any], ledger_table: str, unique_name: Callable[[str], str]
) -> None:
    sqs = aws_client("sqs")
    url = sqs.create_queue(QueueName=unique_name("dlq"))["QueueUrl"]
    letters = [letter(n) for n in range(12)]
    sink(aws_client, url, ledger_table).send(letters)
    # A restarted worker (nothing in memory) replays the same records and fails them again.
    sink(aws_client, url, ledger_table).send([*letters, letter(12)])
    bodies = [orjson.loads(m["Body"]) for m in drain(sqs, url)]
    assert sorted(b["event_id"] for b in bodies) == sorted(f"e{n}" for n in range(13))
    assert {b["application"] for b in bodies} == {"shop"} and bodies[0]["version"] == 2


def test_two_workers_racing_for_a_shard_send_each_letter_once(
    aws_client: Callable[..., Any], ledger_table: str, unique_name: Callable[[str], str]
) -> None:
    # The race as it happens: worker B took the shard while worker A was dead-lettering the
    # same records. Interleaved step by step rather than on two threads: moto's conditional
    # writes are not atomic under concurrent requests (two simultaneous puts can both pass),
    # which DynamoDB's are.
    sqs = aws_client("sqs")
    url = sqs.create_queue(QueueName=unique_name("dlq"))["QueueUrl"]
    letters = [letter(n) for n in range(10)]
    a, b = sink(aws_client, url, ledger_table), sink(aws_client, url, ledger_table)
    assert a.ledger is not None
    for one in letters[:5]:
        assert a.ledger.claim(one.identity) is Claim.SEND  # A is about to send these
    with pytest.raises(TransientError, match=r"5 dead letter.*being sent by another worker"):
        b.send(letters)  # B sends the five A has not claimed, waits for the rest
    a.send(letters)  # A sends its five, finds the others sent
    b.send(letters)  # B's retry: everything is sent
    assert sorted(orjson.loads(m["Body"])["event_id"] for m in drain(sqs, url)) == sorted(
        f"e{n}" for n in range(10)
    )


def test_a_letter_claimed_but_not_sent_is_sent_by_the_next_worker(
    aws_client: Callable[..., Any], ledger_table: str, unique_name: Callable[[str], str]
) -> None:
    sqs = aws_client("sqs")
    url = sqs.create_queue(QueueName=unique_name("dlq"))["QueueUrl"]
    unreachable = aws_client("sqs", endpoint_url=f"http://127.0.0.1:{free_port()}")
    doomed = sink(aws_client, url, ledger_table, sqs=unreachable)
    with pytest.raises(TransientError):
        doomed.send([letter(1)])  # the ledger claim is written, then SQS is unreachable
    assert drain(sqs, url) == []

    # The worker died; the next one waits out the claim, then sends.
    now = [time.time()]
    successor = sink(aws_client, url, ledger_table, clock=lambda: now[0], claim_seconds=30)
    with pytest.raises(TransientError, match="being sent by another worker"):
        successor.send([letter(1)])
    now[0] += 31
    successor.send([letter(1)])
    assert [orjson.loads(m["Body"])["event_id"] for m in drain(sqs, url)] == ["e1"]


def test_fifo_letters_are_deduplicated_by_the_ledger_key(
    aws_client: Callable[..., Any], ledger_table: str, unique_name: Callable[[str], str]
) -> None:
    sqs = aws_client("sqs")
    url = sqs.create_queue(
        QueueName=unique_name("dlq") + ".fifo", Attributes={"FifoQueue": "true"}
    )["QueueUrl"]
    sink(aws_client, url, ledger_table).send([letter(3)])
    (message,) = sqs.receive_message(QueueUrl=url, AttributeNames=["All"])["Messages"]
    assert message["Attributes"]["MessageDeduplicationId"] == letter(3).identity


def test_signed_letters_and_their_s3_pointers_verify(
    aws_client: Callable[..., Any], unique_name: Callable[[str], str]
) -> None:
    sqs, s3 = aws_client("sqs"), aws_client("s3")
    url = sqs.create_queue(QueueName=unique_name("dlq"))["QueueUrl"]
    bucket = unique_name("letters")
    s3.create_bucket(Bucket=bucket)
    signer = Signer(b"s" * 32)
    SqsDeadLetterSink(sqs, url, s3=s3, bucket=bucket, application="shop", signer=signer).send(
        [letter(1), letter(2, "z" * 300_000)]
    )
    by_event = {b["event_id"]: b for b in (orjson.loads(m["Body"]) for m in drain(sqs, url))}
    assert signer.problem(by_event["e1"]) is None
    pointer = by_event["e2"]
    assert signer.problem(pointer) is None and "record" not in pointer
    stored = s3.get_object(Bucket=bucket, Key=pointer["s3"]["key"])["Body"].read()
    assert signer.problem(orjson.loads(stored)) is None
    assert pointer["s3"]["sha256"] == hashlib.sha256(stored).hexdigest()


def test_a_replay_from_trim_horizon_leaves_the_dead_letter_queue_as_it_was(
    aws_client: Callable[..., Any],
    kinesis_local_endpoint: str,
    unique_name: Callable[[str], str],
    kinesis_env: None,
) -> None:
    kinesis, dynamodb, sqs = (
        aws_client("kinesis", kinesis_local_endpoint),
        aws_client("dynamodb"),
        aws_client("sqs"),
    )
    stream, table = unique_name("replay"), unique_name("recorded")
    kinesis_stream(kinesis, stream)
    create_recording_table(dynamodb, table)
    url = sqs.create_queue(QueueName=unique_name("dlq"))["QueueUrl"]
    response = kinesis.put_records(
        StreamName=stream,
        Records=[
            {
                "Data": orjson.dumps({"key": f"k{n}", "marker": "poison" if n % 5 == 0 else ""}),
                "PartitionKey": f"k{n}",
            }
            for n in range(20)
        ],
    )
    last = response["Records"][-1]["SequenceNumber"]
    settings = load_settings(
        None,
        application=unique_name("app"),
        source={"kind": "kinesis", "stream_name": stream},
        leases=FAST_LEASES,
        polling=FAST_POLLING,
        retry={"base_seconds": 0.01, "cap_seconds": 0.1, "max_attempts": 1},
        dead_letter={"queue_url": url},
        projections=[
            {
                "name": "recording",
                "class": "tests.support.recording:RecordingProjection",
                "settings": {"table": table, "fail_on": "poison"},
            }
        ],
    )
    store = DynamoDBLeaseStore(dynamodb, settings.lease_table)

    def run_to_the_end() -> None:
        with daemon_thread(settings):
            wait_until(
                lambda: [lease.checkpoint for lease in store.list_leases()] == [last],
                what="checkpoint at the last record",
            )

    def waiting() -> int:
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"])

    run_to_the_end()
    assert waiting() == 4
    (lease,) = store.list_leases()
    store.reset(lease, SENTINEL_TRIM_HORIZON)
    run_to_the_end()
    assert waiting() == 4
