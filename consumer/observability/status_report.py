"""Gather what `status` shows: the lease table, and iterator ages from a daemon's /metrics."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from consumer.config import Settings
from consumer.leases.store import DynamoDBLeaseStore
from consumer.observability.status import ShardStatus, rows_from_leases
from consumer.resources import SharedResources

AGE_METRIC = "stream_projector_iterator_age_seconds"


def iterator_ages(metrics_url: str, timeout: float = 5.0) -> dict[str, float]:
    """Shard id → iterator age, read from a running daemon's Prometheus endpoint."""
    with urllib.request.urlopen(metrics_url, timeout=timeout) as response:
        text = response.read().decode()
    ages: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != AGE_METRIC:
            continue
        for sample in family.samples:
            ages[sample.labels["shard"]] = sample.value
    return ages


def collect_status(settings: Settings, metrics_urls: tuple[str, ...] = ()) -> list[ShardStatus]:
    """One row per lease in the table; ages from every given daemon's /metrics."""
    resources = SharedResources(settings.aws, settings.postgres)
    store = DynamoDBLeaseStore(resources.aws_client("dynamodb"), settings.lease_table)
    ages: dict[str, float] = {}
    for url in metrics_urls:
        ages.update(iterator_ages(url))
    return rows_from_leases(store.list_leases(), ages)
