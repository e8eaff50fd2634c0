"""`dlq inspect` and `dlq redrive` on real parts (kinesis-local, moto's SQS and DynamoDB): after
the projection is fixed, a redrive makes the read model equal a clean run's."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from consumer.cli.dlq import dlq
from consumer.config import load_settings
from consumer.leases.store import DynamoDBLeaseStore
from consumer.record import ChangeRecord
from projections.projection import Outcome, Resources
from tests.fixtures.servers import wait_until
from tests.support.daemon import FAST_LEASES, FAST_POLLING, daemon_thread
from tests.support.streams import kinesis_stream

PROJECTION = "tests.consumer.dead_letters.test_redrive:GuardedItems"


class GuardedItems:
    """Last change per key wins, guarded by stream position; until fixed, "bug" values raise."""

    def __init__(self, name: str, client: Any, table: str, fixed: bool) -> None:
        self.name = name
        self._client = client
        self._table = table
        self._fixed = fixed

    @classmethod
    def from_config(
        cls, name: str, settings: Mapping[str, Any], resources: Resources
    ) -> GuardedItems:
        return cls(name, resources.aws_client("dynamodb"), settings["table"], settings["fixed"])

    def apply(self, records: Sequence[ChangeRecord]) -> Outcome:
        outcome = Outcome()
        for record in records:
            image = record.new_image or {}
            if not self._fixed and str(image["value"]).startswith("bug"):
                raise ValueError(f"cannot handle {image['value']}")
            try:
                self._client.put_item(
                    TableName=self._table,
                    Item={
                        "key": {"S": image["key"]},
                        "value": {"S": image["value"]},
                        "position": {"S": record.position},
                    },
                    ConditionExpression="attribute_not_exists(#k) OR #p < :p",
                    ExpressionAttributeNames={"#k": "key", "#p": "position"},
                    ExpressionAttributeValues={":p": {"S": record.position}},
                )
                outcome.applied += 1
            except self._client.exceptions.ConditionalCheckFailedException:
                outcome.stale_skipped += 1
        return outcome


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


def table_state(dynamodb: Any, table: str) -> dict[str, str]:
    items = dynamodb.scan(TableName=table, ConsistentRead=True)["Items"]
    return {item["key"]["S"]: item["value"]["S"] for item in items}


def create_table(dynamodb: Any, table: str) -> None:
    dynamodb.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "key", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "key", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )


def config(path: Path, stream: str, queue_url: str, table: str, fixed: bool) -> Path:
    path.write_text(
        f"""
[source]
kind = "kinesis"
stream_name = "{stream}"

[dead_letter]
queue_url = "{queue_url}"

[[projections]]
name = "items"
class = "{PROJECTION}"
settings = {{ table = "{table}", fixed = {"true" if fixed else "false"} }}
"""
    )
    return path


def test_redrive_after_the_fix_gives_the_clean_runs_read_model(
    aws_client: Callable[..., Any],
    moto_endpoint: str,
    kinesis_local_endpoint: str,
    unique_name: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL_KINESIS", kinesis_local_endpoint)
    kinesis, dynamodb, sqs = (
        aws_client("kinesis", kinesis_local_endpoint),
        aws_client("dynamodb"),
        aws_client("sqs"),
    )
    name, table, clean_table = unique_name("redrive"), unique_name("items"), unique_name("clean")
    kinesis_stream(kinesis, name, 1)
    create_table(dynamodb, table)
    create_table(dynamodb, clean_table)
    queue_url = sqs.create_queue(QueueName=name)["QueueUrl"]
    buggy = config(tmp_path / "buggy.toml", name, queue_url, table, fixed=False)
    fixed = config(tmp_path / "fixed.toml", name, queue_url, table, fixed=True)
    clean = config(tmp_path / "clean.toml", name, queue_url, clean_table, fixed=True)
    response = kinesis.put_records(
        StreamName=name,
        Records=[
            {"Data": orjson.dumps({"key": k, "value": v}), "PartitionKey": k} for k, v in changes()
        ],
    )
    last = response["Records"][-1]["SequenceNumber"]

    def run_to_the_end(path: Path) -> None:
        settings = load_settings(
            path,
            application=unique_name("app"),
            leases=FAST_LEASES,
            polling=FAST_POLLING,
            retry={"base_seconds": 0.01, "cap_seconds": 0.2},
        )
        store = DynamoDBLeaseStore(dynamodb, settings.lease_table)
        with daemon_thread(settings) as daemon:
            wait_until(
                lambda: (
                    daemon.worker.running_shards()
                    and (lease := store.get(daemon.worker.running_shards()[0])) is not None
                    and lease.checkpoint == last
                ),
                what="checkpoint at the last record",
            )

    run_to_the_end(clean)  # the clean run: the fixed projection from the start
    run_to_the_end(buggy)  # the bad deploy: six records dead-lettered
    expected = table_state(dynamodb, clean_table)
    assert expected["k2"] == "bug-k2-v3" and expected["k1"] == "ok-k1-v3"
    assert table_state(dynamodb, table) != expected

    runner = CliRunner()
    inspected = runner.invoke(dlq, ["inspect", "--config", str(fixed), "--json"])
    assert inspected.exit_code == 0, inspected.output
    report = orjson.loads(inspected.output)
    assert report["by_reason"] == {"projection_error": 6}
    assert report["by_projection"] == {"items": 6}
    assert len(report["samples"]) == 3 and "record" in report["samples"][0]

    dry = runner.invoke(dlq, ["redrive", "--config", str(fixed), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "would apply: 6" in dry.output
    other = runner.invoke(dlq, ["redrive", "--config", str(fixed), "--projection", "other"])
    assert "applied and deleted: 0; skipped: 6" in other.output
    still_buggy = runner.invoke(dlq, ["redrive", "--config", str(buggy)])
    assert still_buggy.exit_code == 1 and "failed: 6" in still_buggy.output
    assert table_state(dynamodb, table) != expected  # nothing was deleted or applied so far

    redriven = runner.invoke(dlq, ["redrive", "--config", str(fixed), "--rate", "100/s"])
    assert redriven.exit_code == 0, redriven.output
    assert "applied and deleted: 6; skipped: 0; failed: 0" in redriven.output
    assert table_state(dynamodb, table) == expected
    empty = orjson.loads(runner.invoke(dlq, ["inspect", "--config", str(fixed), "--json"]).output)
    assert empty["seen"] == 0
