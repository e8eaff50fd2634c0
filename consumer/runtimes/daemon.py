"""The composition root: settings in, a running worker with health endpoints out."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import Any

import structlog

from consumer.config import Settings
from consumer.dead_letters.ledger import DeadLetterLedger
from consumer.dead_letters.letter import DeadLetterSink
from consumer.leases.coordinator import LeaseCoordinator
from consumer.leases.lease import Lease
from consumer.leases.store import DynamoDBLeaseStore
from consumer.observability.health import HealthServer, Heartbeat, ReadinessReporter
from consumer.observability.metrics import Metrics
from consumer.observability.redact import redact
from consumer.pipeline.lanes import KeyOf, LanedPipeline, StallTracker, item_partition_key
from consumer.pipeline.lanes import kinesis_key as kinesis_ordering_key
from consumer.pipeline.paging import PageSizer
from consumer.pipeline.prefetch import Prefetcher
from consumer.pipeline.retry import Backoff
from consumer.pipeline.shard_consumer import BatchProcessor, ShardConsumer
from consumer.pipeline.worker import Worker, WorkerTimings
from consumer.resources import SharedResources
from consumer.runtimes.stack import ProjectionStack, build_stack
from consumer.runtimes.startup import check_dead_letters, check_postgres, check_source
from consumer.sources.dynamodb_streams import (
    DynamoDBStreamsSource,
    partition_key_attribute,
    table_of_stream_arn,
)
from consumer.sources.kinesis import KinesisSource
from consumer.sources.position import LATEST, TRIM_HORIZON, StartPosition
from consumer.sources.reader import StreamSource
from consumer.sources.shard import ShardInfo
from projections.projection import Projection

log = structlog.get_logger(__name__)


def build_source(settings: Settings, resources: SharedResources) -> StreamSource:
    """DynamoDB Streams or Kinesis, as `[source]` says."""
    src, polling = settings.source, settings.polling
    if src.kind == "dynamodb":
        return DynamoDBStreamsSource(
            resources.aws_client("dynamodbstreams"),
            resources.aws_client("dynamodb"),
            stream_arn=src.stream_arn or None,
            table_name=src.table or None,
            max_records=polling.max_records,
            min_interval_seconds=polling.min_interval_seconds,
        )
    return KinesisSource(
        resources.aws_client("kinesis"),
        stream_name=src.stream_name or None,
        stream_arn=src.stream_arn or None,
        max_records=polling.max_records,
        min_interval_seconds=polling.min_interval_seconds,
        read_bytes_per_second=polling.kinesis_read_bytes_per_second,
    )


def page_sizer(settings: Settings, page_limit: int) -> PageSizer:
    """A shard's GetRecords Limit, within the settings, the API's cap and the prefetch bound."""
    polling = settings.polling
    ceiling = min(polling.max_records, page_limit, polling.prefetch_records)
    return PageSizer(floor=min(polling.tip_records, ceiling), ceiling=ceiling)


def ordering_key(settings: Settings, resources: SharedResources) -> KeyOf:
    """What the lanes keep in order: the Kinesis partition key, or the item's partition key."""
    src = settings.source
    if src.kind == "kinesis":
        return kinesis_ordering_key
    table = src.table or table_of_stream_arn(src.stream_arn)
    return item_partition_key(partition_key_attribute(resources.aws_client("dynamodb"), table))


def shard_pipeline(
    stack: ProjectionStack,
    stream: str,
    shard_id: str,
    abandon: threading.Event,
    on_stalled: Callable[[str | None], None],
    key_of: KeyOf | None,
) -> BatchProcessor:
    """One Pipeline, or `parallelization_factor` of them as lanes when `key_of` is given."""
    lanes = stack.settings.polling.parallelization_factor
    if key_of is None or lanes == 1:
        return stack.pipeline(stream, shard_id, abandon, on_stalled=on_stalled)
    tracker = StallTracker(on_stalled)
    return LanedPipeline(
        [
            stack.pipeline(stream, shard_id, abandon, on_stalled=tracker.for_lane(lane))
            for lane in range(lanes)
        ],
        key_of,
        shard_id,
    )


