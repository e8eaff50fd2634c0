"""One version source: consumer/__init__.py `__version__`; everything else reads or matches it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import yaml

import consumer

ROOT = Path(__file__).resolve().parents[1]


def test_the_package_metadata_reads_the_version_from_the_package() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert version("stream-projector") == consumer.__version__


def test_the_cli_reports_that_version() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "consumer", "--version"], capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 0 and done.stdout.split()[-1] == consumer.__version__


def test_the_dockerfile_takes_the_version_label_from_the_build_not_a_literal() -> None:
    (line,) = re.findall(r"^ARG VERSION.*$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert line == "ARG VERSION=unknown"


def test_the_example_deployments_run_the_image_of_this_version() -> None:
    kustomization = yaml.safe_load((ROOT / "deploy/k8s/kustomization.yaml").read_text())
    assert {image["newTag"] for image in kustomization["images"]} == {consumer.__version__}
    task = json.loads((ROOT / "deploy/ecs/task-definition.json").read_text())
    images = {c["image"] for c in task["containerDefinitions"] if "stream-projector" in c["image"]}
    assert images and {image.rsplit(":", 1)[1] for image in images} == {consumer.__version__}
