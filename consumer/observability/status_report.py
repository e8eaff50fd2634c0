"""Gather what `status` and `leases list` show: the lease table, and iterator ages read from
running daemons' /metrics."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

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


@dataclass(slots=True)
class StatusReport:
    """The rows, and the daemons whose /metrics could not be read (their ages show as -)."""

    rows: list[ShardStatus]
    unreadable: dict[str, str] = field(default_factory=dict)


def collect_status(settings: Settings, metrics_urls: tuple[str, ...] = ()) -> StatusReport:
    """One row per lease in the table; ages from every given daemon's /metrics.

    A daemon that does not answer is reported, not fatal: a status taken while a worker is
    down is exactly when it is needed.
    """
    resources = SharedResources(settings.aws, settings.postgres)
    store = DynamoDBLeaseStore(resources.aws_client("dynamodb"), settings.lease_table)
    leases = store.list_leases()
    ages: dict[str, float] = {}
    unreadable: dict[str, str] = {}
    for url in metrics_urls:
        try:
            ages.update(iterator_ages(url))
        except (OSError, ValueError, urllib.error.URLError) as exc:
            unreadable[url] = f"{type(exc).__name__}: {exc}"
    rows = rows_from_leases(
        leases, ages, now=time.time(), failover_seconds=settings.leases.failover_seconds
    )
    return StatusReport(rows, unreadable)
