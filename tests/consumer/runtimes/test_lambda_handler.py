"""The Lambda handler on documented and seed event shapes, against moto's DynamoDB and SQS.

Lambda's runtime is not available here: the handler is called as Lambda calls it, with a
context object that has the one method the handler reads (the time left).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from consumer.config import Settings, load_settings
from consumer.record import position_of
from consumer.runtimes import lambda_handler
from consumer.runtimes.lambda_handler import StreamEventHandler
from consumer.runtimes.stack import CONFIG_ENV, build_stack
from tests.fixtures.aws import REGION
from tests.fixtures.servers import free_port
from tests.support.recording import RecordingProjection, create_recording_table, recorded

pytestmark = pytest.mark.integration

SAMPLES = Path(__file__).parents[1] / "samples" / "lambda"
CONFIGURED_STREAM = (
    "arn:aws:dynamodb:us-east-1:123456789012:table/Users/stream/2023-03-15T00:00:00.000"
)
SHARD = "shardId-000000000006"
KINESIS_ARN = "arn:aws:kinesis:us-east-2:123456789012:stream/lambda-stream"


class Context:
    """Stands in for Lambda's context: the invocation ends `seconds` after it was made."""

    def __init__(self, seconds: float) -> None:
        self._deadline = time.monotonic() + seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def sample(name: str) -> dict[str, Any]:
    return json.loads((SAMPLES / name).read_text())


def kinesis_event(*bodies: dict[str, Any]) -> dict[str, Any]:
    """A Lambda Kinesis event in the documented shape, one record per JSON body."""
    records = []
    for n, body in enumerate(bodies, start=1):
        sequence = f"4959033827149025660855969254092570275932420852313751{n:04d}"
        records.append(
            {
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": body["key"],
                    "sequenceNumber": sequence,
                    "data": base64.b64encode(json.dumps(body).encode()).decode(),
                    "approximateArrivalTimestamp": 1545084650.987 + n,
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": f"{SHARD}:{sequence}",
                "eventName": "aws:kinesis:record",
                "invokeIdentityArn": "arn:aws:iam::123456789012:role/lambda-role",
                "awsRegion": "us-east-2",
                "eventSourceARN": KINESIS_ARN,
            }
        )
    return {"Records": records}