def start_position(lease: Lease, settings: Settings) -> StartPosition:
    """Where to read a leased shard from: its checkpoint, or the configured initial position."""
    checkpoint = lease.checkpoint
    if checkpoint == "TRIM_HORIZON":
        return TRIM_HORIZON
    if checkpoint == "LATEST":
        return LATEST
    if checkpoint == "AT_TIMESTAMP":
        # A reset's own timestamp wins over the configured one (which only seeds new leases).
        stamp = lease.checkpoint_timestamp
        ts = settings.source.initial_timestamp
        if stamp is None and ts is not None:
            stamp = ts.replace(tzinfo=ts.tzinfo or UTC).timestamp()
        return StartPosition("AT_TIMESTAMP", timestamp=stamp)
    # Checkpoints fall on batch boundaries, after every sub-record of an aggregate was
    # applied, so resuming after the sequence number never skips nor repeats a sub-record.
    return StartPosition.after(checkpoint)


@dataclass
class Daemon:
    """The assembled parts, so the CLI, the demo and tests can drive and inspect them."""

    settings: Settings
    resources: SharedResources
    metrics: Metrics
    heartbeat: Heartbeat
    source: StreamSource
    store: DynamoDBLeaseStore
    coordinator: LeaseCoordinator
    worker: Worker
    projections: list[Projection]
    ledger: DeadLetterLedger | None = None
    health: HealthServer | None = None

    def readiness(self) -> tuple[bool, str]:
        """Ready once the first shard sync is done, the lease table and sinks answer, and no
        shard waits on an outage; otherwise every reason, each naming what it waits for."""
        if not self.worker.synced.is_set():
            return False, self.worker.last_error or "shard sync not done yet"
        problems = [self.worker.last_error] if self.worker.last_error else []
        problems += self.resources.probe(self.settings.lease_table)
        for projection in self.projections:
            if not projection.ready():
                problems.append(f"projection {projection.name} not ready")
        for (_, shard), reason in sorted(self.metrics.stall_reasons().items()):
            problems.append(f"shard {shard} stalled: {reason}")
        return (False, redact("; ".join(problems))) if problems else (True, "ok")


def _remember_in(ledger: DeadLetterLedger | None) -> Callable[[Lease], None] | None:
    """Keep a finished lease's shard in the ledger before its lease is deleted, so its dead
    letters stay redrivable (a redrive accepts only shards this application read)."""
    if ledger is None:
        return None
    return lambda lease: ledger.record_checkpoint(lease.lease_key, lease.checkpoint)


