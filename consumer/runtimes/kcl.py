"""A record processor for the KCL MultiLangDaemon that runs the configured projections.

The MultiLangDaemon (Java) owns leases, shard discovery and GetRecords; it starts this module
once per shard (`executableName = python -m consumer.runtimes.kcl`) and talks to it in JSON
lines over stdin/stdout. Unlike amazon_kclpy's sample it never skips a failed batch: the batch
goes through the same Pipeline as in the daemon (transient failures are waited out, poison is
bisected and dead-lettered), and only then is the last record checkpointed, explicitly.
It checkpoints SHARD_END at shardEnded (the KCL requires it) and never after leaseLost.

The protocol is implemented here rather than through amazon_kclpy: that package downloads the
KCL jars from Maven while it installs, so it cannot be installed without that network access;
the processor's side of the protocol is a few message types (see docs/runtimes.md).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from typing import Any, TextIO

import orjson
import structlog

from consumer.cli.failures import debug_from_environment, run_reporting
from consumer.errors import StreamProjectorError
from consumer.observability.log import configure_logging
from consumer.pipeline.apply import Pipeline
from consumer.pipeline.retry import Backoff, retry
from consumer.runtimes.event_adapters import decode_records, kinesis_stream_name, raw_from_kcl
from consumer.runtimes.stack import ProjectionStack, build_stack, settings_from_environment
from consumer.sources.decode import Decoder

log = structlog.get_logger(__name__)

# Checkpoint errors the KCL documents as worth retrying; every other one is final.
RETRYABLE_CHECKPOINT_ERRORS = frozenset(
    {"ThrottlingException", "KinesisClientLibDependencyException"}
)
# The lease is gone: another worker owns the shard now, so this one must not checkpoint again.
LEASE_LOST_ERROR = "ShutdownException"
CHECKPOINT_ATTEMPTS = 5


class ProtocolError(StreamProjectorError):
    """The MultiLangDaemon sent something the protocol does not allow at this point."""


class CheckpointRefused(StreamProjectorError):
    """The MultiLangDaemon answered a checkpoint with an error: the KCL exception's name."""

    def __init__(self, error: str) -> None:
        super().__init__(f"checkpoint refused: {error}")
        self.error = error


class MultiLangChannel:
    """The JSON-lines conversation with the MultiLangDaemon: one message per line."""

    def __init__(self, reader: TextIO, writer: TextIO) -> None:
        self._reader = reader
        self._writer = writer

    def receive(self) -> dict[str, Any] | None:
        """The next message, or None when the daemon closed our stdin."""
        while True:
            line = self._reader.readline()
            if not line:
                return None
            if line.strip():
                message = orjson.loads(line)
                if not isinstance(message, dict) or "action" not in message:
                    raise ProtocolError(f"not a MultiLang message: {line.strip()[:200]}")
                return message

    def send(self, message: dict[str, Any]) -> None:
        """Write one message and flush: the daemon blocks until it reads it."""
        self._writer.write(orjson.dumps(message).decode() + "\n")
        self._writer.flush()

    def checkpoint(self, sequence_number: str | None, sub_sequence: int | None) -> str | None:
        """Ask the daemon to checkpoint; its error (e.g. "ThrottlingException") or None."""
        self.send(
            {
                "action": "checkpoint",
                "sequenceNumber": sequence_number,
                "subSequenceNumber": sub_sequence,
            }
        )
        reply = self.receive()
        if reply is None or reply.get("action") != "checkpoint":
            raise ProtocolError(f"expected a checkpoint reply, got {reply!r:.200}")
        return reply.get("error") or None


