"""The Dockerfile, checked offline (tests/container builds and runs it where an engine exists).

Its structure is parsed (stages, users, entrypoint, healthcheck), its HEALTHCHECK command is run
against a local HTTP server, and the builder's install steps are replayed in a fresh virtual
environment against this checkout.
"""

from __future__ import annotations

import fnmatch
import http.server
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
CONFIG_PATH = "/etc/stream-projector/config.toml"
# Debian packages and tools that would mean a compiler toolchain in the final image.
COMPILER_WORDS = {
    "gcc",
    "g++",
    "cc",
    "clang",
    "build-essential",
    "make",
    "cpp",
    "gfortran",
    "libc6-dev",
    "python3-dev",
    "rustc",
    "cargo",
}


@dataclass
class Stage:
    """One FROM ... AS name block of a Dockerfile."""

    base: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        """Arguments of every instruction with this keyword, in order."""
        return [args for key, args in self.instructions if key == keyword]


def parse_dockerfile(text: str) -> list[Stage]:
    """Split a Dockerfile into stages of (KEYWORD, arguments), joining continued lines."""
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if current and line.startswith("#"):
            continue  # comments inside a continued instruction are dropped by Docker too
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = args.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else ""
            stages.append(Stage(base=parts[0], name=name))
        elif stages:
            stages[-1].instructions.append((keyword, args.strip()))
    return stages


def by_name(stages: list[Stage]) -> dict[str, Stage]:
    """Stages by their AS name."""
    return {stage.name: stage for stage in stages if stage.name}


def chain(stages: list[Stage], stage: Stage) -> list[Stage]:
    """The stage and every stage it is built FROM, nearest first."""
    named = by_name(stages)
    result = [stage]
    while result[-1].base in named:
        result.append(named[result[-1].base])
    return result


def env_of(stages: list[Stage], stage: Stage) -> dict[str, str]:
    """ENV key=value pairs in force in a stage (inherited ones first, later ones win)."""
    env: dict[str, str] = {}
    for ancestor in reversed(chain(stages, stage)):
        for args in ancestor.all("ENV"):
            for token in shlex.split(args):
                key, _, value = token.partition("=")
                env[key] = value
    return env


def final_stage_problems(text: str) -> list[str]:
    """Everything wrong with the final (default) stage: what the image actually ships."""
    stages = parse_dockerfile(text)
    final = stages[-1]
    problems: list[str] = []
    lineage = chain(stages, final)
    root_base = lineage[-1].base
    if not re.fullmatch(r"(\$\{PYTHON_IMAGE\}|python:3\.11-slim[\w.-]*)", root_base):
        problems.append(f"final image is not built on python:3.11-slim: {root_base}")
    if "${PYTHON_IMAGE}" in root_base and not re.search(
        r"ARG PYTHON_IMAGE=python:3\.11-slim", text
    ):
        problems.append("PYTHON_IMAGE does not default to python:3.11-slim")
    for stage in lineage:
        for run in stage.all("RUN"):
            words = set(re.split(r"[\s;&|=]+", run))
            if bad := words & COMPILER_WORDS:
                problems.append(f"stage {stage.name!r} installs a compiler: {sorted(bad)}")
    for stage in lineage:
        for copy in stage.all("COPY"):
            match = re.match(r"--from=(\S+)\s+(\S+)\s+(\S+)", copy)
            if match and match.group(2) != "/opt/venv":
                problems.append(f"final image copies more than the venv: {copy}")
    users = [u for s in reversed(lineage) for u in s.all("USER")]
    if not users:
        problems.append("no USER: the image runs as root")
    elif not re.fullmatch(r"[1-9]\d*(:\d+)?", users[-1]):
        problems.append(f"USER must be a numeric non-root uid, not {users[-1]!r}")
    return problems


def exec_form_problems(text: str) -> list[str]:
    """Problems with how the final stage starts the daemon and is stopped."""
    final = parse_dockerfile(text)[-1]
    problems: list[str] = []
    entry, cmd = final.all("ENTRYPOINT"), final.all("CMD")
    try:
        if json.loads(entry[-1]) != ["stream-projector"]:
            problems.append(f"ENTRYPOINT is not exec-form stream-projector: {entry[-1]}")
    except (IndexError, json.JSONDecodeError):
        problems.append(f"ENTRYPOINT missing or not exec form: {entry}")
    try:
        if json.loads(cmd[-1]) != ["run", "--config", CONFIG_PATH]:
            problems.append(f"CMD is not run --config {CONFIG_PATH}: {cmd[-1]}")
    except (IndexError, json.JSONDecodeError):
        problems.append(f"CMD missing or not exec form: {cmd}")
    if final.all("STOPSIGNAL") != ["SIGTERM"]:
        problems.append("STOPSIGNAL is not SIGTERM")
    return problems


@pytest.fixture(scope="module")
def text() -> str:
    """The Dockerfile under test."""
    return DOCKERFILE.read_text()


def test_final_stage_ships_only_the_venv_on_slim_python_as_numeric_non_root(text: str) -> None:
    assert final_stage_problems(text) == []
    final = parse_dockerfile(text)[-1]
    assert final.name == "runtime", "the default build target must be the daemon"


@pytest.mark.parametrize(
    ("mutation", "expected"),
    [
        ("USER 10001:10001\nEXPOSE", "USER root\nEXPOSE"),
        ("WORKDIR /tmp\n", "WORKDIR /tmp\nRUN apt-get install -y gcc\n"),
        ("COPY --from=builder /opt/venv /opt/venv", "COPY --from=builder /wheels /wheels"),
    ],
)
def test_final_stage_check_rejects_root_compilers_and_extra_copies(
    text: str, mutation: str, expected: str
) -> None:
    runtime_at = text.index("AS runtime")
    head, tail = text[:runtime_at], text[runtime_at:]
    assert mutation in tail
    broken = head + tail.replace(mutation, expected, 1)
    assert final_stage_problems(broken) != []


def test_entrypoint_is_exec_form_so_sigterm_reaches_python(text: str) -> None:
    assert exec_form_problems(text) == []
    broken = text.replace(
        'ENTRYPOINT ["stream-projector"]\nCMD', "ENTRYPOINT stream-projector\nCMD"
    )
    assert exec_form_problems(broken) != []


def test_image_sets_python_env_and_oci_labels(text: str) -> None:
    stages = parse_dockerfile(text)
    env = env_of(stages, stages[-1])
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1"
    assert env.get("PYTHONUNBUFFERED") == "1"
    labels = " ".join(stages[-1].all("LABEL"))
    for key in ("title", "description", "version", "revision", "created", "source", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels


def test_demo_target_exists_for_the_compose_seeder(text: str) -> None:
    stages = by_name(parse_dockerfile(text))
    assert "demo" in stages
    copies = stages["demo"].all("COPY")
    assert any("--from=demo-builder /opt/venv" in c for c in copies)
    installs = " ".join(stages["demo-builder"].all("RUN"))
    assert "[demo]" in installs


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[http.server.HTTPServer]:
    """A local /healthz that answers _Health.status; yields the server (its port is free)."""
    server = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    _Health.status = 200


def healthcheck_argv(text: str) -> list[str]:
    """The HEALTHCHECK's exec-form command of the final stage."""
    (health,) = parse_dockerfile(text)[-1].all("HEALTHCHECK")
    argv = json.loads(health[health.index("CMD") + 3 :])
    assert isinstance(argv, list)
    return argv


def test_healthcheck_command_passes_on_200_and_fails_otherwise(
    text: str, health_server: http.server.HTTPServer
) -> None:
    argv = healthcheck_argv(text)
    assert argv[0] == "python", "slim images have python but no curl"
    port = str(health_server.server_address[1])
    env = {**os.environ, "STREAM_PROJECTOR_HTTP__PORT": port}
    run = [sys.executable, *argv[1:]]
    assert subprocess.run(run, env=env, timeout=20).returncode == 0
    _Health.status = 503
    assert subprocess.run(run, env=env, timeout=20, capture_output=True).returncode != 0
    health_server.shutdown()
    health_server.server_close()
    assert subprocess.run(run, env=env, timeout=20, capture_output=True).returncode != 0


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore drops a context path: the last matching pattern wins."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern.lstrip("!").rstrip("/")
        if any(fnmatch.fnmatch(c, pat) or (pat == "**") for c in candidates):
            result = not negate
    return result


def dockerignore_patterns() -> list[str]:
    """Non-comment lines of .dockerignore."""
    lines = DOCKERIGNORE.read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]


