"""A guarded, coalescing, concurrent writer for DynamoDB read models.

Every write is one UpdateItem conditioned on `attribute_not_exists(guard) OR guard < :position`
that also sets the guard, so a stale or repeated change is refused by DynamoDB itself
(docs/design.md invariant 4) and reported `stale`, never as an error.

Within a batch, updates to the same key and guard collapse into the one with the highest
position: that is only correct because each update carries the *full* state of its component
(every field it owns is either set or removed). Different guards on one key stay separate
writes, issued in batch order. Keys are written concurrently on a bounded thread pool; all
writes of one key run sequentially in one task, so each key keeps its order.

Results are per record: each update is written on behalf of the record it projects. An update
coalesced away takes the outcome of the write that superseded it (applied if that write
applied, stale if it was refused, failed if it failed), because its effect is contained in
that write. A key whose write fails stops there (its order must hold): its later writes are
not attempted and their records are left out of the results, so the pipeline retries them.
Failures are outcomes, not exceptions: the other keys' records still report what they did.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import structlog
from boto3.dynamodb.types import TypeSerializer
from botocore.exceptions import ClientError

from consumer.aws_errors import (
    AWS_CALL_ERRORS,
    CONDITION_FAILED,
    RESOURCE_IN_USE,
    RESOURCE_NOT_FOUND,
    SINK_TRANSIENT_CODES,
    error_code,
    transient_error,
)
from consumer.errors import PoisonError, StreamProjectorError, TransientError
from consumer.record import ChangeRecord
from projections.results import Results

log = structlog.get_logger(__name__)

DEFAULT_MAX_WORKERS = 16


@dataclass(frozen=True, slots=True)
class GuardedUpdate:
    """The full new state of one component of one read-model item, guarded by a position.

    `key` is the table key, `assign` the attributes to set and `remove` those to delete (plain
    Python values; the sink serializes them). `guard` names the attribute that stores the
    component's source position; `position` is `ChangeRecord.position`.
    """

    key: Mapping[str, Any]
    guard: str
    position: str
    assign: Mapping[str, Any] = field(default_factory=dict)
    remove: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        touched = set(self.assign) & set(self.remove)
        touched |= (set(self.assign) | set(self.remove)) & ({self.guard} | set(self.key))
        if touched:
            # DynamoDB rejects such an expression; it is a projection bug, the same every time.
            raise PoisonError(
                f"update of {dict(self.key)!r} touches {sorted(touched)} twice or touches "
                "the key or the guard"
            )


Write = tuple[ChangeRecord, GuardedUpdate]


@dataclass(slots=True)
class _Group:
    """The updates of one key, coalesced per guard, in the order their winners arrived."""

    writes: dict[str, tuple[int, GuardedUpdate]] = field(default_factory=dict)
    merged: dict[str, list[ChangeRecord]] = field(default_factory=dict)

    def add(self, index: int, record: ChangeRecord, update: GuardedUpdate) -> None:
        current = self.writes.get(update.guard)
        self.merged.setdefault(update.guard, []).append(record)
        # Ties go to the later update: two updates at one position come from one record.
        if current is None or update.position >= current[1].position:
            self.writes[update.guard] = (index, update)

    def ordered(self) -> list[tuple[GuardedUpdate, list[ChangeRecord]]]:
        """Each surviving write with the records it stands for, in batch order."""
        winners = sorted(self.writes.values(), key=lambda pair: pair[0])
        return [(update, self.merged[update.guard]) for _, update in winners]


def coalesce(writes: Iterable[Write]) -> list[list[tuple[GuardedUpdate, list[ChangeRecord]]]]:
    """Group updates by key; per key, keep the highest-position update for each guard.

    Returns one list per key of (write, the records it stands for), keys in first-seen order.
    """
    groups: dict[tuple[tuple[str, Any], ...], _Group] = {}
    for index, (record, update) in enumerate(writes):
        key = tuple(sorted(update.key.items()))
        groups.setdefault(key, _Group()).add(index, record, update)
    return [group.ordered() for group in groups.values()]


def ensure_table(client: Any, request: Mapping[str, Any]) -> None:
    """CreateTable with `request` unless the table exists, then wait until it is ACTIVE.

    An existing table is left as it is (idempotent, for `migrate`); its shape is not compared.
    """
    try:
        client.create_table(**request)
    except ClientError as error:
        # Already there is what idempotent means here; anything else the operator must see.
        if error_code(error) != RESOURCE_IN_USE:
            raise
    client.get_waiter("table_exists").wait(
        TableName=request["TableName"], WaiterConfig={"Delay": 1, "MaxAttempts": 120}
    )


class DynamoDBSink:
    """Writes `GuardedUpdate`s to one DynamoDB table: guarded, coalesced, concurrent per key.

    The boto3 client should allow at least `max_workers` pooled connections
    (`Config(max_pool_connections=...)`, botocore's default is 10), or connections churn.
    """

    def __init__(self, client: Any, table: str, max_workers: int = DEFAULT_MAX_WORKERS) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self.client = client
        self.table = table
        self.max_workers = max_workers
        self._serializer = TypeSerializer()
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        pool_size = getattr(getattr(client, "meta", None), "config", None)
        pool_size = getattr(pool_size, "max_pool_connections", max_workers)
        if isinstance(pool_size, int) and pool_size < max_workers:
            log.warning(
                "dynamodb_sink.connection_pool_smaller_than_workers",
                table=table,
                max_pool_connections=pool_size,
                max_workers=max_workers,
            )

    def write(self, writes: Sequence[Write]) -> Results:
        """Apply each (record, update) in source order; return each record's outcome.

        A write refused by its guard is `stale`. A key that hit throttling, a 5xx or the
        network fails its records with a TransientError, one whose write DynamoDB rejected with
        a PoisonError naming the key; the other keys are written all the same.
        """
        groups = coalesce(writes)
        if len(groups) <= 1 or self.max_workers == 1:
            parts = [self._write_key(group) for group in groups]
        else:
            parts = list(self._executor().map(self._write_key, groups))
        results = Results()
        for part in parts:
            results.merge(part)
        return results

    def create_table(self, key: str, key_type: str = "S") -> None:
        """Create the table (on demand, hash key `key` of type S, N or B) unless it exists."""
        ensure_table(
            self.client,
            {
                "TableName": self.table,
                "BillingMode": "PAY_PER_REQUEST",
                "AttributeDefinitions": [{"AttributeName": key, "AttributeType": key_type}],
                "KeySchema": [{"AttributeName": key, "KeyType": "HASH"}],
            },
        )

    def close(self) -> None:
        """Stop the worker threads (idempotent)."""
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=self.max_workers, thread_name_prefix=f"sink-{self.table}"
                )
            return self._pool

    def _write_key(self, writes: list[tuple[GuardedUpdate, list[ChangeRecord]]]) -> Results:
        """Write one key's updates in order; stop at the first failure to keep the order."""
        results = Results()
        for update, records in writes:
            try:
                applied = self._write_one(update)
            except StreamProjectorError as error:
                for record in records:
                    results.failed(record, error)
                return results
            for record in records:
                if applied:
                    results.applied(record)
                else:
                    results.stale(record)
        return results

    def _write_one(self, update: GuardedUpdate) -> bool:
        """One conditional UpdateItem; False when the guard says the change is stale."""
        try:
            self.client.update_item(**self.request(update))
        except AWS_CALL_ERRORS as error:
            if isinstance(error, ClientError) and error_code(error) == CONDITION_FAILED:
                return False
            raise self._classify(error, update) from error
        return True

    def _classify(self, error: Exception, update: GuardedUpdate) -> StreamProjectorError:
        """Throttling, 5xx, network and a missing table are transient; else the record's fault."""
        if isinstance(error, ClientError) and error_code(error) == RESOURCE_NOT_FOUND:
            # Readiness shows this line: it names the table and the fix.
            return TransientError(
                f"table {self.table} does not exist ({RESOURCE_NOT_FOUND}): create it with "
                "`stream-projector migrate`"
            )
        where = f"{dict(update.key)!r} (guard {update.guard}) to {self.table}"
        transient = transient_error(error, f"writing {where}", SINK_TRANSIENT_CODES)
        if transient is not None:
            return transient
        if isinstance(error, ClientError):
            detail = f"{error_code(error)}: {error.response.get('Error', {}).get('Message', '')}"
        else:
            detail = f"{type(error).__name__}: {error}"
        return PoisonError(f"DynamoDB rejected the write of {where}: {detail}")

    def request(self, update: GuardedUpdate) -> dict[str, Any]:
        """The UpdateItem arguments for one update (public so benchmarks and tests can see)."""
        serialize = self._serializer.serialize
        names = {"#g": update.guard}
        try:
            values: dict[str, Any] = {":p": {"S": update.position}}
            sets = ["#g = :p"]
            for i, (attribute, value) in enumerate(update.assign.items()):
                names[f"#a{i}"] = attribute
                values[f":a{i}"] = serialize(value)
                sets.append(f"#a{i} = :a{i}")
            key = {name: serialize(value) for name, value in update.key.items()}
        except (TypeError, ValueError) as error:
            # e.g. a float or an empty set: the record's data, not the weather.
            raise PoisonError(
                f"cannot serialize update of {dict(update.key)!r}: {error}"
            ) from error
        expression = "SET " + ", ".join(sets)
        if update.remove:
            removes = []
            for i, attribute in enumerate(update.remove):
                names[f"#r{i}"] = attribute
                removes.append(f"#r{i}")
            expression += " REMOVE " + ", ".join(removes)
        return {
            "TableName": self.table,
            "Key": key,
            "UpdateExpression": expression,
            "ConditionExpression": "attribute_not_exists(#g) OR #g < :p",
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }
