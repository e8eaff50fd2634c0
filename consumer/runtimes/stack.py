"""The projection stack without the shard loop, for runtimes that own reading and checkpoints.

Under the KCL MultiLangDaemon and under Lambda, someone else fetches records and stores the
position; what they share with the daemon is everything after that: decoders, the configured
projections, the dead-letter sink and the Pipeline that retries, bisects and dead-letters.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from consumer.config import Settings, load_settings
from consumer.dead_letters.ledger import DeadLetterLedger
from consumer.dead_letters.letter import DeadLetterSink
from consumer.dead_letters.signing import signer_from_setting
from consumer.errors import ConfigError
from consumer.observability.metrics import Metrics
from consumer.pipeline.apply import FailurePolicy, Pipeline
from consumer.record import SourceKind
from consumer.resources import SharedResources
from consumer.runtimes.projection_loader import load_projections
from consumer.sources.decode import Decoder, decoder_for
from projections.projection import Projection

# The TOML file's path for runtimes that have no command line of their own (KCL, Lambda).
CONFIG_ENV = "STREAM_PROJECTOR_CONFIG"


def settings_from_environment(environ: Mapping[str, str]) -> Settings:
    """Load the TOML named by STREAM_PROJECTOR_CONFIG (plus the usual overrides)."""
    path = environ.get(CONFIG_ENV, "")
    if not path:
        raise ConfigError(f"{CONFIG_ENV}: set it to the path of the TOML configuration file")
    return load_settings(Path(path))


@dataclass
class ProjectionStack:
    """Projections, dead letters and failure policy built once; a Pipeline per batch or shard."""

    settings: Settings
    resources: SharedResources
    projections: list[Projection]
    dead_letters: DeadLetterSink | None
    metrics: Metrics
    policy: FailurePolicy
    # Present with dead_letter.queue_url: letters sent, and shards' furthest checkpoints.
    ledger: DeadLetterLedger | None = None
    _decoders: dict[tuple[str, str], Decoder] = field(default_factory=dict)

    def decoder(self, kind: SourceKind, stream: str) -> Decoder:
        """The decoder for a stream (a DynamoDB stream ARN or a Kinesis stream name), cached."""
        key = (kind, stream)
        decoder = self._decoders.get(key)
        if decoder is None:
            source = self.settings.source
            decoder = decoder_for(kind, stream, source.format, source.key_fields)
            self._decoders[key] = decoder
        return decoder

    def pipeline(
        self,
        stream: str,
        shard_id: str,
        abandon: threading.Event,
        on_stalled: Callable[[str | None], None] = lambda reason: None,
    ) -> Pipeline:
        """A Pipeline over the shared projections; `abandon` cuts its retry waits short."""
        return Pipeline(
            stream=stream,
            shard_id=shard_id,
            projections=self.projections,
            metrics=self.metrics,
            dead_letters=self.dead_letters,
            policy=self.policy,
            abandon=abandon,
            on_stalled=on_stalled,
        )

    def close(self) -> None:
        """Release pools (the PostgreSQL one); clients need nothing."""
        self.resources.close()


def build_stack(
    settings: Settings,
    *,
    projections: Sequence[Projection] | None = None,
    dead_letters: DeadLetterSink | None = None,
    metrics: Metrics | None = None,
) -> ProjectionStack:
    """Everything from settings, as the daemon builds it; parts can be given instead."""
    resources = SharedResources(settings.aws, settings.postgres)
    loaded = (
        list(projections)
        if projections is not None
        else load_projections(settings.projections, resources)
    )
    ledger = None
    if settings.dead_letter.queue_url:
        ledger = DeadLetterLedger(
            resources.aws_client("dynamodb"), settings.dead_letter_ledger_table
        )
    if dead_letters is None and settings.dead_letter.queue_url:
        from consumer.dead_letters.sqs import SqsDeadLetterSink

        signer = signer_from_setting(
            settings.dead_letter.signing_key, lambda: resources.aws_client("secretsmanager")
        )
        dead_letters = SqsDeadLetterSink.from_settings(settings, resources, signer, ledger)
    policy = FailurePolicy.from_settings(settings.retry)
    return ProjectionStack(
        settings, resources, loaded, dead_letters, metrics or Metrics(), policy, ledger
    )
