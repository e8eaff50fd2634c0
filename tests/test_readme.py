"""The README stays in step with the code: every setting and command it must document."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner
from pydantic import BaseModel

from consumer.cli.main import main
from consumer.config import Settings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def setting_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    paths = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            paths.extend(setting_paths(annotation, f"{prefix}{name}."))
        else:
            paths.append(prefix + name)
    return paths


def test_readme_starts_with_the_two_newcomer_commands() -> None:
    head = README.split("\n## ", 1)[0]
    assert "make demo" in head and "make test" in head


def test_every_setting_is_documented() -> None:
    missing = [p for p in setting_paths(Settings) if p != "projections" and f"`{p}`" not in README]
    assert missing == []


def test_every_documented_command_exists() -> None:
    runner = CliRunner()
    for command in ("run", "demo", "migrate", "status", "search trips"):
        assert f"`{command.split()[0]}" in README
        result = runner.invoke(main, [*command.split(), "--help"])
        assert result.exit_code == 0, (command, result.output)


def test_every_option_in_the_commands_table_is_in_the_commands_help() -> None:
    import re

    runner = CliRunner()
    rows = re.findall(r"^\| `([a-z][a-z ]+?) --config FILE([^`]*)` \|", README, re.MULTILINE)
    commands = {command for command, _ in rows}
    assert {"leases list", "leases reset", "dlq inspect", "dlq purge", "dlq delete"} <= commands
    for command, options in rows:
        shown = runner.invoke(main, [*command.split(), "--help"])
        assert shown.exit_code == 0, (command, shown.output)
        for option in re.findall(r"--[a-z-]+", options):
            assert option in shown.output, (command, option)


def test_every_projection_class_named_in_docs_and_configs_imports() -> None:
    import importlib
    import re

    root = Path(__file__).resolve().parents[1]
    texts = [README, *(p.read_text() for p in (root / "deploy" / "config").glob("*.toml"))]
    names = {m for text in texts for m in re.findall(r"projections\.[a-z_.]+:[A-Za-z]+", text)}
    assert names
    for name in sorted(names):
        module, _, attribute = name.partition(":")
        assert hasattr(importlib.import_module(module), attribute), name
