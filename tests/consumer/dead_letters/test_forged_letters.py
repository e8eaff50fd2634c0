"""Forged and malformed messages in a real dead-letter queue (after a real poisoned run):
each kind is refused with its reason and stays in the queue; nothing of it is applied; an S3
pointer into another bucket is never followed; a non-JSON message breaks no tool."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import orjson

from tests.consumer.dead_letters.conftest import Poisoned
from tests.support.guarded import table_state

HIJACK = {"Data": base64.b64encode(orjson.dumps({"key": "k5", "value": "HIJACKED"})).decode()}


def send(poisoned: Poisoned, body: str | bytes) -> str:
    text = body.decode() if isinstance(body, bytes) else body
    return str(
        poisoned.sqs.send_message(QueueUrl=poisoned.queue_url, MessageBody=text)["MessageId"]
    )


def forge(poisoned: Poisoned, template: dict[str, Any], **changes: Any) -> str:
    """Send a copy of a real letter with some fields changed and the record hijacked."""
    letter = {**template, "record": {**template["record"], **HIJACK}, **changes}
    return send(poisoned, orjson.dumps(letter))


def test_forged_letters_of_each_kind_are_refused_and_stay_in_the_queue(
    poisoned: Poisoned, unique_name: Callable[[str], str]
) -> None:
    real = poisoned.letters()
    template = real[0]
    foreign_bucket = unique_name("secrets")
    poisoned.s3.create_bucket(Bucket=foreign_bucket)
    poisoned.s3.put_object(Bucket=foreign_bucket, Key="db.txt", Body=b"password=hunter2")
    pointer = {k: v for k, v in template.items() if k != "record"}
    forged = {
        "application": forge(poisoned, template, application="someone-else"),
        "stream": forge(poisoned, template, stream="some-other-stream"),
        "shard": forge(poisoned, template, shard_id="shardId-000000000099"),
        "position": forge(poisoned, template, sequence_number="9" * 60),
        "refused-pointer": send(
            poisoned,
            orjson.dumps({**pointer, "s3": {"bucket": foreign_bucket, "key": "db.txt"}}),
        ),
        "malformed-text": send(poisoned, "hello, this is not JSON"),
        "malformed-json": send(poisoned, '{"hello": "world"}'),
    }

    inspected = poisoned.dlq("inspect", "--json")
    assert inspected.exit_code == 0, inspected.output
    assert "hunter2" not in inspected.output  # a pointer outside our bucket is not followed
    report = orjson.loads(inspected.stdout)
    assert report["messages"] == 6 + len(forged)
    assert "not JSON" in report["defects"][forged["malformed-text"]]
    assert "outside dead_letter.bucket" in report["defects"][forged["refused-pointer"]]

    dry = poisoned.dlq("redrive", "--dry-run")
    assert dry.exit_code == 1, dry.output  # a dry run says when letters would not go through

    redriven = poisoned.dlq("redrive")
    assert redriven.exit_code == 1
    assert "applied and deleted: 6;" in redriven.output
    assert "refused: 5 (" in redriven.output and "malformed: 2" in redriven.output
    lines = {line.split(":")[0].strip(): line for line in redriven.output.splitlines()}
    for kind in ("application", "stream", "shard", "position"):
        assert f"refused: {kind}:" in lines[forged[kind]], lines[forged[kind]]
    assert "outside dead_letter.bucket" in lines[forged["refused-pointer"]]
    assert "not a dead letter of this application" in lines[forged["malformed-json"]]

    assert set(poisoned.messages()) == set(forged.values())  # every one is still there
    assert "HIJACKED" not in table_state(poisoned.dynamodb, poisoned.table).values()
    stored = poisoned.s3.get_object(Bucket=foreign_bucket, Key="db.txt")["Body"].read()
    assert stored == b"password=hunter2"  # never deleted by a redrive either


def test_unsigned_and_mis_signed_letters_are_refused_when_a_key_is_set(
    signed_poisoned: Poisoned,
) -> None:
    template = signed_poisoned.letters()[0]
    unsigned = forge(signed_poisoned, {k: v for k, v in template.items() if k != "signature"})
    mis_signed = forge(signed_poisoned, template)  # signature kept, record changed
    redriven = signed_poisoned.dlq("redrive")
    assert redriven.exit_code == 1
    assert (
        "applied and deleted: 6;" in redriven.output
        and "refused: 2 (signature 2)" in redriven.output
    )
    lines = {line.split(":")[0].strip(): line for line in redriven.output.splitlines()}
    assert "unsigned" in lines[unsigned] and "bad signature" in lines[mis_signed]
    assert set(signed_poisoned.messages()) == {unsigned, mis_signed}
    assert "HIJACKED" not in table_state(signed_poisoned.dynamodb, signed_poisoned.table).values()


def test_malformed_messages_are_moved_with_quarantine_and_forged_ones_stay(
    poisoned: Poisoned,
) -> None:
    quarantine = poisoned.sqs.create_queue(QueueName=poisoned.stream + "-quarantine")["QueueUrl"]
    template = poisoned.letters()[0]
    garbage = send(poisoned, "a note someone sent to the wrong queue")
    forged = forge(poisoned, template, shard_id="shardId-000000000042")

    redriven = poisoned.dlq("redrive", "--quarantine", quarantine)
    assert redriven.exit_code == 1, redriven.output  # the forged letter is still refused
    assert "quarantined: 1" in redriven.output
    assert set(poisoned.messages()) == {forged}
    moved = poisoned.sqs.receive_message(QueueUrl=quarantine)["Messages"]
    assert [m["Body"] for m in moved] == ["a note someone sent to the wrong queue"]
    assert garbage not in poisoned.messages()
