"""`stream-projector dlq inspect|redrive`: look at the dead-letter queue and re-apply it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import orjson

from consumer.cli.options import config_option
from consumer.config import Settings, load_settings
from consumer.errors import ConfigError

SAMPLE_RECORD_CHARS = 2000


def _settings(config_path: Path) -> Settings:
    try:
        settings = load_settings(config_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    if not settings.dead_letter.queue_url:
        raise click.ClickException(
            "dead_letter.queue_url: not set [env STREAM_PROJECTOR_DEAD_LETTER__QUEUE_URL]"
        )
    return settings


def _queue(settings: Settings, resources: Any) -> Any:
    from consumer.dead_letters.redrive import DeadLetterQueue

    return DeadLetterQueue(
        resources.aws_client("sqs"), settings.dead_letter.queue_url, resources.aws_client("s3")
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
    """The dead-letter queue: inspect it, and redrive it once the cause is fixed."""


@dlq.command("inspect")
@config_option
@click.option("--max", "max_messages", default=100, show_default=True, type=click.IntRange(1))
@click.option("--samples", default=3, show_default=True, type=click.IntRange(0))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def inspect_command(config_path: Path, max_messages: int, samples: int, as_json: bool) -> None:
    """Counts by reason and projection, and sample envelopes; deletes nothing."""
    from consumer.dead_letters.redrive import inspect
    from consumer.resources import SharedResources

    settings = _settings(config_path)
    resources = SharedResources(settings.aws, settings.postgres)
    report = inspect(_queue(settings, resources), max_messages, samples)
    if as_json:
        body = {
            "seen": report.seen,
            "approximate_total": report.approximate_total,
            "by_reason": dict(report.by_reason),
            "by_projection": dict(report.by_projection),
            "samples": report.samples,
        }
        click.echo(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())
        return
    click.echo(f"{report.seen} letters looked at (about {report.approximate_total} in the queue)")
    for title, counts in (("reason", report.by_reason), ("projection", report.by_projection)):
        click.echo(f"by {title}:")
        for name, count in counts.most_common():
            click.echo(f"  {count:>8}  {name}")
    for envelope in report.samples:
        shown = dict(envelope)
        record = orjson.dumps(shown.get("record")).decode()
        if len(record) > SAMPLE_RECORD_CHARS:
            shown["record"] = record[:SAMPLE_RECORD_CHARS] + f"... ({len(record)} chars)"
        click.echo(orjson.dumps(shown, option=orjson.OPT_INDENT_2).decode())


@dlq.command("redrive")
@config_option
@click.option("--dry-run", is_flag=True, help="Decode and report; apply and delete nothing.")
@click.option("--rate", help="At most this many letters per second, e.g. 50 or 50/s.")
@click.option("--projection", "only_projection", help="Only letters of this projection.")
def redrive_command(
    config_path: Path, dry_run: bool, rate: str | None, only_projection: str | None
) -> None:
    """Re-apply letters through the current projections; delete each one only after success."""
    from consumer.dead_letters.redrive import Redrive, decoder_for
    from consumer.resources import SharedResources
    from consumer.runtimes.projection_loader import load_projections

    per_second = _rate(rate)
    settings = _settings(config_path)
    resources = SharedResources(settings.aws, settings.postgres)
    try:
        projections = {p.name: p for p in load_projections(settings.projections, resources)}
        queue = _queue(settings, resources)
        source = settings.source
        with click.progressbar(length=queue.approximate_count(), label="redrive") as bar:
            report = Redrive(
                queue,
                projections,
                lambda envelope: decoder_for(source.kind, source.format, envelope),
                dry_run=dry_run,
                rate=per_second,
                only_projection=only_projection,
                on_letter=lambda: bar.update(1),
            ).run()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        resources.close()
    verb = "would apply" if dry_run else "applied and deleted"
    done = report.would_apply if dry_run else report.applied
    click.echo(f"{verb}: {done}; skipped: {report.skipped}; failed: {len(report.failed)}")
    for message_id, error in report.failed.items():
        click.echo(f"  {message_id}: {error}")
    if report.failed:
        raise SystemExit(1)
