"""docker-compose.yml against the compose-spec JSON schema, plus what the schema cannot see.

The schema is the compose-spec's own `compose_spec.json`, as shipped in the npm package
dclint (schemas/compose.schema.json), which scripts/install-test-deps.sh installs into .tools.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.fixtures.tools import missing

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
SCHEMA = ROOT / ".tools" / "node_modules" / "dclint" / "schemas" / "compose.schema.json"
DOCKERFILE = ROOT / "Dockerfile"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The compose file as data."""
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    """A validator for the compose-spec schema; absent schema fails in CI, skips elsewhere."""
    if not SCHEMA.exists():
        missing("the compose-spec schema of the npm package dclint in .tools")
    schema = json.loads(SCHEMA.read_text())
    # The file says draft-07 in a spelling jsonschema does not look up, so name it directly.
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def schema_errors(validator: jsonschema.protocols.Validator, doc: dict[str, Any]) -> list[str]:
    """Every schema violation, as 'path: message'."""
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)
    ]


def test_compose_file_matches_the_compose_spec_schema(
    compose: dict[str, Any], validator: jsonschema.protocols.Validator
) -> None:
    assert schema_errors(validator, compose) == []


@pytest.mark.parametrize(
    "breakage",
    [
        lambda d: d["services"]["consumer"].update(healthchek={"test": ["CMD", "true"]}),
        lambda d: d["services"]["consumer"]["depends_on"]["seeder"].update(condition="finished"),
        lambda d: d["services"]["moto"].update(ports="5000:5000"),
    ],
    ids=["misspelt-key", "bad-condition", "ports-not-a-list"],
)
def test_schema_rejects_a_broken_copy(
    compose: dict[str, Any], validator: jsonschema.protocols.Validator, breakage: Any
) -> None:
    broken = copy.deepcopy(compose)
    breakage(broken)
    assert schema_errors(validator, broken) != []


def dependency_problems(compose: dict[str, Any]) -> list[str]:
    """depends_on entries that name no service, or wait on nothing that can be known."""
    services = compose["services"]
    problems = []
    for name, service in services.items():
        for dep, rule in service.get("depends_on", {}).items():
            if dep not in services:
                problems.append(f"{name} depends on unknown service {dep}")
                continue
            condition = rule.get("condition")
            if condition == "service_healthy" and "healthcheck" not in services[dep]:
                problems.append(f"{name} waits for {dep} to be healthy, but it has no healthcheck")
            if condition == "service_completed_successfully" and services[dep].get(
                "restart", "no"
            ) not in ("no", False):
                problems.append(f"{name} waits for {dep} to complete, but {dep} restarts")
    return problems


def test_every_dependency_names_a_service_with_a_meaningful_condition(
    compose: dict[str, Any],
) -> None:
    assert dependency_problems(compose) == []
    broken = copy.deepcopy(compose)
    broken["services"]["consumer"]["depends_on"]["sedeer"] = {
        "condition": "service_completed_successfully"
    }
    del broken["services"]["postgres"]["healthcheck"]
    assert len(dependency_problems(broken)) == 3  # sedeer, postgres x2 (migrate, consumer)


def test_consumer_waits_for_emulator_database_seed_and_migration(compose: dict[str, Any]) -> None:
    depends = compose["services"]["consumer"]["depends_on"]
    assert depends["moto"]["condition"] == "service_healthy"
    assert depends["postgres"]["condition"] == "service_healthy"
    for one_shot in ("seeder", "migrate", "aws-init"):
        assert depends[one_shot]["condition"] == "service_completed_successfully"
    prometheus = compose["services"]["prometheus"]["depends_on"]
    assert prometheus["consumer"]["condition"] == "service_healthy"


def bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(host path, container path) of every relative bind mount of a service."""
    mounts = []
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            mounts.append((source, target))
    return mounts


def test_every_mounted_file_exists_in_the_repo(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for source, _ in bind_mounts(service):
            assert (ROOT / source).is_file(), f"{name} mounts {source}, missing from the repo"


def test_images_are_pinned_and_build_targets_exist(compose: dict[str, Any]) -> None:
    stages = set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", DOCKERFILE.read_text(), re.M))
    for name, service in compose["services"].items():
        if "build" in service:
            assert service["build"]["target"] in stages, name
        else:
            image = service["image"]
            assert re.search(r":[\w.-]+$", image) and not image.endswith(":latest"), image
    assert compose["services"]["moto"]["image"].startswith("motoserver/moto:")
    assert compose["services"]["postgres"]["image"] == "postgres:15"
    assert compose["services"]["prometheus"]["image"].startswith("prom/prometheus:v")


def consumer_config(compose: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    """The host file mounted where the consumer's --config points, and its parsed TOML."""
    service = compose["services"]["consumer"]
    command = service["command"]
    target = command[command.index("--config") + 1]
    sources = [src for src, dst in bind_mounts(service) if dst == target]
    assert sources, f"--config {target} is not a mounted file"
    path = ROOT / sources[0]
    return path, tomllib.loads(path.read_text())


def test_consumer_config_path_matches_its_mount_and_ports(compose: dict[str, Any]) -> None:
    path, config = consumer_config(compose)
    assert path == ROOT / "deploy" / "config" / "trip-search.toml"
    service = compose["services"]["consumer"]
    port = config["http"]["port"]
    assert f"{port}:{port}" in service["ports"]
    assert f":{port}/healthz" in " ".join(service["healthcheck"]["test"])
    grace = int(service["stop_grace_period"].rstrip("s"))
    assert grace > config["shutdown"]["deadline_seconds"]
    assert service["environment"]["AWS_ENDPOINT_URL"] == "http://moto:5000"
    assert "migrate" in compose["services"]["migrate"]["command"]


def test_seeder_runs_the_demo_in_seed_only_mode_against_moto(compose: dict[str, Any]) -> None:
    seeder = compose["services"]["seeder"]
    assert seeder["build"]["target"] == "demo"
    command = seeder["command"]
    assert command[:2] == ["demo", "--seed-only"]
    assert command[command.index("--endpoint-url") + 1] == "http://moto:5000"


def test_prometheus_mounts_the_shared_config_and_rules(compose: dict[str, Any]) -> None:
    mounts = dict(bind_mounts(compose["services"]["prometheus"]))
    assert mounts["./deploy/prometheus/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    assert mounts["./deploy/prometheus/alerts.yml"] == "/etc/prometheus/alerts.yml"
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    rules = [str(r) for r in config.get("rule_files", [])]
    assert any(r in ("alerts.yml", "/etc/prometheus/alerts.yml") for r in rules), rules
    targets = [
        t
        for job in config.get("scrape_configs", [])
        for static in job.get("static_configs", [])
        for t in static.get("targets", [])
    ]
    consumer = compose["services"]["consumer"]
    names = {"consumer", *consumer.get("networks", {}).get("default", {}).get("aliases", [])}
    _, settings = consumer_config(compose)
    wanted = {f"{name}:{settings['http']['port']}" for name in names}
    assert wanted & set(targets), f"Prometheus scrapes {targets}, the consumer is {wanted}"


def test_aws_init_script_creates_the_queue_and_bucket_the_consumer_uses(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    moto_server = pytest.importorskip("moto.server")
    init = compose["services"]["aws-init"]
    consumer_env = compose["services"]["consumer"]["environment"]
    queue_name = consumer_env["STREAM_PROJECTOR_DEAD_LETTER__QUEUE_URL"].rsplit("/", 1)[1]
    assert init["environment"]["DLQ_NAME"] == queue_name
    bucket = consumer_env["STREAM_PROJECTOR_DEAD_LETTER__BUCKET"]
    assert init["environment"]["ENVELOPE_BUCKET"] == bucket
    (script,) = [src for src, _ in bind_mounts(init)]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        env = {
            **os.environ,
            **{k: str(v) for k, v in init["environment"].items()},
            "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        }
        for _ in range(2):  # a second `docker compose up` must succeed as well
            done = subprocess.run(
                [sys.executable, str(ROOT / script)],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 0, done.stderr
        assert f"/{queue_name}" in done.stdout
        assert f"bucket={bucket}" in done.stdout
    finally:
        server.stop()
