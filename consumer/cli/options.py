"""Options several commands share, so each is spelled and validated once."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from consumer.errors import OperatorInputError

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="STREAM_PROJECTOR_CONFIG",
    required=True,
    help=(
        "TOML settings file (or STREAM_PROJECTOR_CONFIG). Every setting can also come from "
        "the environment as STREAM_PROJECTOR_<SECTION>__<KEY>."
    ),
)


def log_level_option(default: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """`--log-level`, one of LOG_LEVELS in any case; an unknown level is a usage error."""
    return click.option(
        "--log-level",
        type=click.Choice(LOG_LEVELS, case_sensitive=False),
        default=default,
        show_default=True,
        callback=lambda _ctx, _param, value: value.upper(),
        help="Threshold of the JSON log lines on stdout.",
    )


yes_option = click.option("--yes", is_flag=True, help="Do it without asking.")


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
    raise OperatorInputError(f"not done: {what}; add --yes to do it, or --dry-run to only look")
