"""The end-to-end benchmark's dynalite read model and JSON stream pages still work (no timing)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from moto.dynamodbstreams.responses import DynamoDBStreamsHandler
from moto.server import ThreadedMotoServer

from bench import dynalite, latency_proxy, moto_json_pages
from bench.end_to_end_bench import REGION, main, make_changes, write_changes
from bench.processes import stop
from consumer.aws import make_client
from consumer.demo.trip_saga import create_trip_table
from projections.scenarios.trip_search import create_table
from projections.sinks.dynamodb import DynamoDBSink, GuardedUpdate
from tests.fixtures.servers import free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def dynalite_url() -> Iterator[str]:
    """dynalite installed (npm, on first use) and started; skipped naming the fix if it can't."""
    try:
        process, url = dynalite.start()
    except dynalite.DynaliteUnavailable as error:
        pytest.skip(str(error))
    yield url
    stop(process)


def test_a_guarded_update_through_the_proxy_applies_then_refuses_an_older_position(
    dynalite_url: str,
) -> None:
    proxy, url = latency_proxy.start(dynalite_url, 1)
    try:
        client = make_client("dynamodb", REGION, url)
        create_table(client, "TripSearch-probe")  # the read model's table, GSI included
        sink = DynamoDBSink(client, "TripSearch-probe")

        def update(position: str, status: str) -> GuardedUpdate:
            return GuardedUpdate({"trip_id": "t1"}, "flight_position", position, {"s": status})

        assert sink._write_one(update("0002", "CONFIRMED")) is True
        assert sink._write_one(update("0001", "PENDING")) is False  # stale: the guard refused
        item = client.get_item(TableName="TripSearch-probe", Key={"trip_id": {"S": "t1"}})
        assert item["Item"]["s"] == {"S": "CONFIRMED"}
        assert item["Item"]["flight_position"] == {"S": "0002"}
    finally:
        stop(proxy)


def test_both_sides_project_the_same_read_model_on_dynalite(
    dynalite_url: str, moto_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--endpoint-url", moto_endpoint, "--read-model-server", "dynalite", "--json"]
    code = main([*argv, "--changes", "60", "--trips", "10", "--proxy-latency-ms", "1"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["same_read_model"] is True
    assert report["documents"] == [10, 10]
    # A writes once per record; B coalesces repeated keys within a page.
    assert report["A"]["read_model_updates"] == 60
    assert report["B"]["read_model_updates"] < 60


def test_without_npm_the_benchmark_says_so_in_one_line(
    moto_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(dynalite, "HOME", tmp_path)  # not installed here
    monkeypatch.setattr(dynalite.shutil, "which", lambda name: None)
    code = main(["--endpoint-url", moto_endpoint, "--read-model-server", "dynalite"])
    error = capsys.readouterr().err
    assert code == 1
    assert error.count("\n") == 1 and "install them (Debian: apt-get install nodejs npm)" in error


def test_json_pages_parse_to_what_motos_serializer_writes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        url = f"http://127.0.0.1:{port}"
        dynamodb, streams = (make_client(s, REGION, url) for s in ("dynamodb", "dynamodbstreams"))
        create_trip_table(dynamodb, "TripTable-pages")
        write_changes(dynamodb, "TripTable-pages", make_changes(60, 10))
        arn = dynamodb.describe_table(TableName="TripTable-pages")["Table"]["LatestStreamArn"]
        shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]

        def page() -> dict[str, Any]:
            iterator = streams.get_shard_iterator(
                StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
            )["ShardIterator"]
            bodies: list[bytes] = []
            event = "after-call.dynamodb-streams.GetRecords"
            keep = lambda http_response, **_: bodies.append(http_response.content)  # noqa: E731
            streams.meta.events.register(event, keep)
            streams.get_records(ShardIterator=iterator)
            streams.meta.events.unregister(event, keep)
            body: dict[str, Any] = json.loads(bodies[0])
            body.pop("NextShardIterator")  # a new iterator each call
            return body

        by_moto = page()
        monkeypatch.setattr(DynamoDBStreamsHandler, "get_records", moto_json_pages.get_records)
        by_json = page()
    finally:
        server.stop()
    assert len(by_json["Records"]) == 60
    assert by_json == by_moto