def build_daemon(
    settings: Settings,
    *,
    projections: Sequence[Projection] | None = None,
    dead_letters: DeadLetterSink | None = None,
    metrics: Metrics | None = None,
) -> Daemon:
    """Assemble every part from settings; nothing is started yet."""
    stack = build_stack(
        settings, projections=projections, dead_letters=dead_letters, metrics=metrics
    )
    resources, metrics = stack.resources, stack.metrics
    heartbeat = Heartbeat()
    source = build_source(settings, resources)
    check_source(source, settings, resources.aws_client("dynamodb").meta.region_name)
    check_postgres(resources)
    check_dead_letters(settings, resources)
    decoder = stack.decoder(settings.source.kind, source.stream_id)
    store = DynamoDBLeaseStore(resources.aws_client("dynamodb"), settings.lease_table)
    key_of = (
        ordering_key(settings, resources) if settings.polling.parallelization_factor > 1 else None
    )
    worker_id = settings.worker_id
    leases = settings.leases
    coordinator = LeaseCoordinator(
        store,
        worker_id,
        failover_seconds=leases.failover_seconds,
        renew_interval=leases.renew_interval_seconds,
        take_interval=leases.take_interval_seconds,
        max_leases_per_worker=leases.max_leases_per_worker or None,
        max_steals_per_take=leases.max_steals_per_take or None,
        on_event=lambda kind, shard_id: metrics.lease_event(kind),
        before_delete=_remember_in(stack.ledger),
    )

    def make_consumer(
        lease: Lease, on_end: Callable[[str, tuple[ShardInfo, ...]], None]
    ) -> ShardConsumer:
        shard_id = lease.lease_key
        abandon = threading.Event()
        stream = source.stream_id

        def stalled(reason: str | None) -> None:
            state = "stalled" if reason else "running"
            metrics.set_shard_state(stream, shard_id, state, reason=reason or "")

        prefetcher = Prefetcher(
            stream=stream,
            shard_id=shard_id,
            open_reader=lambda start: source.open_reader(shard_id, start),
            start=start_position(lease, settings),
            decoder=decoder,
            metrics=metrics,
            prefetch_batches=settings.polling.prefetch_batches,
            prefetch_records=settings.polling.prefetch_records,
            page_sizer=page_sizer(settings, source.page_limit),
            idle_backoff_seconds=settings.polling.idle_backoff_seconds,
            backoff=Backoff(settings.retry.base_seconds, settings.retry.cap_seconds),
            on_error=metrics.record_retry,
        )
        pipeline = shard_pipeline(stack, stream, shard_id, abandon, stalled, key_of)
        return ShardConsumer(
            stream=stream,
            shard_id=shard_id,
            prefetcher=prefetcher,
            pipeline=pipeline,
            checkpointer=coordinator,
            metrics=metrics,
            abandon=abandon,
            on_shard_end=on_end,
            backoff=Backoff(settings.retry.base_seconds, settings.retry.cap_seconds),
        )

    worker = Worker(
        source=source,
        coordinator=coordinator,
        make_consumer=make_consumer,
        metrics=metrics,
        heartbeat=heartbeat,
        initial_checkpoint=settings.source.initial_position,
        timings=WorkerTimings(
            shard_sync_seconds=leases.shard_sync_interval_seconds,
            shutdown_deadline_seconds=settings.shutdown.deadline_seconds,
        ),
    )
    return Daemon(
        settings=settings,
        resources=resources,
        ledger=stack.ledger,
        metrics=metrics,
        heartbeat=heartbeat,
        source=source,
        store=store,
        coordinator=coordinator,
        worker=worker,
        projections=stack.projections,
    )


def install_signal_handlers(stop: threading.Event) -> None:
    """SIGTERM and SIGINT ask for a graceful stop; a second one is handled the same way."""

    def handler(signum: int, _frame: Any) -> None:
        log.info("signal received; stopping", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def run_daemon(
    daemon: Daemon,
    stop: threading.Event,
    *,
    serve_http: bool = True,
    until: Callable[[], bool] | None = None,
) -> int:
    """Start the health server, ensure the lease table, run the worker until stopped."""
    settings = daemon.settings
    if serve_http:
        daemon.health = HealthServer(
            daemon.metrics,
            daemon.heartbeat,
            settings.http.host,
            settings.http.port,
            settings.http.heartbeat_timeout_seconds,
            daemon.readiness,
        )
        daemon.health.start()
        log.info("http listening", port=daemon.health.port)
    # Through the server's bounded check when there is one: a hung sink never hangs the log.
    check = daemon.health.readiness if daemon.health is not None else daemon.readiness
    reporter = ReadinessReporter(check, settings.http.readiness_log_interval_seconds)
    try:
        daemon.store.ensure_table()
        if daemon.ledger is not None:
            daemon.ledger.ensure_table()
        reporter.start()
        return daemon.worker.run(stop, until=until)
    finally:
        reporter.stop()
        for projection in daemon.projections:
            projection.close()
        if daemon.health is not None:
            daemon.health.stop()
        daemon.resources.close()
