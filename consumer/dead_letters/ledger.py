"""The dead-letter ledger: which letters were sent, and how far each shard has ever been read.

A small DynamoDB table, `<application>-dead-letters`, created like the lease table. It is not
part of the lease table on purpose: the KCL (and our own coordinator) reads every item of the
lease table as a lease, so any other item there would be taken, balanced or deleted as one.

Letters: before a letter is sent, a conditional put claims its identity (projection, stream,
shard, sequence, sub-sequence; see `letter_id`). A replay, a second worker racing for the
shard, or a retried batch finds the claim and does not send the letter again. The claim
is written before the send, so a send that fails (or a worker that dies between the two)
leaves a `pending` claim; after `claim_seconds` anyone may take it over and send: a letter is
never lost, and is sent twice only when a send succeeded but its worker died before marking it
(dead letters are at-least-once; docs/failures.md). The item lives as long as SQS may keep the
letter (14 days at most), and `dlq` tools delete it with the letter, so a record that fails
again after its letter was redriven or purged is dead-lettered again.

Shards: the furthest checkpoint each shard ever had (a finished shard whose lease the worker
deletes, a checkpoint a reset moves back), so `dlq redrive` can still tell that a letter's
position was really read by this application.
"""

from __future__ import annotations

import enum
import time
import uuid
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from consumer.aws_errors import (
    CONDITION_FAILED,
    RESOURCE_IN_USE,
    RESOURCE_NOT_FOUND,
    error_code,
    raise_translated,
)
from consumer.errors import TransientError
from consumer.leases.lease import furthest

KEY = "id"
LETTER = "letter#"
SHARD = "shard#"
EXPIRES = "expires_at"
# SQS keeps a message 14 days at the most: a claim older than that names no letter any more.
RETENTION_SECONDS = 14 * 24 * 3600
# How long a pending claim holds off other senders: long enough for any send to finish.
CLAIM_SECONDS = 60.0


class Claim(enum.Enum):
    """What the ledger says about a letter that is about to be sent."""

    SEND = "send"  # ours to send now
    SENT = "sent"  # already delivered: do not send again
    BUSY = "busy"  # another sender claimed it moments ago: wait, then ask again


