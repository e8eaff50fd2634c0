"""`stream-projector dlq inspect|redrive|purge|delete`: the dead-letter queue, for operators.

Threat model and what each check stops: docs/failures.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click
import orjson

from consumer.cli.options import config_option, confirm, yes_option
from consumer.config import Settings, load_settings
from consumer.errors import ConfigError

if TYPE_CHECKING:
    from consumer.dead_letters.ledger import DeadLetterLedger
    from consumer.dead_letters.queue import DeadLetterQueue
    from consumer.dead_letters.validation import LetterCheck
    from consumer.resources import SharedResources

SAMPLE_RECORD_CHARS = 2000
LISTED_LETTERS = 20

quarantine_option = click.option(
    "--quarantine",
    metavar="QUEUE_URL",
    help="Move messages that are not dead letters of this application to this queue "
    "(otherwise they are reported and left in place).",
)


def _settings(config_path: Path) -> Settings:
    settings = load_settings(config_path)
    if not settings.dead_letter.queue_url:
        raise ConfigError(
            "dead_letter.queue_url: not set; the dlq tools read the daemon's dead-letter queue "
            "[env STREAM_PROJECTOR_DEAD_LETTER__QUEUE_URL]"
        )
    return settings


def _resources(settings: Settings) -> SharedResources:
    from consumer.resources import SharedResources

    return SharedResources(settings.aws, settings.postgres)


def _queue(settings: Settings, resources: SharedResources) -> DeadLetterQueue:
    from consumer.dead_letters.queue import DeadLetterQueue

    dead_letter = settings.dead_letter
    return DeadLetterQueue(
        resources.aws_client("sqs"),
        dead_letter.queue_url,
        resources.aws_client("s3"),
        bucket=dead_letter.bucket,
        prefix=dead_letter.prefix,
    )


def _ledger(settings: Settings, resources: SharedResources) -> DeadLetterLedger:
    from consumer.dead_letters.ledger import DeadLetterLedger

    return DeadLetterLedger(resources.aws_client("dynamodb"), settings.dead_letter_ledger_table)


def _check(settings: Settings, resources: SharedResources, ledger: DeadLetterLedger) -> LetterCheck:
    """What a letter is checked against: our key, application, stream and shard positions."""
    from consumer.dead_letters.signing import signer_from_setting
    from consumer.dead_letters.validation import LetterCheck, furthest_checkpoints
    from consumer.leases.store import DynamoDBLeaseStore
    from consumer.runtimes.daemon import build_source

    signer = signer_from_setting(
        settings.dead_letter.signing_key, lambda: resources.aws_client("secretsmanager")
    )
    leases = DynamoDBLeaseStore(resources.aws_client("dynamodb"), settings.lease_table)
    return LetterCheck(
        application=settings.application,
        stream=build_source(settings, resources).stream_id,
        positions=furthest_checkpoints(leases.list_leases(), ledger.shard_checkpoints()),
        signer=signer,
    )


def _rate(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        rate = float(value.removesuffix("/s"))
    except ValueError:
        raise click.BadParameter(
            f"expected records per second like 50 or 50/s, got {value!r}"
        ) from None
    if rate <= 0:
        raise click.BadParameter("must be above 0")
    return rate


@click.group()
def dlq() -> None:
    """The dead-letter queue: inspect it, redrive it once the cause is fixed, or remove letters."""


@dlq.command("inspect")
@config_option
@click.option(
    "--max",
    "max_letters",
    default=10_000,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Stop after this many distinct letters (otherwise: when the queue is exhausted).",
)
@click.option("--samples", default=3, show_default=True, type=click.IntRange(0))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (every letter).")
@quarantine_option
def inspect_command(
    config_path: Path, max_letters: int, samples: int, as_json: bool, quarantine: str | None
) -> None:
    """Read the whole queue: letters by reason and projection, duplicates grouped, samples
    with their records decoded. Deletes nothing, and makes every message visible again."""
    from consumer.dead_letters.inspection import inspect

    settings = _settings(config_path)
    resources = _resources(settings)
    report = inspect(_queue(settings, resources), max_letters, samples, quarantine)
    if as_json:
        click.echo(orjson.dumps(report.as_json(), option=orjson.OPT_INDENT_2).decode())
        return
    click.echo(
        f"{report.messages} messages read: {len(report.letters)} distinct letters, "
        f"{report.duplicates} duplicates, {len(report.defects)} not usable "
        f"(about {report.approximate_total} in the queue before)"
    )
    for title, counts in (("reason", report.by_reason), ("projection", report.by_projection)):
        click.echo(f"by {title}:")
        for name, count in counts.most_common():
            click.echo(f"  {count:>8}  {name}")
    for message_id, defect in report.defects.items():
        moved = " (moved to the quarantine queue)" if message_id in report.quarantined else ""
        click.echo(f"  {message_id}: {defect}{moved}")
    letters = list(report.letters.values())
    if letters:
        click.echo(f"letters (first {min(len(letters), LISTED_LETTERS)} of {len(letters)}):")
    for group in letters[:LISTED_LETTERS]:
        s = group.summary()
        click.echo(
            f"  {','.join(s['message_ids'])}  {s['projection']}  {s['reason']}  "
            f"{s['shard_id']}  {s['sequence_number']}  {s['error_type']}"
        )
    for sample in report.samples:
        record = orjson.dumps(sample.get("record")).decode()
        if len(record) > SAMPLE_RECORD_CHARS:
            sample = {**sample, "record": record[:SAMPLE_RECORD_CHARS] + "..."}
        click.echo(orjson.dumps(sample, option=orjson.OPT_INDENT_2).decode())


@dlq.command("redrive")
@config_option
@click.option(
    "--dry-run",
    is_flag=True,
    help="Check and decode; apply and delete nothing. Exits 1 if a "
    "letter would fail or is refused.",
)
@click.option("--rate", help="At most this many letters per second, e.g. 50 or 50/s.")
@click.option("--projection", "only_projection", help="Only letters of this projection.")
@quarantine_option
def redrive_command(
    config_path: Path,
    dry_run: bool,
    rate: str | None,
    only_projection: str | None,
    quarantine: str | None,
) -> None:
    """Re-apply letters through the current projections; delete each only after success.

    A letter is applied only if it is signed (when dead_letter.signing_key is set), names
    this application and stream, and a shard and position this application has read; every
    refusal is counted with its reason and the message stays in the queue. Exits 1 when a
    letter failed, was refused or is not a dead letter.
    """
    from consumer.dead_letters.redrive import Redrive, envelope_decoder
    from consumer.runtimes.projection_loader import load_projections

    per_second = _rate(rate)
    settings = _settings(config_path)
    resources = _resources(settings)
    try:
        projections = {p.name: p for p in load_projections(settings.projections, resources)}
        ledger = _ledger(settings, resources)
        check = _check(settings, resources, ledger)
        queue = _queue(settings, resources)
        source = settings.source
        with click.progressbar(length=queue.approximate_count(), label="redrive") as bar:
            report = Redrive(
                queue,
                projections,
                lambda envelope: envelope_decoder(source, envelope),
                check,
                ledger=ledger,
                dry_run=dry_run,
                rate=per_second,
                only_projection=only_projection,
                quarantine=quarantine,
                on_letter=lambda: bar.update(1),
            ).run()
    finally:
        resources.close()
    verb = "would apply" if dry_run else "applied and deleted"
    done = report.would_apply if dry_run else report.applied
    refused = ", ".join(f"{kind} {n}" for kind, n in report.refused_by.most_common())
    click.echo(
        f"{verb}: {done}; skipped: {report.skipped}; failed: {len(report.failed)}; "
        f"refused: {len(report.refused)}{f' ({refused})' if refused else ''}; "
        f"malformed: {len(report.malformed)}; quarantined: {len(report.quarantined)}"
    )
    for title, problems in (
        ("failed", report.failed),
        ("refused", report.refused),
        ("malformed", report.malformed),
    ):
        for message_id, why in problems.items():
            click.echo(f"  {message_id}: {title}: {why}")
    if report.left_with_a_problem:
        raise SystemExit(1)


@dlq.command("purge")
@config_option
@click.option("--projection", "only_projection", help="Only letters of this projection.")
@click.option("--dry-run", is_flag=True, help="Say what would be deleted; delete nothing.")
@yes_option
def purge_command(config_path: Path, only_projection: str | None, dry_run: bool, yes: bool) -> None:
    """Delete every message in the queue (or only one projection's letters), with the S3
    envelopes and ledger entries of the letters. Asks first, or needs --yes."""
    from consumer.dead_letters.removal import purge

    settings = _settings(config_path)
    resources = _resources(settings)
    queue = _queue(settings, resources)
    count = queue.approximate_count()
    scope = f"the letters of projection {only_projection!r} among" if only_projection else ""
    what = f"delete {scope} about {count} messages in {queue.queue_url}".replace("  ", " ")
    if dry_run:
        click.echo(f"dry run: would {what}")
        return
    confirm(what, yes)
    report = purge(queue, _ledger(settings, resources), only_projection)
    click.echo(f"deleted: {len(report.deleted)}; kept: {report.kept}")


@dlq.command("delete")
@config_option
@click.option(
    "--id",
    "message_ids",
    multiple=True,
    required=True,
    metavar="MESSAGE_ID",
    help="The SQS message id, as `dlq inspect` lists it (repeatable).",
)
@yes_option
def delete_command(config_path: Path, message_ids: tuple[str, ...], yes: bool) -> None:
    """Delete these messages (with their S3 envelopes and ledger entries). Asks first, or
    needs --yes. Exits 1 when an id is not in the queue."""
    from consumer.dead_letters.removal import delete

    settings = _settings(config_path)
    resources = _resources(settings)
    queue = _queue(settings, resources)
    confirm(f"delete {len(message_ids)} message(s) from {queue.queue_url}", yes)
    report = delete(queue, _ledger(settings, resources), message_ids)
    click.echo(f"deleted: {len(report.deleted)}; not found: {len(report.not_found)}")
    for message_id in report.not_found:
        click.echo(f"  {message_id}: not in the queue")
    if report.not_found:
        raise SystemExit(1)
