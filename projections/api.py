"""Everything a projection is written with, importable from one place.

    from projections.api import BaseProjection, ChangeRecord, ProjectionSettings, Results

docs/projections.md opens with a complete projection built on these names. The modules they
come from are the implementation; this list is the interface that stays.
"""

from consumer.errors import ConfigError, PoisonError, TransientError
from consumer.record import ChangeRecord
from projections.filter import FilteredProjection, FilterSettings, RecordFilter, parse_filter
from projections.idempotency import Claim, IdempotencyStore
from projections.image_fetch import ImageFetchingProjection
from projections.projection import BaseProjection, Projection, Resources
from projections.results import Counts, Outcome, RecordResult, Results
from projections.routing import Router
from projections.settings import ProjectionSettings, SettingsError, Text
from projections.sinks.dynamodb import DynamoDBSink, GuardedUpdate, Write
from projections.sinks.postgres import GuardedUpsert, batch_transaction, translate_errors
from projections.sinks.sns import Alert, SnsAlertSink
from projections.wrapper import WrappedSettings, WrappingProjection

__all__ = [
    "Alert",
    "BaseProjection",
    "ChangeRecord",
    "Claim",
    "ConfigError",
    "Counts",
    "DynamoDBSink",
    "FilterSettings",
    "FilteredProjection",
    "GuardedUpdate",
    "GuardedUpsert",
    "IdempotencyStore",
    "ImageFetchingProjection",
    "Outcome",
    "PoisonError",
    "Projection",
    "ProjectionSettings",
    "RecordFilter",
    "RecordResult",
    "Resources",
    "Results",
    "Router",
    "SettingsError",
    "SnsAlertSink",
    "Text",
    "TransientError",
    "WrappedSettings",
    "WrappingProjection",
    "Write",
    "batch_transaction",
    "parse_filter",
    "translate_errors",
]
