"""The projection that opens docs/projections.md, run exactly as written against DynamoDB.

The code and the TOML entry are read from the page itself, loaded by import path like any
configured projection, migrated, and fed batches through the daemon's Pipeline: if the API
moves, this test fails until the page follows.
"""

from __future__ import annotations

import re
import threading
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from consumer.config import load_settings
from consumer.observability.metrics import Metrics
from consumer.pipeline.apply import FailurePolicy, Pipeline
from consumer.pipeline.prefetch import FetchedBatch
from consumer.record import ChangeRecord
from consumer.resources import SharedResources
from consumer.runtimes.projection_loader import load_projections

PAGE = Path(__file__).resolve().parents[2] / "docs" / "projections.md"


def first_block(language: str) -> str:
    """The first fenced block of `language` under "## A complete projection"."""
    section = PAGE.read_text().split("## A complete projection", 1)[1].split("\n## ", 1)[0]
    match = re.search(rf"```{language}\n(.*?)```", section, re.DOTALL)
    assert match is not None, f"no {language} block in the example"
    return match.group(1)


def change(n: int, event: str, pk: str, email: str | None = None) -> ChangeRecord:
    keys = {"PK": pk, "SK": "PROFILE"}
    image = None if email is None else {**keys, "email": email}
    return ChangeRecord(
        source="dynamodb",
        stream="arn:aws:dynamodb:us-east-1:123456789012:table/App/stream/1",
        shard_id="shardId-1",
        sequence_number=str(1000 + n),
        event_name=event,  # type: ignore[arg-type]
        keys=keys,
        new_image=image if event != "REMOVE" else None,
        old_image=None,
        approximate_creation_time=None,
    )


def test_the_documented_projection_runs_as_written(
    tmp_path: Path,
    moto_endpoint: str,
    aws_client: Callable[..., Any],
    unique_name: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "user_emails.py").write_text(first_block("python"))
    monkeypatch.syspath_prepend(str(tmp_path))
    entry = tomllib.loads(first_block("toml"))["projections"][0]
    assert entry["class"] == "user_emails:UserEmailProjection"
    table = unique_name("UserEmails")
    entry["settings"]["table"] = table
    settings = load_settings(
        None,
        source={"kind": "dynamodb", "table": "App"},
        aws={"endpoint_url": moto_endpoint, "region": "us-east-1"},
        projections=[entry],
    )
    resources = SharedResources(settings.aws, settings.postgres)
    (projection,) = load_projections(settings.projections, resources)
    metrics = Metrics()
    pipeline = Pipeline(
        stream="s",
        shard_id="shardId-1",
        projections=[projection],
        metrics=metrics,
        dead_letters=None,
        policy=FailurePolicy(),
        abandon=threading.Event(),
    )
    batch = [
        change(1, "INSERT", "USER#ann", "ann@example.com"),
        change(2, "INSERT", "USER#bob", "bob@example.com"),
        change(3, "INSERT", "ORDER#1"),
        change(4, "MODIFY", "USER#ann", "ann@example.org"),
        change(5, "REMOVE", "USER#bob"),
    ]
    try:
        projection.migrate()
        projection.migrate()  # idempotent
        pipeline.process(FetchedBatch(batch))
        # Replayed (new record objects, as a redelivery makes them): every user write is stale.
        pipeline.process(FetchedBatch([change(n, "INSERT", "USER#ann", "old@x") for n in (1, 4)]))
    finally:
        projection.close()
        resources.close()
    items = aws_client("dynamodb").scan(TableName=table, ConsistentRead=True)["Items"]
    stored = {i["user_id"]["S"]: i.get("email", {}).get("S") for i in items}
    assert stored == {"ann": "ann@example.org", "bob": None}

    def counted(outcome: str) -> float | None:
        return metrics.registry.get_sample_value(
            "stream_projector_records_total", {"projection": "user_emails", "outcome": outcome}
        )

    assert (counted("applied"), counted("filtered"), counted("stale_skipped")) == (4, 1, 2)
    aws_client("dynamodb").delete_table(TableName=table)