class DeadLetterLedger:
    """The ledger table through a low-level DynamoDB client."""

    def __init__(
        self,
        client: Any,
        table_name: str,
        *,
        owner: str | None = None,
        claim_seconds: float = CLAIM_SECONDS,
        retention_seconds: float = RETENTION_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self.table_name = table_name
        # One per process: a claim of ours survives our own retries.
        self.owner = owner or uuid.uuid4().hex
        self._claim_seconds = claim_seconds
        self._retention = retention_seconds
        self._clock = clock
        self._ready = False

    # -- the table ----------------------------------------------------------------------------

    def ensure_table(self) -> None:
        """Create the table (on demand, items expiring by TTL) unless it exists."""
        if self._ready:
            return
        try:
            try:
                self._client.describe_table(TableName=self.table_name)
            except ClientError as exc:
                if error_code(exc) != RESOURCE_NOT_FOUND:
                    raise
                self._create()
        except (ClientError, BotoCoreError) as exc:
            raise_translated(exc, f"dead-letter ledger {self.table_name}")
        self._ready = True

    def _create(self) -> None:
        try:
            self._client.create_table(
                TableName=self.table_name,
                AttributeDefinitions=[{"AttributeName": KEY, "AttributeType": "S"}],
                KeySchema=[{"AttributeName": KEY, "KeyType": "HASH"}],
                BillingMode="PAY_PER_REQUEST",
            )
        except ClientError as exc:
            # Another replica created it between our describe and create: same outcome.
            if error_code(exc) != RESOURCE_IN_USE:
                raise
        self._client.get_waiter("table_exists").wait(
            TableName=self.table_name, WaiterConfig={"Delay": 1, "MaxAttempts": 120}
        )
        self._client.update_time_to_live(
            TableName=self.table_name,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": EXPIRES},
        )

    # -- letters ------------------------------------------------------------------------------

    def claim(self, letter_id: str) -> Claim:
        """Claim the right to send a letter, unless it was sent or another sender holds it."""
        self.ensure_table()
        now = self._clock()
        try:
            self._client.put_item(
                TableName=self.table_name,
                Item={
                    KEY: {"S": LETTER + letter_id},
                    "state": {"S": "pending"},
                    "claimed_by": {"S": self.owner},
                    "claimed_at": {"N": f"{now:.3f}"},
                    EXPIRES: {"N": str(int(now + self._retention))},
                },
                # Free, expired (TTL deletes lazily), ours, or a claim whose sender died.
                ConditionExpression=(
                    "attribute_not_exists(#id) OR #expires < :now OR (#state = :pending AND "
                    "(#by = :me OR #at < :stale))"
                ),
                ExpressionAttributeNames={
                    "#id": KEY,
                    "#expires": EXPIRES,
                    "#state": "state",
                    "#by": "claimed_by",
                    "#at": "claimed_at",
                },
                ExpressionAttributeValues={
                    ":now": {"N": str(int(now))},
                    ":pending": {"S": "pending"},
                    ":me": {"S": self.owner},
                    ":stale": {"N": f"{now - self._claim_seconds:.3f}"},
                },
            )
        except ClientError as exc:
            if error_code(exc) != CONDITION_FAILED:
                raise_translated(exc, f"dead-letter ledger claim {letter_id[:16]}")
            return self._claimed_elsewhere(letter_id)
        except BotoCoreError as exc:
            raise_translated(exc, f"dead-letter ledger claim {letter_id[:16]}")
        return Claim.SEND

    def _claimed_elsewhere(self, letter_id: str) -> Claim:
        item = self._get(LETTER + letter_id)
        if item is None:  # deleted between our put and this read: ask again next time
            return Claim.BUSY
        return Claim.SENT if item.get("state", {}).get("S") == "sent" else Claim.BUSY

    def mark_sent(self, letter_id: str) -> None:
        """Record that SQS accepted the letter."""
        now = self._clock()
        self._call(
            "mark sent",
            lambda: self._client.update_item(
                TableName=self.table_name,
                Key={KEY: {"S": LETTER + letter_id}},
                UpdateExpression="SET #state = :sent, sent_at = :now, #expires = :expires",
                ExpressionAttributeNames={"#state": "state", "#expires": EXPIRES},
                ExpressionAttributeValues={
                    ":sent": {"S": "sent"},
                    ":now": {"N": f"{now:.3f}"},
                    ":expires": {"N": str(int(now + self._retention))},
                },
            ),
        )

    def forget(self, letter_id: str) -> None:
        """The letter left the queue (redriven, deleted): a new failure may be sent again."""
        self._call(
            "forget",
            lambda: self._client.delete_item(
                TableName=self.table_name, Key={KEY: {"S": LETTER + letter_id}}
            ),
        )

    # -- shards -------------------------------------------------------------------------------

    def record_checkpoint(self, shard_id: str, checkpoint: str, attempts: int = 5) -> None:
        """Remember `checkpoint` as the shard's furthest unless it already got further."""
        self.ensure_table()
        for _ in range(attempts):
            item = self._get(SHARD + shard_id)
            stored = item["checkpoint"]["S"] if item is not None else None
            wanted = checkpoint if stored is None else furthest(stored, checkpoint)
            if wanted == stored:
                return
            if stored is None:
                condition: dict[str, Any] = {
                    "ConditionExpression": "attribute_not_exists(#id)",
                    "ExpressionAttributeNames": {"#id": KEY},
                }
            else:
                condition = {
                    "ConditionExpression": "#cp = :stored",
                    "ExpressionAttributeNames": {"#cp": "checkpoint"},
                    "ExpressionAttributeValues": {":stored": {"S": stored}},
                }
            try:
                self._client.put_item(
                    TableName=self.table_name,
                    Item={
                        KEY: {"S": SHARD + shard_id},
                        "checkpoint": {"S": wanted},
                        "recorded_at": {"N": f"{self._clock():.3f}"},
                    },
                    **condition,
                )
                return
            except ClientError as exc:
                if error_code(exc) != CONDITION_FAILED:
                    raise_translated(exc, f"dead-letter ledger shard {shard_id}")
            except BotoCoreError as exc:
                raise_translated(exc, f"dead-letter ledger shard {shard_id}")
        raise TransientError(f"dead-letter ledger: shard {shard_id} kept changing; try again")

    def shard_checkpoints(self) -> dict[str, str]:
        """Every shard's furthest recorded checkpoint, by shard id."""
        found: dict[str, str] = {}
        try:
            pages = self._client.get_paginator("scan").paginate(
                TableName=self.table_name,
                ConsistentRead=True,
                FilterExpression="begins_with(#id, :shard)",
                ExpressionAttributeNames={"#id": KEY},
                ExpressionAttributeValues={":shard": {"S": SHARD}},
            )
            for page in pages:
                for item in page.get("Items", []):
                    found[item[KEY]["S"].removeprefix(SHARD)] = item["checkpoint"]["S"]
        except ClientError as exc:
            if error_code(exc) == RESOURCE_NOT_FOUND:
                return {}  # no letter was ever sent, no shard recorded
            raise_translated(exc, f"dead-letter ledger {self.table_name}")
        except BotoCoreError as exc:
            raise_translated(exc, f"dead-letter ledger {self.table_name}")
        return found

    # -- plumbing -----------------------------------------------------------------------------

    def _get(self, key: str) -> dict[str, Any] | None:
        response = self._call(
            "read",
            lambda: self._client.get_item(
                TableName=self.table_name, Key={KEY: {"S": key}}, ConsistentRead=True
            ),
        )
        item: dict[str, Any] | None = response.get("Item")
        return item

    def _call(self, what: str, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except (ClientError, BotoCoreError) as exc:
            raise_translated(exc, f"dead-letter ledger {what}")