def builder_copy_sources(text: str) -> list[str]:
    """Context paths the builder COPYs (not --from other stages)."""
    sources: list[str] = []
    for copy in by_name(parse_dockerfile(text))["builder"].all("COPY"):
        if copy.startswith("--from"):
            continue
        sources.extend(copy.split()[:-1])
    return sources


def test_dockerignore_keeps_every_build_input_and_drops_local_state(text: str) -> None:
    patterns = dockerignore_patterns()
    for source in builder_copy_sources(text):
        assert not ignored(source, patterns), f"{source} is COPYed but .dockerignore drops it"
        assert not ignored(f"{source}/__init__.py", patterns) or not (ROOT / source).is_dir()
    for local in (".venv/bin/python", ".git/HEAD", "tests/conftest.py", ".tools/x"):
        assert ignored(local, patterns), f"{local} would be sent to the Docker daemon"
    assert ignored("consumer/__pycache__/x.pyc", patterns)


def test_dockerignore_check_notices_a_dropped_input(text: str) -> None:
    patterns = [*dockerignore_patterns(), "consumer/"]
    assert any(ignored(src, patterns) for src in builder_copy_sources(text))


def replay_builder(text: str, work: Path) -> Path:
    """Run the builder stage's RUN steps against a copy of its COPY inputs; return the venv."""
    stages = parse_dockerfile(text)
    builder = by_name(stages)["builder"]
    src = work / "src"
    src.mkdir()
    for source in builder_copy_sources(text):
        origin = ROOT / source
        if origin.is_dir():
            shutil.copytree(origin, src / source, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(origin, src / source)
    env = {**os.environ, **env_of(stages, builder)}
    venv = work / "venv"
    # The image's absolute paths become temporary ones; PIP_NO_CACHE_DIR is dropped so the
    # replay uses pip's cache and stays quick when it is warm.
    env.update(VIRTUAL_ENV=str(venv), WHEEL_DIR=str(work / "wheels"))
    env.pop("PIP_NO_CACHE_DIR", None)
    env["PATH"] = os.pathsep.join(
        [str(venv / "bin"), str(Path(sys.executable).parent), os.environ.get("PATH", "")]
    )
    for run in builder.all("RUN"):
        assert not run.startswith("["), "builder RUN steps are shell form"
        if "pip" not in run and "venv" not in run:
            continue
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", run],
            cwd=src,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert done.returncode == 0, f"RUN {run}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return venv


def test_builder_install_steps_work_in_a_fresh_venv(text: str, tmp_path: Path) -> None:
    venv = replay_builder(text, tmp_path)
    script = venv / "bin" / "stream-projector"
    assert script.exists(), "the console script was not installed"
    python = venv / "bin" / "python"
    # Not an editable install: the package must come from site-packages, not this checkout.
    where = subprocess.run(
        [str(python), "-c", "import consumer, projections; print(consumer.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert where.returncode == 0, where.stderr
    assert str(venv) in where.stdout
    helped = subprocess.run(
        [str(script), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert helped.returncode == 0, helped.stderr
    assert "run" in helped.stdout
    compilers = [name for name in ("gcc", "cc", "clang") if (venv / "bin" / name).exists()]
    assert compilers == []