class KclRecordProcessor:
    """Handles one shard's messages; replies `status` after each, as the protocol requires."""

    def __init__(
        self,
        stack: ProjectionStack,
        channel: MultiLangChannel,
        *,
        checkpoint_attempts: int = CHECKPOINT_ATTEMPTS,
    ) -> None:
        self._stack = stack
        self._channel = channel
        self._checkpoint_attempts = checkpoint_attempts
        # Never set: a batch is finished, not abandoned, unless the process is killed.
        self._abandon = threading.Event()
        source = stack.settings.source
        self._stream = source.stream_name or kinesis_stream_name(source.stream_arn)
        self._shard_id = ""
        self._pipeline: Pipeline | None = None
        self._decoder: Decoder | None = None
        self._processed: tuple[str, int] | None = None
        self._checkpointed: tuple[str, int] | None = None
        self._lease_lost = False
        self._handlers: dict[str, Callable[[dict[str, Any]], None]] = {
            "initialize": self._initialize,
            "processRecords": self._process_records,
            "leaseLost": self._on_lease_lost,
            "shardEnded": self._on_shard_ended,
            "shutdownRequested": self._on_shutdown_requested,
            "shutdown": self._on_legacy_shutdown,
        }

    def run(self) -> None:
        """Serve messages until the daemon closes stdin."""
        while (message := self._channel.receive()) is not None:
            action = message["action"]
            handler = self._handlers.get(action)
            if handler is None:
                raise ProtocolError(f"unknown action {action!r}")
            handler(message)
            self._channel.send({"action": "status", "responseFor": action})

    # -- actions ----------------------------------------------------------------------------

    def _initialize(self, message: dict[str, Any]) -> None:
        self._shard_id = str(message.get("shardId", ""))
        structlog.contextvars.bind_contextvars(stream=self._stream, shard=self._shard_id)
        self._decoder = self._stack.decoder("kinesis", self._stream)
        self._pipeline = self._stack.pipeline(self._stream, self._shard_id, self._abandon)
        log.info("shard initialized", start=message.get("sequenceNumber"))

    def _process_records(self, message: dict[str, Any]) -> None:
        records = message.get("records") or []
        if not records:
            return
        if self._pipeline is None:
            raise ProtocolError("processRecords before initialize")
        raws = [raw_from_kcl(record) for record in records]
        subs = [int(record.get("subSequenceNumber") or 0) for record in records]
        batch = decode_records(self._decoder, self._shard_id, raws, subs)
        # Returns only once every record is applied or dead-lettered; an exception ends the
        # process without a status, and the KCL restarts the shard from its last checkpoint.
        self._pipeline.process(batch)
        assert batch.last_sequence is not None  # records is not empty
        self._processed = (batch.last_sequence, batch.last_sub_sequence)
        self._checkpoint(*self._processed)

    def _on_lease_lost(self, message: dict[str, Any]) -> None:
        # Another worker may already be processing this shard: checkpointing now could move
        # its position backwards or past records it has not applied.
        self._lease_lost = True
        log.info("lease lost; not checkpointing", processed=self._processed)

    def _on_shard_ended(self, message: dict[str, Any]) -> None:
        # Every record was processed and checkpointed as it came; SHARD_END lets children start.
        if not self._checkpoint(None, None):
            raise ProtocolError("could not checkpoint SHARD_END at shardEnded")
        log.info("shard ended; checkpointed SHARD_END")

    def _on_shutdown_requested(self, message: dict[str, Any]) -> None:
        if self._processed is not None and self._processed != self._checkpointed:
            self._checkpoint(*self._processed)

    def _on_legacy_shutdown(self, message: dict[str, Any]) -> None:
        """Older daemons send `shutdown` with TERMINATE (shard end) or ZOMBIE (lease lost)."""
        if message.get("reason") == "TERMINATE":
            self._on_shard_ended(message)
        else:
            self._on_lease_lost(message)

    # -- checkpoints ------------------------------------------------------------------------

    def _checkpoint(self, sequence_number: str | None, sub_sequence_number: int | None) -> bool:
        """Checkpoint, retrying throttling; False if it did not happen (the next one covers it)."""
        if self._lease_lost:
            return False

        def ask() -> None:
            error = self._channel.checkpoint(sequence_number, sub_sequence_number)
            if error is not None:
                raise CheckpointRefused(error)

        def retrying(exc: Exception, delay: float) -> None:
            log.warning("checkpoint failed; retrying", error=str(exc), delay_seconds=delay)

        settings = self._stack.settings.retry
        try:
            retry(
                ask,
                backoff=Backoff(settings.base_seconds, settings.cap_seconds),
                retry_on=_retryable_checkpoint_error,
                attempts=self._checkpoint_attempts,
                on_retry=retrying,
            )
        except CheckpointRefused as refused:
            if refused.error == LEASE_LOST_ERROR:
                self._lease_lost = True
                log.warning("checkpoint refused: lease lost", sequence_number=sequence_number)
                return False
            # Not checkpointing is safe: the records are applied and idempotent, so a restart
            # from the previous checkpoint only re-applies them.
            log.error(
                "checkpoint failed; leaving it to the next one",
                error=refused.error,
                sequence_number=sequence_number,
            )
            return False
        if sequence_number is not None:
            self._checkpointed = (sequence_number, sub_sequence_number or 0)
        return True


def _retryable_checkpoint_error(exc: Exception) -> bool:
    return isinstance(exc, CheckpointRefused) and exc.error in RETRYABLE_CHECKPOINT_ERRORS


def _protocol_stdout() -> TextIO:
    """Keep the real stdout for the protocol; logs and stray prints go to stderr instead."""
    sys.stdout.flush()
    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return protocol


def main() -> int:
    """Run by the MultiLangDaemon, one process per shard; TOML path in STREAM_PROJECTOR_CONFIG.

    A failure is one line on stderr (the KCL copies it into its log) and a non-zero exit;
    STREAM_PROJECTOR_DEBUG=1 shows the traceback instead.
    """
    protocol = _protocol_stdout()
    return run_reporting(
        lambda: _serve(protocol), debug=debug_from_environment(), name="stream-projector kcl"
    )


def _serve(protocol: TextIO) -> int:
    settings = settings_from_environment(os.environ)
    configure_logging(settings.application, settings.worker_id)
    stack = build_stack(settings)
    try:
        KclRecordProcessor(stack, MultiLangChannel(sys.stdin, protocol)).run()
    finally:
        stack.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