@pytest.fixture
def env(
    moto_endpoint: str,
    aws_client: Callable[..., Any],
    unique_name: Callable[[str], str],
    tmp_path: Path,
) -> dict[str, Any]:
    """A recording table, a dead-letter queue and the TOML file naming them."""
    table = unique_name("lambda-recorded")
    create_recording_table(aws_client("dynamodb"), table)
    queue_url = aws_client("sqs").create_queue(QueueName=unique_name("lambda-dlq"))["QueueUrl"]
    config = tmp_path / "lambda.toml"
    config.write_text(
        f"""
application = "lambda-test"
[source]
kind = "dynamodb"
stream_arn = "{CONFIGURED_STREAM}"
[aws]
region = "{REGION}"
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
def settings(env: dict[str, Any]) -> Settings:
    return load_settings(env["config"])


@pytest.fixture
def handle(settings: Settings) -> Iterator[StreamEventHandler]:
    stack = build_stack(settings)
    yield StreamEventHandler(stack)
    stack.close()


def applied(aws_client: Callable[..., Any], table: str) -> list[tuple[str, str, str]]:
    items = recorded(aws_client("dynamodb"), table)
    return sorted((i["position"], i["record_key"], i["shard_id"]) for i in items)


def dead_letters(aws_client: Callable[..., Any], queue_url: str) -> list[dict[str, Any]]:
    messages = (
        aws_client("sqs")
        .receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        .get("Messages", [])
    )
    return sorted((json.loads(m["Body"]) for m in messages), key=lambda e: e["sequence_number"])


def test_documented_dynamodb_event_is_applied_in_order(
    handle: StreamEventHandler, env: dict[str, Any], aws_client: Callable[..., Any]
) -> None:
    assert handle(sample("dynamodb_docs.json"), Context(30)) == {"batchItemFailures": []}
    assert [position for position, _, _ in applied(aws_client, env["table"])] == [
        position_of("4421584500000000017450439091"),
        position_of("4421584500000000017450439092"),
        position_of("4421584500000000017450439093"),
    ]
    assert dead_letters(aws_client, env["queue_url"]) == []


def test_seed_004_event_without_source_arn_decodes_for_the_configured_stream(
    handle: StreamEventHandler, env: dict[str, Any], aws_client: Callable[..., Any]
) -> None:
    assert handle(sample("dynamodb_seed_004.json"), Context(30)) == {"batchItemFailures": []}
    assert [(p, s) for p, _, s in applied(aws_client, env["table"])] == [
        (position_of("12345678901234567890"), "unknown"),
        (position_of("12345678901234567891"), "unknown"),
    ]


def test_seed_000_event_without_sequence_number_is_dead_lettered_not_projected(
    handle: StreamEventHandler, env: dict[str, Any], aws_client: Callable[..., Any]
) -> None:
    # Nothing can order this change against others, so applying it could overwrite newer state.
    assert handle(sample("dynamodb_seed_000.json"), Context(30)) == {"batchItemFailures": []}
    assert applied(aws_client, env["table"]) == []
    [letter] = dead_letters(aws_client, env["queue_url"])
    assert letter["reason"] == "decode_error"
    assert "sequence number" in letter["error_message"]
    assert letter["stream"] == CONFIGURED_STREAM
    assert letter["record"]["dynamodb"]["Keys"] == {
        "PK": {"S": "PRODUCT#p001"},
        "SK": {"S": "METADATA"},
    }


def test_documented_kinesis_event_with_plain_text_is_dead_lettered_and_the_shard_moves_on(
    handle: StreamEventHandler, env: dict[str, Any], aws_client: Callable[..., Any]
) -> None:
    assert handle(sample("kinesis_docs.json"), Context(30)) == {"batchItemFailures": []}
    letters = dead_letters(aws_client, env["queue_url"])
    assert [(e["reason"], e["stream"], e["shard_id"]) for e in letters] == [
        ("decode_error", "lambda-stream", SHARD),
        ("decode_error", "lambda-stream", SHARD),
    ]
    assert letters[0]["record"]["Data"] == "SGVsbG8sIHRoaXMgaXMgYSB0ZXN0Lg=="


def test_kinesis_poison_record_is_dead_lettered_with_the_envelope_not_reported(
    handle: StreamEventHandler, env: dict[str, Any], aws_client: Callable[..., Any]
) -> None:
    event = kinesis_event(
        {"key": "a", "n": 1}, {"key": "b", "n": 2, "marker": "poison"}, {"key": "c", "n": 3}
    )
    assert handle(event, Context(30)) == {"batchItemFailures": []}
    sequences = [r["kinesis"]["sequenceNumber"] for r in event["Records"]]
    assert applied(aws_client, env["table"]) == [
        (position_of(sequences[0]), "a", SHARD),
        (position_of(sequences[2]), "c", SHARD),
    ]
    [letter] = dead_letters(aws_client, env["queue_url"])
    assert letter["sequence_number"] == sequences[1]
    assert (letter["projection"], letter["reason"], letter["error_type"]) == (
        "recording",
        "projection_error",
        "ValueError",
    )
    assert (letter["source"], letter["stream"], letter["shard_id"]) == (
        "kinesis",
        "lambda-stream",
        SHARD,
    )
    assert letter["attempts"] >= 1
    assert json.loads(base64.b64decode(letter["record"]["Data"]))["marker"] == "poison"


def test_transient_failure_is_retried_only_while_time_is_left_then_reported_from_the_first(
    settings: Settings,
) -> None:
    # A real outage: the sink's endpoint refuses connections (no botocore retries, so every
    # attempt fails at once and the handler's own retry loop is what is measured).
    unreachable = boto3.client(
        "dynamodb",
        region_name=REGION,
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=1),
    )
    stack = build_stack(settings, projections=[RecordingProjection("recording", unreachable, "t")])
    handle = StreamEventHandler(stack)
    event = kinesis_event({"key": "a", "n": 1}, {"key": "b", "n": 2})
    result = handle(event, Context(2.0))
    # A transient failure is given up only when the budget runs out (BatchAbandoned), and then
    # the batch is reported from its first record; it is never dead-lettered.
    assert result == {
        "batchItemFailures": [{"itemIdentifier": event["Records"][0]["kinesis"]["sequenceNumber"]}]
    }
    retries = stack.metrics.registry.get_sample_value(
        "stream_projector_retries_total", {"kind": "transient"}
    )
    assert retries is not None and retries > 3
    assert stack.metrics.registry.get_sample_value(
        "stream_projector_dead_letters_total", {"reason": "projection_error"}
    ) in (None, 0.0)


class FrozenContext:
    """A context whose remaining time does not move: the budget's arithmetic, without a clock."""

    def __init__(self, millis: int) -> None:
        self.millis = millis

    def get_remaining_time_in_millis(self) -> int:
        return self.millis


@pytest.mark.parametrize(
    ("remaining_millis", "budget"),
    [(2_000, 1.6), (10_000, 8.0), (60_000, 55.0), (900_000, 895.0), (0, 0.0)],
)
def test_the_retry_budget_keeps_a_reserve_before_lambdas_deadline(
    settings: Settings, remaining_millis: int, budget: float
) -> None:
    """Retries stop a fifth of the time left (at most 5 s) before Lambda would kill the
    invocation, leaving time for the write in flight and the response."""
    handle = StreamEventHandler(build_stack(settings, projections=[]))
    assert handle._budget_seconds(FrozenContext(remaining_millis)) == pytest.approx(budget)


def test_module_handler_builds_once_per_container_from_the_config_env(
    env: dict[str, Any], aws_client: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CONFIG_ENV, str(env["config"]))
    lambda_handler.container_handler.cache_clear()
    try:
        first = lambda_handler.handler(sample("dynamodb_docs.json"), Context(30))
        built = lambda_handler.container_handler()
        second = lambda_handler.handler(sample("dynamodb_seed_004.json"), Context(30))
        assert lambda_handler.container_handler() is built
    finally:
        lambda_handler.container_handler.cache_clear()
    assert first == second == {"batchItemFailures": []}
    assert len(applied(aws_client, env["table"])) == 5
