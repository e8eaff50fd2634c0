"""Idempotency records for side effects: claim in DynamoDB before acting, mark done after.

A side effect (publishing an alert) cannot be guarded by a condition on the sink itself, so
each one has an identity and an idempotency record (key `id`) in a DynamoDB table:

1. `claim(id)`: a conditional PutItem (`attribute_not_exists(id)`) writes it as PENDING with
   this process as owner and a `claimed_at` time. Exactly one claimant wins.
2. The caller performs the effect, then `complete(id)` marks the record DONE. If the effect
   fails, `release(id)` deletes the PENDING record so a retry claims it again and the effect
   is not lost.
3. A claim that finds DONE is a duplicate (skip it). One that finds PENDING is `BUSY`: another
   worker is acting right now, or crashed while acting; once the claim is older than
   `claim_timeout` it may be taken over (the crash case), so the effect still happens.

This is at-least-once with duplicates confined to a crash (or a lost DynamoDB write) between
the effect succeeding and `complete` being stored; without a crash, each effect happens once.
Every record carries `expires_at` (epoch seconds) for DynamoDB TTL; it must outlive the
stream's retention (24 h on DynamoDB Streams, up to 365 days on Kinesis), or a replay older
than the TTL would act again.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any

from botocore.exceptions import ClientError

from consumer.aws_errors import (
    AWS_CALL_ERRORS,
    CONDITION_FAILED,
    SINK_TRANSIENT_CODES,
    error_code,
    raise_translated,
)
from projections.sinks.dynamodb import ensure_table

DEFAULT_TTL_SECONDS = 7 * 24 * 3600
DEFAULT_CLAIM_TIMEOUT_SECONDS = 300.0
TTL_ATTRIBUTE = "expires_at"
PENDING, DONE = "PENDING", "DONE"


class Claim(Enum):
    """What `claim` found."""

    CLAIMED = "claimed"  # ours now: act, then complete() or release()
    DONE = "done"  # already acted on: skip
    BUSY = "busy"  # someone else holds a fresh claim: retry later


class IdempotencyStore:
    """Claims, completions and releases of idempotency records in one DynamoDB table."""

    def __init__(
        self,
        client: Any,
        table: str,
        ttl_seconds: int = DEFAULT_TTL_SECONDS,
        claim_timeout: float = DEFAULT_CLAIM_TIMEOUT_SECONDS,
        clock: Callable[[], float] = time.time,
        owner: str | None = None,
    ) -> None:
        self.client = client
        self.table = table
        self.ttl_seconds = ttl_seconds
        self.claim_timeout = claim_timeout
        self.clock = clock
        self.owner = owner or uuid.uuid4().hex

    def claim(self, key: str) -> Claim:
        """Take the record for `key` if nobody has, or if a PENDING claim has gone stale."""
        now = self.clock()
        try:
            self._call(
                "put_item",
                TableName=self.table,
                Item={
                    "id": {"S": key},
                    "status": {"S": PENDING},
                    "owner": {"S": self.owner},
                    "claimed_at": {"N": repr(now)},
                    TTL_ATTRIBUTE: {"N": str(int(now) + self.ttl_seconds)},
                },
                ConditionExpression=(
                    "attribute_not_exists(id) OR (#s = :pending AND claimed_at < :stale)"
                ),
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={
                    ":pending": {"S": PENDING},
                    ":stale": {"N": repr(now - self.claim_timeout)},
                },
            )
        except ClientError as error:
            if error_code(error) != CONDITION_FAILED:
                raise
            return self._existing(key)
        return Claim.CLAIMED

    def _existing(self, key: str) -> Claim:
        item = self._call(
            "get_item", TableName=self.table, Key={"id": {"S": key}}, ConsistentRead=True
        ).get("Item")
        if item is None:
            # Released between our put and our read: the caller's retry will claim it.
            return Claim.BUSY
        return Claim.DONE if item.get("status", {}).get("S") == DONE else Claim.BUSY

    def complete(self, key: str, attributes: Mapping[str, str] | None = None) -> None:
        """Mark `key` DONE (with string `attributes`, e.g. the message id)."""
        names = {"#s": "status"}
        values: dict[str, Any] = {":done": {"S": DONE}, ":now": {"N": repr(self.clock())}}
        sets = ["#s = :done", "completed_at = :now"]
        for index, (name, value) in enumerate((attributes or {}).items()):
            names[f"#a{index}"] = name
            values[f":a{index}"] = {"S": value}
            sets.append(f"#a{index} = :a{index}")
        self._call(
            "update_item",
            TableName=self.table,
            Key={"id": {"S": key}},
            UpdateExpression="SET " + ", ".join(sets),
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )

    def release(self, key: str) -> None:
        """Delete our PENDING claim so the effect is retried; someone else's is left alone."""
        try:
            self._call(
                "delete_item",
                TableName=self.table,
                Key={"id": {"S": key}},
                ConditionExpression="#s = :pending AND #o = :owner",
                ExpressionAttributeNames={"#s": "status", "#o": "owner"},
                ExpressionAttributeValues={
                    ":pending": {"S": PENDING},
                    ":owner": {"S": self.owner},
                },
            )
        except ClientError as error:
            if error_code(error) != CONDITION_FAILED:
                raise

    def status(self, key: str) -> str | None:
        """PENDING, DONE or None (no record): for tests and operators."""
        item = self._call(
            "get_item", TableName=self.table, Key={"id": {"S": key}}, ConsistentRead=True
        ).get("Item")
        return None if item is None else item["status"]["S"]

    def _call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response: dict[str, Any] = getattr(self.client, operation)(**kwargs)
        except AWS_CALL_ERRORS as error:
            raise_translated(error, f"idempotency table {self.table}", SINK_TRANSIENT_CODES)
        return response


def create_table(client: Any, table: str) -> None:
    """Create the idempotency table (key `id`, on demand) with TTL on `expires_at`, if absent."""
    ensure_table(
        client,
        {
            "TableName": table,
            "BillingMode": "PAY_PER_REQUEST",
            "AttributeDefinitions": [{"AttributeName": "id", "AttributeType": "S"}],
            "KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}],
        },
    )
    ttl = client.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
    if ttl.get("TimeToLiveStatus") in ("ENABLED", "ENABLING"):
        return
    client.update_time_to_live(
        TableName=table,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
    )
