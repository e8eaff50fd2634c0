"""The `stream-projector` command line (also `python -m consumer`)."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

import click

from consumer import __version__
from consumer.cli.failures import DEBUG_ENV, ReportingGroup
from consumer.cli.options import config_option, log_level_option
from consumer.config import Settings, load_settings
from consumer.errors import ConfigError


def _settings(config_path: Path) -> Settings:
    return load_settings(config_path)


def _setup_logging(settings: Settings, level: str) -> None:
    from consumer.observability.log import configure_logging

    configure_logging(settings.application, settings.worker_id, level)


@click.group(cls=ReportingGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(version=__version__)
@click.option(
    "--debug",
    is_flag=True,
    envvar=DEBUG_ENV,
    help=f"Show the traceback of a failure instead of one line (or {DEBUG_ENV}=1).",
)
def main(debug: bool) -> None:
    """Read DynamoDB Streams and Kinesis shard by shard and keep read models up to date.

    Exit codes: 0 done, 1 a failure the message explains (a setting, a resource, a service
    that does not answer), 2 a usage error, 70 an unexpected error (a bug: run again with
    --debug).
    """
    from consumer.observability.log import configure_logging

    # Until a command configures its own: warnings of any library as JSON on stderr, so the
    # output of `status --json` or `search` stays clean and nothing is plain text.
    configure_logging(level="WARNING", stream=sys.stderr)


@main.command()
@config_option
@log_level_option("INFO")
def run(config_path: Path, log_level: str) -> None:
    """Run the daemon until SIGTERM/SIGINT, then stop gracefully and release leases."""
    from consumer.runtimes.daemon import build_daemon, install_signal_handlers, run_daemon
    from consumer.runtimes.garbage_collector import tune_for_throughput

    settings = _settings(config_path)
    _setup_logging(settings, log_level)
    daemon = build_daemon(settings)
    tune_for_throughput()
    stop = threading.Event()
    install_signal_handlers(stop)
    sys.exit(run_daemon(daemon, stop))


@main.command()
@click.option("--seed-only", is_flag=True, help="Only create the tables and write the saga.")
@click.option(
    "--endpoint-url",
    default=None,
    help="Use this emulator (moto, LocalStack) instead of starting moto in-process.",
)
@log_level_option("WARNING")
def demo(seed_only: bool, endpoint_url: str | None, log_level: str) -> None:
    """Trip-search saga of seed 001 end to end on an embedded moto server; exits 0."""
    from consumer.demo import trip_saga as demo_

    demo_.use_demo_credentials()
    server = None
    if endpoint_url is None:
        server, endpoint_url = demo_.start_moto()
        click.echo(f"moto server listening on {endpoint_url}")
    try:
        settings = demo_.seed(endpoint_url)
        click.echo(f"seeded {demo_.TRIP_TABLE} with {len(demo_.SAGA)} saga writes")
        if seed_only:
            return
        _setup_logging(settings, log_level)
        demo_.run_until_caught_up(settings)
        click.echo("daemon caught up with every shard and stopped")
        demo_.print_results(settings)
        _shop_demo(endpoint_url)
    finally:
        if server is not None:
            server.stop()


def _shop_demo(endpoint_url: str) -> None:
    """Scenarios 2 and 4 (shop read models in PostgreSQL), when PostgreSQL can be had."""
    from consumer.demo import shop as demo_shop

    dsn = demo_shop.postgres_available()
    if dsn is None:
        click.echo(
            "\nskipped the shop read models (scenario 2): no PostgreSQL "
            "(set DATABASE_URL, or install the server binaries)"
        )
        return
    click.echo("\nshop event store → Kinesis → PostgreSQL read models")
    demo_shop.run_shop_demo(dsn, endpoint_url, click.echo)


@main.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--metrics-url",
    "metrics_urls",
    multiple=True,
    metavar="URL",
    help="A running daemon's /metrics, for ITERATOR AGE (repeat for every replica).",
)
def status(config_path: Path, as_json: bool, metrics_urls: tuple[str, ...]) -> None:
    """Shards with their parents, owners, checkpoints and state, from the lease table.

    STATE is finished, waiting_parent, running, expired (its worker stopped renewing) or
    unowned. ITERATOR AGE comes from the daemons named by --metrics-url; a daemon that does
    not answer is reported on stderr and its shards show "-".
    """
    from consumer.observability.status import render_json, render_table
    from consumer.observability.status_report import collect_status

    settings = _settings(config_path)
    report = collect_status(settings, metrics_urls)
    for url, problem in report.unreadable.items():
        click.echo(f"warning: {url}: not read ({problem}); its iterator ages show as -", err=True)
    click.echo(render_json(report.rows) if as_json else render_table(report.rows))


@main.command()
@config_option
def migrate(config_path: Path) -> None:
    """Create the tables the configured projections need; running it twice changes nothing."""
    from consumer.resources import SharedResources
    from consumer.runtimes.projection_loader import load_projections

    settings = _settings(config_path)
    resources = SharedResources(settings.aws, settings.postgres)
    try:
        projections = load_projections(settings.projections, resources)
        # Fail in seconds with the reason, not after the pool's 30 s timeout.
        resources.check_postgres()
        for projection in projections:
            projection.migrate()
            click.echo(f"{projection.name}: migrated")
    finally:
        resources.close()


@main.group()
def search() -> None:
    """Query read models."""


@search.command("trips")
@config_option
@click.option("--status", "status_", help="flight_status, e.g. CONFIRMED or CANCELLED.")
@click.option("--from", "departure_from", help="Earliest departure_time (ISO 8601).")
@click.option("--to", "departure_to", help="Latest departure_time (ISO 8601).")
@click.option("--hotel-prefix", help="hotel_name starts with this.")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000))
@click.option("--next-token", help="Continue from a previous page.")
@click.option(
    "--projection",
    default="trip_search",
    show_default=True,
    help="Name of the trip-search projection in the config (for its table).",
)
def search_trips_command(
    config_path: Path,
    status_: str | None,
    departure_from: str | None,
    departure_to: str | None,
    hotel_prefix: str | None,
    limit: int,
    next_token: str | None,
    projection: str,
) -> None:
    """Search TripSearchTable by status, departure range and hotel-name prefix, paginated."""
    import orjson
    from botocore.exceptions import ClientError

    from consumer.aws_errors import NOT_FOUND_CODES, error_code
    from consumer.resources import SharedResources
    from projections.scenarios.trip_search_query import search_trips

    settings = _settings(config_path)
    table = _projection_setting(settings, projection, "table", "TripSearchTable")
    client = SharedResources(settings.aws, settings.postgres).aws_client("dynamodb")
    try:
        items, token = search_trips(
            client,
            table,
            status=status_,
            departure_from=departure_from,
            departure_to=departure_to,
            hotel_prefix=hotel_prefix,
            limit=limit,
            next_token=next_token,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    except ClientError as exc:
        if error_code(exc) not in NOT_FOUND_CODES:
            raise
        raise ConfigError(
            f"projections.{projection}.settings.table: table {table!r} does not exist; "
            "create it with `stream-projector migrate`"
        ) from exc
    body = {"trips": items, "count": len(items), "next_token": token}
    click.echo(orjson.dumps(body, default=str, option=orjson.OPT_INDENT_2).decode())


def _projection_setting(settings: Settings, name: str, key: str, default: Any) -> Any:
    for entry in settings.projections:
        if entry.name == name:
            return entry.settings.get(key, default)
    raise ConfigError(f"--projection: no projection named {name!r} in the config")


def _register_subcommands() -> None:
    # Imported here, after `main` exists: these modules define their own click commands.
    from consumer.cli.backfill import backfill
    from consumer.cli.dlq import dlq
    from consumer.cli.leases import leases

    main.add_command(backfill)
    main.add_command(dlq)
    main.add_command(leases)


_register_subcommands()

if __name__ == "__main__":
    main()
