"""AWS Lambda handler for DynamoDB Streams and Kinesis events, running the configured projections.

Configure the function with `consumer.runtimes.lambda_handler.handler`, STREAM_PROJECTOR_CONFIG
pointing at the TOML file, and ReportBatchItemFailures on the event source mapping. Poison
records are dead-lettered with the daemon's envelope and count as processed, so the shard moves
on; a transient failure is retried in the handler only while the invocation has time left, then the
batch is reported from its first record and Lambda retries it (projections are idempotent).
"""

from __future__ import annotations

import functools
import os
import threading
import time
from typing import Any, Protocol

import structlog

from consumer.errors import ConfigError
from consumer.observability.log import configure_logging
from consumer.pipeline.apply import BatchAbandoned
from consumer.runtimes.event_adapters import SourcedRecords, decode_records, group_lambda_records
from consumer.runtimes.stack import ProjectionStack, build_stack, settings_from_environment
from consumer.sources.decode import Decoder

log = structlog.get_logger(__name__)

# Time kept back from the invocation's deadline for the write in flight and the response:
# a fifth of what is left, at most this many seconds.
MAX_RESERVE_SECONDS = 5.0
RESERVE_FRACTION = 0.2


class LambdaContext(Protocol):
    """The part of Lambda's context object the handler uses."""

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds until Lambda stops the invocation."""
        ...


class StreamEventHandler:
    """Applies one Lambda stream event through the projections; returns batchItemFailures."""

    def __init__(self, stack: ProjectionStack, *, reserve_seconds: float | None = None) -> None:
        self._stack = stack
        self._reserve_seconds = reserve_seconds
        source = stack.settings.source
        # Hand-made test events may lack eventSourceARN; the configured stream stands in.
        self._default_stream = source.stream_arn or source.stream_name

    def __call__(self, event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        """Process the event's records in order; report the first one that must be retried."""
        records = event.get("Records") or []
        budget = self._budget_seconds(context)
        abandon = threading.Event()
        # The Pipeline checks `abandon` between attempts: once the budget is spent it stops
        # retrying instead of spinning until Lambda kills the invocation.
        timer = threading.Timer(budget, abandon.set)
        timer.daemon = True
        timer.start()
        try:
            for run in group_lambda_records(records, self._default_stream):
                if not self._process(run, abandon):
                    return {"batchItemFailures": [{"itemIdentifier": run.raws[0].sequence_number}]}
        finally:
            timer.cancel()
        return {"batchItemFailures": []}

    def _process(self, run: SourcedRecords, abandon: threading.Event) -> bool:
        decoder = self._decoder(run)
        batch = decode_records(decoder, run.shard_id, run.raws)
        pipeline = self._stack.pipeline(run.stream, run.shard_id, abandon)
        started = time.monotonic()
        try:
            pipeline.process(batch)
        except BatchAbandoned:
            # Which records of the batch each projection applied is unknown here, so the batch
            # is retried from its first record; re-applying is harmless (guarded writes).
            log.warning(
                "out of time while retrying; reporting the batch for Lambda to retry",
                stream=run.stream,
                shard=run.shard_id,
                first_sequence_number=run.raws[0].sequence_number,
                records=len(run.raws),
            )
            return False
        log.info(
            "batch applied",
            stream=run.stream,
            shard=run.shard_id,
            records=len(run.raws),
            undecodable=len(batch.undecodable),
            seconds=round(time.monotonic() - started, 3),
        )
        return True

    def _decoder(self, run: SourcedRecords) -> Decoder | None:
        if not run.stream:
            return None
        try:
            return self._stack.decoder(run.kind, run.stream)
        except ConfigError as exc:
            # A malformed ARN in an event is the event's problem: its records are dead-lettered.
            log.error("cannot decode records of this stream", stream=run.stream, error=str(exc))
            return None

    def _budget_seconds(self, context: LambdaContext) -> float:
        remaining = max(0.0, context.get_remaining_time_in_millis() / 1000)
        reserve = self._reserve_seconds
        if reserve is None:
            reserve = min(MAX_RESERVE_SECONDS, remaining * RESERVE_FRACTION)
        return max(0.0, remaining - reserve)


@functools.cache
def container_handler() -> StreamEventHandler:
    """Built once per Lambda container (cold start) from STREAM_PROJECTOR_CONFIG, then reused."""
    settings = settings_from_environment(os.environ)
    configure_logging(settings.application, settings.worker_id)
    return StreamEventHandler(build_stack(settings))


def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """The Lambda entry point: `consumer.runtimes.lambda_handler.handler`."""
    return container_handler()(event, context)
