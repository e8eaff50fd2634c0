"""What every subcommand shares: the --config option, loading settings, asking before acting."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from consumer.config import Settings, load_settings
from consumer.errors import StreamProjectorError

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="STREAM_PROJECTOR_CONFIG",
    required=True,
    help="The daemon's TOML settings file (every setting can also come from the environment "
    "as STREAM_PROJECTOR_<SECTION>__<KEY>).",
)
yes_option = click.option("--yes", is_flag=True, help="Do it without asking.")


@contextmanager
def one_line_errors() -> Iterator[None]:
    """An expected failure (consumer/errors.py) ends the command with its one-line message."""
    try:
        yield
    except StreamProjectorError as exc:
        raise click.ClickException(str(exc)) from None


def settings_from(config_path: Path) -> Settings:
    """The validated settings, or one line naming the bad setting."""
    with one_line_errors():
        return load_settings(config_path)


def confirm(what: str, yes: bool) -> None:
    """Go ahead with `what` only if --yes was given or a person at a terminal says so.

    Without a terminal (a script, CI) and without --yes, nothing is done and the command
    exits 1: a destructive step is never taken by default.
    """
    if yes:
        return
    if sys.stdin.isatty():
        click.confirm(f"{what}?", abort=True)
        return
    raise click.ClickException(f"not done: {what}; add --yes to do it, or --dry-run to only look")
