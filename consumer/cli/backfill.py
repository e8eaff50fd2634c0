"""`stream-projector backfill`: fill read models from a parallel Scan, hand off to the stream."""

from __future__ import annotations

import signal
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
import orjson

from consumer.backfill.handoff import DEFAULT_TIP_PAGES, HandoffPoint, record_handoff
from consumer.backfill.progress import BackfillProgressStore, run_name
from consumer.backfill.runner import Backfill, BackfillOptions, BackfillReport, ChunkHook
from consumer.backfill.scan import TableShape, describe_table
from consumer.cli.options import config_option, log_level_option
from consumer.config import Settings, load_settings
from consumer.errors import ConfigError
from consumer.leases.store import DynamoDBLeaseStore
from consumer.resources import SharedResources
from consumer.runtimes.projection_loader import load_projections

# Exit codes: 0 complete; 1 complete but some items failed; 128 + signal when stopped early.
EXIT_FAILED_ITEMS = 1
DEFAULT_OPTIONS = BackfillOptions()


def progress_table(settings: Settings) -> str:
    """The table that holds backfill progress, beside the lease table."""
    return f"{settings.application}-backfill"


@click.command()
@config_option
@click.option(
    "--projection", "projection_name", metavar="NAME", help="Only this projection (default: all)."
)
@click.option(
    "--segments", metavar="N", default=4, show_default=True, type=click.IntRange(1, 1_000_000)
)
@click.option("--rate", default=0.0, type=click.FloatRange(0), help="Items/s in all; 0 = no limit.")
@click.option(
    "--read-capacity", default=0.0, type=click.FloatRange(0), help="Read units/s; 0 = no limit."
)
@click.option("--page-size", default=500, show_default=True, type=click.IntRange(1, 100_000))
@click.option(
    "--order",
    type=click.Choice(["auto", "item", "aggregate"]),
    default="auto",
    show_default=True,
    help="aggregate: each aggregate's events in version order (event stores); auto picks it "
    "when the table's sort key is a number.",
)
@click.option(
    "--version-attribute",
    metavar="NAME",
    help="Event stores whose sort key is not the version: the attribute holding it "
    "(implies --order aggregate).",
)
@click.option("--table", help="Source table to scan (default: source.table).")
@click.option("--reset", is_flag=True, help="Forget saved progress and scan from the start.")
@click.option(
    "--no-handoff",
    is_flag=True,
    help="Do not record the stream position (no stream to hand off to).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@log_level_option("WARNING")
def backfill(
    config_path: Path,
    projection_name: str | None,
    segments: int,
    rate: float,
    read_capacity: float,
    page_size: int,
    order: str,
    version_attribute: str | None,
    table: str | None,
    reset: bool,
    no_handoff: bool,
    as_json: bool,
    log_level: str,
) -> None:
    """Fill read models from a Scan of the source table, then let the stream take over.

    The stream position is recorded first (leases), scanned items can never overwrite what
    the stream applied, and progress is saved per segment: run it again to resume.
    """
    from consumer.observability.log import configure_logging

    settings = load_settings(config_path)
    configure_logging(settings.application, settings.worker_id, log_level)
    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        received.append(signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    resources = SharedResources(settings.aws, settings.postgres)
    try:
        report, handoff = backfill_from_settings(
            settings,
            resources,
            options=BackfillOptions(
                segments=segments,
                page_size=page_size,
                items_per_second=rate,
                read_capacity_per_second=read_capacity,
                version_attribute=version_attribute,
            ),
            order=order,
            projection_name=projection_name,
            table=table,
            reset=reset,
            handoff=not no_handoff,
            stop=stop,
            show_progress=True,
        )
    finally:
        resources.close()
    click.echo(_summary(report, handoff, as_json))
    if report.interrupted:
        sys.exit(128 + (received[0] if received else signal.SIGTERM))
    if report.failed_keys:
        sys.exit(EXIT_FAILED_ITEMS)


def backfill_from_settings(
    settings: Settings,
    resources: SharedResources,
    *,
    options: BackfillOptions = DEFAULT_OPTIONS,
    order: str = "auto",
    projection_name: str | None = None,
    table: str | None = None,
    reset: bool = False,
    handoff: bool = True,
    stop: threading.Event | None = None,
    on_chunk: ChunkHook | None = None,
    show_progress: bool = False,
) -> tuple[BackfillReport, list[HandoffPoint]]:
    """Record the hand-off, then scan and feed; the composition behind the command (and tests)."""
    table = table or settings.source.table
    if not table:
        raise ConfigError("source.table: set the table to scan (or pass --table)")
    entries = [e for e in settings.projections if projection_name in (None, e.name)]
    if not entries:
        raise ConfigError(f"--projection: no projection named {projection_name!r} in the config")
    client = resources.aws_client("dynamodb")
    shape = describe_table(client, table)
    progress = BackfillProgressStore(client, progress_table(settings))
    progress.ensure_table()
    run = run_name(table, [entry.name for entry in entries])
    if reset:
        progress.reset(run)
    # Before the first page is read, on every run: a resumed run keeps the leases it made.
    points = _handoff(settings, resources) if handoff else []
    projections = load_projections(entries, resources)
    chosen = order
    if order == "auto":
        chosen = "aggregate" if options.version_attribute else shape.natural_order
    try:
        job = Backfill(
            client,
            shape,
            projections,
            progress,
            run,
            replace(options, order=chosen),  # type: ignore[arg-type]
            stop=stop,
            on_chunk=on_chunk,
        )
        report = _with_progress_bar(job, shape) if show_progress else job.run()
        return report, points
    finally:
        for projection in projections:
            projection.close()


def _handoff(settings: Settings, resources: SharedResources) -> list[HandoffPoint]:
    # Imported here: the daemon's composition root pulls in every part of the daemon.
    from consumer.runtimes.daemon import build_source

    store = DynamoDBLeaseStore(resources.aws_client("dynamodb"), settings.lease_table)
    store.ensure_table()
    return record_handoff(build_source(settings, resources), store, DEFAULT_TIP_PAGES)


def _with_progress_bar(job: Backfill, shape: TableShape) -> BackfillReport:
    # ItemCount is approximate on AWS (refreshed every few hours): the bar is an estimate.
    with click.progressbar(
        length=max(shape.item_count, 1), label=f"backfill {shape.table}", file=sys.stderr
    ) as bar:
        shown = [0]

        def tick(fed: int) -> None:
            bar.update(fed - shown[0])
            shown[0] = fed

        return job.run(tick)


def _summary(report: BackfillReport, handoff: list[HandoffPoint], as_json: bool) -> str:
    body = {
        "run": report.run,
        "fed": report.fed,
        "pages": report.pages,
        "applied": report.outcome.applied,
        "stale_skipped": report.outcome.stale,
        "filtered": report.outcome.filtered,
        "failed": len(report.failed_keys),
        "segments": report.segments,
        "segments_already_done": report.already_done,
        "segments_resumed": report.resumed,
        "segments_finished": report.finished,
        "complete": report.complete,
        "interrupted": report.interrupted,
        "seconds": round(report.seconds, 3),
        "handoff": [
            {"shard": p.shard_id, "checkpoint": p.checkpoint, "created": p.created} for p in handoff
        ],
    }
    if as_json:
        return orjson.dumps(body).decode()
    state = "complete" if report.complete else "interrupted: run it again to resume"
    return (
        f"backfill {report.run}: fed {report.fed} items in {report.pages} pages "
        f"(applied {report.outcome.applied}, stale {report.outcome.stale}, "
        f"filtered {report.outcome.filtered}, failed {len(report.failed_keys)}) "
        f"in {report.seconds:.1f} s; segments done {report.already_done + report.finished}"
        f"/{report.segments}; {state}"
    )


if __name__ == "__main__":
    backfill()
