"""deploy/ecs against botocore's RegisterTaskDefinition and CreateService input shapes."""

from __future__ import annotations

import copy
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore.validate import ParamValidator

ROOT = Path(__file__).resolve().parents[2]
ECS = ROOT / "deploy" / "ecs"


@pytest.fixture(scope="module")
def task() -> dict[str, Any]:
    """The task definition (RegisterTaskDefinition input)."""
    return json.loads((ECS / "task-definition.json").read_text())


@pytest.fixture(scope="module")
def service() -> dict[str, Any]:
    """The service (CreateService input)."""
    return json.loads((ECS / "service.json").read_text())


def shape_errors(operation: str, params: dict[str, Any]) -> str:
    """botocore's report on params for an ECS operation; empty when valid."""
    model = botocore.session.get_session().get_service_model("ecs")
    shape = model.operation_model(operation).input_shape
    return ParamValidator().validate(params, shape).generate_report()


def test_task_definition_matches_register_task_definition(task: dict[str, Any]) -> None:
    assert shape_errors("RegisterTaskDefinition", task) == ""


def test_service_matches_create_service(service: dict[str, Any]) -> None:
    assert shape_errors("CreateService", service) == ""


def test_shape_check_rejects_broken_copies(task: dict[str, Any], service: dict[str, Any]) -> None:
    typo = copy.deepcopy(task)
    typo["containerDefinitions"][0]["stopTimout"] = 30
    assert "Unknown parameter" in shape_errors("RegisterTaskDefinition", typo)
    wrong = copy.deepcopy(service)
    wrong["desiredCount"] = "2"
    assert "Invalid type" in shape_errors("CreateService", wrong)


def container(task: dict[str, Any]) -> dict[str, Any]:
    """The daemon's container definition."""
    (only,) = task["containerDefinitions"]
    return only


def env(task: dict[str, Any]) -> dict[str, str]:
    """The container's plain environment."""
    return {e["name"]: e["value"] for e in container(task)["environment"]}


def test_stop_timeout_outlasts_the_shutdown_deadline(task: dict[str, Any]) -> None:
    spec = container(task)
    deadline = int(env(task)["STREAM_PROJECTOR_SHUTDOWN__DEADLINE_SECONDS"])
    assert deadline < spec["stopTimeout"] <= 120  # Fargate's maximum


def test_container_is_hardened_and_logs_to_cloudwatch(task: dict[str, Any]) -> None:
    spec = container(task)
    assert task["requiresCompatibilities"] == ["FARGATE"]
    assert task["networkMode"] == "awsvpc"
    assert re.fullmatch(r"[1-9]\d*:\d+", spec["user"])
    assert spec["readonlyRootFilesystem"] is True
    mounts = {m["containerPath"]: m["sourceVolume"] for m in spec["mountPoints"]}
    assert mounts["/tmp"] in {v["name"] for v in task["volumes"]}
    assert spec["logConfiguration"]["logDriver"] == "awslogs"
    for role in ("taskRoleArn", "executionRoleArn"):
        assert re.fullmatch(r"arn:aws:iam::\d{12}:role/[\w+=,.@-]+", task[role])


def test_health_check_hits_healthz_on_the_mapped_port(task: dict[str, Any]) -> None:
    spec = container(task)
    (mapping,) = spec["portMappings"]
    command = spec["healthCheck"]["command"]
    assert command[0] == "CMD"
    assert f"127.0.0.1:{mapping['containerPort']}/healthz" in command[-1]
    assert int(env(task)["STREAM_PROJECTOR_HTTP__PORT"]) == mapping["containerPort"]


def test_service_runs_two_fargate_tasks_of_this_family(
    task: dict[str, Any], service: dict[str, Any]
) -> None:
    assert service["taskDefinition"] == task["family"]
    assert service["launchType"] == "FARGATE"
    assert service["desiredCount"] == 2
    assert service["deploymentConfiguration"]["deploymentCircuitBreaker"]["enable"] is True


def test_start_command_writes_the_config_and_execs_the_daemon(
    task: dict[str, Any], tmp_path: Path
) -> None:
    spec = container(task)
    assert spec["entryPoint"] == ["sh", "-c"]
    (script,) = spec["command"]
    assert "/tmp/" in script, "the config must be written to the writable /tmp volume"
    # Stand-in daemon: reports its pid, argv and the config file it was given.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "stream-projector"
    fake.write_text(
        f"#!{sys.executable}\nimport os, sys\n"
        "path = sys.argv[sys.argv.index('--config') + 1]\n"
        "print(os.getpid(), sys.argv[1:], repr(open(path).read()))\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    toml = 'application = "trip-search"\n[shutdown]\ndeadline_seconds = 20\n'
    process = subprocess.Popen(
        ["sh", "-c", script.replace("/tmp/", f"{tmp_path}/")],
        env={
            **os.environ,
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "STREAM_PROJECTOR_CONFIG_TOML": toml,
        },
        stdout=subprocess.PIPE,
        text=True,
    )
    out, _ = process.communicate(timeout=30)
    assert process.returncode == 0
    pid, rest = out.split(" ", 1)
    # exec: the daemon replaces the shell, so ECS's SIGTERM reaches it and not sh.
    assert int(pid) == process.pid
    assert rest.startswith("['run', '--config',")
    assert repr(toml) in rest
