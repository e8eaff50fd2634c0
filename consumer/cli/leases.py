"""`stream-projector leases list|reset`: look at the lease table, and move checkpoints safely."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from consumer.cli.options import config_option, confirm, yes_option
from consumer.config import Settings, load_settings
from consumer.errors import OperatorInputError

if TYPE_CHECKING:
    from consumer.leases.lease import Lease
    from consumer.leases.store import DynamoDBLeaseStore

TO_HELP = (
    "Where the checkpoints go: TRIM_HORIZON (replay all the stream keeps), LATEST (skip to "
    "the tip the next worker sees), AT_TIMESTAMP T (Kinesis; ISO 8601 or epoch seconds) or "
    "SEQUENCE S (as if S had just been checkpointed: reading resumes after it; one --shard)."
)


def _store(settings: Settings) -> DynamoDBLeaseStore:
    from consumer.leases.store import DynamoDBLeaseStore
    from consumer.resources import SharedResources

    resources = SharedResources(settings.aws, settings.postgres)
    return DynamoDBLeaseStore(resources.aws_client("dynamodb"), settings.lease_table)


def _keep_furthest(settings: Settings) -> Callable[[Lease], None]:
    """Before a checkpoint moves, the ledger keeps the furthest one the shard had, so letters
    from before a rewind stay redrivable (consumer/dead_letters/validation.py)."""
    if not settings.dead_letter.queue_url:
        return lambda lease: None  # no dead letters, nothing to keep redrivable
    from consumer.dead_letters.ledger import DeadLetterLedger
    from consumer.resources import SharedResources

    resources = SharedResources(settings.aws, settings.postgres)
    ledger = DeadLetterLedger(resources.aws_client("dynamodb"), settings.dead_letter_ledger_table)

    def keep(lease: Lease) -> None:
        if lease.checkpoint.isdigit() or lease.finished:
            ledger.record_checkpoint(lease.lease_key, lease.checkpoint)

    return keep


@click.group()
def leases() -> None:
    """The lease table: one lease per shard, with its owner and checkpoint."""


@leases.command("list")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_command(config_path: Path, as_json: bool) -> None:
    """Every lease: shard, parents, owner, counter, checkpoint, last renewal and state.

    STATE is finished, waiting_parent, running, expired (owned but not renewed for
    leases.failover_seconds: its worker is gone and any worker may take it) or unowned.
    """
    from consumer.leases.coordinator import initial_position_note
    from consumer.observability.status import render_json, render_lease_table, rows_from_leases

    settings = load_settings(config_path)
    found = _store(settings).list_leases()
    rows = rows_from_leases(
        found, now=time.time(), failover_seconds=settings.leases.failover_seconds
    )
    click.echo(render_json(rows) if as_json else render_lease_table(rows))
    note = initial_position_note(settings.source.initial_position, found)
    if note is not None:
        click.echo(f"note: {note}", err=as_json)


@leases.command("reset")
@config_option
@click.option(
    "--to",
    "to_kind",
    required=True,
    metavar="TRIM_HORIZON|LATEST|AT_TIMESTAMP T|SEQUENCE S",
    help=TO_HELP,
)
@click.argument("value", required=False, metavar="[T|S]")
@click.option(
    "--shard", "shards", multiple=True, metavar="ID", help="Only this shard (repeatable)."
)
@click.option("--dry-run", is_flag=True, help="Show the plan; change nothing.")
@click.option(
    "--force",
    is_flag=True,
    help="Also reset leases a live worker holds: it is fenced (counter bump) and stops the shard.",
)
@yes_option
def reset_command(
    config_path: Path,
    to_kind: str,
    value: str | None,
    shards: tuple[str, ...],
    dry_run: bool,
    force: bool,
    yes: bool,
) -> None:
    """Move checkpoints, like Kafka's consumer-group offset reset.

    Shows the plan first. With --dry-run that is all; otherwise it asks (or needs --yes).
    A shard held by a live worker is refused, and then nothing is changed, unless --force.
    Every write is conditional on the lease as read and bumps its counter, so its old owner
    can never checkpoint over the reset. Exits 1 when a shard is refused or was not reset.
    """
    from consumer.leases.reset import (
        ResetTarget,
        check_sequence,
        execute_reset,
        plan_reset,
    )
    from consumer.observability.status import aligned

    target = ResetTarget.parse(to_kind, value)
    settings = load_settings(config_path)
    if target.kind == "AT_TIMESTAMP" and settings.source.kind != "kinesis":
        raise OperatorInputError(
            "--to AT_TIMESTAMP: DynamoDB Streams has no AT_TIMESTAMP iterator; "
            "use TRIM_HORIZON, LATEST or SEQUENCE"
        )
    store = _store(settings)
    steps = plan_reset(
        store.list_leases(),
        target,
        shards=shards,
        now=time.time(),
        failover_seconds=settings.leases.failover_seconds,
        force=force,
    )
    if target.sequence is not None:
        from consumer.resources import SharedResources
        from consumer.runtimes.daemon import build_source

        source = build_source(settings, SharedResources(settings.aws, settings.postgres))
        check_sequence(source, steps[0].lease.lease_key, target.sequence)
    click.echo(
        aligned(
            ("SHARD", "OWNER", "CHECKPOINT", "NEW CHECKPOINT", "ACTION"),
            [
                (
                    step.lease.lease_key,
                    step.lease.lease_owner or "-",
                    step.lease.checkpoint,
                    target.describe() if step.action == "reset" else "-",
                    step.action + (f": {step.reason}" if step.reason else ""),
                )
                for step in steps
            ],
        )
    )
    refused = [step for step in steps if step.action == "refused"]
    if refused:
        raise OperatorInputError(
            f"nothing changed: {len(refused)} shard(s) refused (see ACTION); "
            "stop the workers first, or add --force"
        )
    changing = sum(step.action == "reset" for step in steps)
    if dry_run or not changing:
        click.echo(f"dry run: {changing} lease(s) would be reset" if dry_run else "nothing to do")
        return
    confirm(f"reset {changing} lease(s) of {settings.lease_table} to {target.describe()}", yes)
    results = execute_reset(store, steps, target, _keep_furthest(settings))
    for result in results:
        click.echo(f"{result.shard_id}: {result.detail}")
    if any(result.outcome == "conflict" for result in results):
        raise SystemExit(1)
