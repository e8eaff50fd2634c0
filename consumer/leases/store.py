"""The lease table: KCL-compatible lease items in DynamoDB, every write conditional."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from botocore.exceptions import ClientError

from consumer.aws_errors import (
    AWS_CALL_ERRORS,
    CONDITION_FAILED,
    NETWORK_ERRORS,
    RESOURCE_IN_USE,
    RESOURCE_NOT_FOUND,
    error_code,
    transient_error,
)
from consumer.errors import LeaseLostError, MissingResourceError
from consumer.leases.lease import SENTINEL_TRIM_HORIZON, Lease

# Attribute names of the KCL's lease table, so a team can switch between the KCL and us.
LEASE_KEY = "leaseKey"
LEASE_OWNER = "leaseOwner"
LEASE_COUNTER = "leaseCounter"
CHECKPOINT = "checkpoint"
CHECKPOINT_SUB_SEQUENCE = "checkpointSubSequenceNumber"
OWNER_SWITCHES = "ownerSwitchesSinceCheckpoint"
PARENT_SHARD_ID = "parentShardId"
# Ours, not the KCL's (it ignores attributes it does not know, and its writes keep them):
# where `leases reset --to AT_TIMESTAMP` starts, and when a stream-projector worker last moved
# the counter. The stamp is valid only while the counter is the one it was written with, so a
# KCL worker's renewals read as "renewal time unknown", never as a stale time.
CHECKPOINT_TIMESTAMP = "checkpointTimestampMillis"
RENEWAL_MILLIS = "lastRenewalMillis"
RENEWAL_COUNTER = "lastRenewalCounter"


class LeaseStore(Protocol):
    """Where leases live. Every mutation is conditional on the counter the caller observed."""

    def ensure_table(self) -> None:
        """Create the table if it does not exist and wait until it is usable."""
        ...

    def list_leases(self) -> list[Lease]:
        """Every lease, read consistently."""
        ...

    def get(self, key: str) -> Lease | None:
        """One lease, read consistently, or None."""
        ...

    def create_if_absent(self, lease: Lease) -> bool:
        """Write a new lease; False if one already exists for that key."""
        ...

    def renew(self, lease: Lease) -> Lease:
        """Bump the counter of a lease this worker holds; LeaseLostError if it does not."""
        ...

    def take(self, lease: Lease, owner: str) -> Lease:
        """Claim a lease as observed; LeaseLostError if it changed since."""
        ...

    def release(self, lease: Lease) -> Lease:
        """Give a held lease up so any worker may take it at once."""
        ...

    def checkpoint(self, lease: Lease, sequence: str, sub_sequence: int) -> Lease:
        """Record progress on a held lease (fenced by owner and counter)."""
        ...

    def delete(self, key: str) -> None:
        """Remove a lease (a shard that no longer exists)."""
        ...

    def reset(self, lease: Lease, checkpoint: str, timestamp: float | None = None) -> Lease:
        """Move the checkpoint of the lease as observed and free it, fencing its owner."""
        ...


def lease_to_item(lease: Lease) -> dict[str, dict[str, Any]]:
    """The DynamoDB item of a lease, attribute for attribute as the KCL writes it."""
    item: dict[str, dict[str, Any]] = {
        LEASE_KEY: {"S": lease.lease_key},
        LEASE_COUNTER: {"N": str(lease.lease_counter)},
        CHECKPOINT: {"S": lease.checkpoint},
        CHECKPOINT_SUB_SEQUENCE: {"N": str(lease.checkpoint_sub_sequence_number)},
        OWNER_SWITCHES: {"N": str(lease.owner_switches_since_checkpoint)},
    }
    if lease.lease_owner is not None:
        item[LEASE_OWNER] = {"S": lease.lease_owner}
    # DynamoDB rejects empty sets, and the KCL omits the attribute for shards without parents.
    if lease.parent_shard_ids:
        item[PARENT_SHARD_ID] = {"SS": sorted(lease.parent_shard_ids)}
    if lease.checkpoint_timestamp is not None:
        item[CHECKPOINT_TIMESTAMP] = {"N": str(round(lease.checkpoint_timestamp * 1000))}
    return item


def lease_from_item(item: dict[str, dict[str, Any]]) -> Lease:
    """A lease from its DynamoDB item; attributes the KCL may omit get their defaults."""

    def number(name: str) -> int:
        value = item.get(name)
        return int(value["N"]) if value is not None else 0

    owner = item.get(LEASE_OWNER)
    checkpoint = item.get(CHECKPOINT)
    parents = item.get(PARENT_SHARD_ID)
    stamped = RENEWAL_MILLIS in item and number(RENEWAL_COUNTER) == number(LEASE_COUNTER)
    return Lease(
        lease_key=item[LEASE_KEY]["S"],
        lease_owner=owner["S"] if owner is not None else None,
        lease_counter=number(LEASE_COUNTER),
        checkpoint=checkpoint["S"] if checkpoint is not None else SENTINEL_TRIM_HORIZON,
        checkpoint_sub_sequence_number=number(CHECKPOINT_SUB_SEQUENCE),
        owner_switches_since_checkpoint=number(OWNER_SWITCHES),
        parent_shard_ids=frozenset(parents["SS"]) if parents is not None else frozenset(),
        checkpoint_timestamp=(
            number(CHECKPOINT_TIMESTAMP) / 1000 if CHECKPOINT_TIMESTAMP in item else None
        ),
        last_renewal=number(RENEWAL_MILLIS) / 1000 if stamped else None,
    )


class DynamoDBLeaseStore:
    """The lease table in DynamoDB through a low-level boto3 client."""

    def __init__(
        self,
        client: Any,
        table_name: str,
        page_size: int | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self.table_name = table_name
        self._page_size = page_size
        self._wall_clock = wall_clock

    def ensure_table(self) -> None:
        """Create the table (on-demand) if absent; a concurrent creator is not an error."""
        try:
            self._client.describe_table(TableName=self.table_name)
        except ClientError as error:
            if error_code(error) != RESOURCE_NOT_FOUND:
                raise self._classify(error) from error
            self._create_table()
        self._client.get_waiter("table_exists").wait(
            TableName=self.table_name, WaiterConfig={"Delay": 1, "MaxAttempts": 120}
        )

    def _create_table(self) -> None:
        try:
            self._client.create_table(
                TableName=self.table_name,
                AttributeDefinitions=[{"AttributeName": LEASE_KEY, "AttributeType": "S"}],
                KeySchema=[{"AttributeName": LEASE_KEY, "KeyType": "HASH"}],
                BillingMode="PAY_PER_REQUEST",
            )
        except ClientError as error:
            # Another replica created it between our describe and create: same outcome.
            if error_code(error) != RESOURCE_IN_USE:
                raise self._classify(error) from error

    def list_leases(self) -> list[Lease]:
        """Every lease, through a paginated, strongly consistent scan."""
        try:
            pagination = {"PageSize": self._page_size} if self._page_size else {}
            pages = self._client.get_paginator("scan").paginate(
                TableName=self.table_name, ConsistentRead=True, PaginationConfig=pagination
            )
            return [lease_from_item(item) for page in pages for item in page.get("Items", [])]
        except ClientError as error:
            if error_code(error) == RESOURCE_NOT_FOUND:
                raise MissingResourceError(
                    f"lease table {self.table_name!r} does not exist yet: the daemon creates it "
                    "when it first starts (`stream-projector run`); if it should exist, check "
                    "`application` and `leases.table` in the config"
                ) from None
            raise self._classify(error) from error
        except AWS_CALL_ERRORS as error:
            raise self._classify(error) from error

    def get(self, key: str) -> Lease | None:
        """One lease, strongly consistent, or None."""
        try:
            response = self._client.get_item(
                TableName=self.table_name, Key={LEASE_KEY: {"S": key}}, ConsistentRead=True
            )
        except AWS_CALL_ERRORS as error:
            raise self._classify(error) from error
        item = response.get("Item")
        return lease_from_item(item) if item else None

    def create_if_absent(self, lease: Lease) -> bool:
        """Write a new lease unless its key exists; True when this call created it."""
        try:
            self._client.put_item(
                TableName=self.table_name,
                Item=lease_to_item(lease),
                ConditionExpression="attribute_not_exists(#key)",
                ExpressionAttributeNames={"#key": LEASE_KEY},
            )
        except ClientError as error:
            if error_code(error) == CONDITION_FAILED:
                return False
            raise self._classify(error) from error
        except NETWORK_ERRORS as error:
            raise self._classify(error) from error
        return True

    def renew(self, lease: Lease) -> Lease:
        """Bump the counter, if the lease is still ours at the counter we last saw."""
        return self._update(
            lease,
            "",
            "#counter = :expected AND #owner = :owner",
            {":owner": {"S": self._owner_of(lease)}},
            ambiguous_ok=lambda stored: stored.lease_owner == lease.lease_owner,
        )

    def take(self, lease: Lease, owner: str) -> Lease:
        """Claim the lease as observed: new owner, counter+1, one more owner switch if it moved."""
        switches = lease.owner_switches_since_checkpoint + (lease.lease_owner != owner)
        values: dict[str, dict[str, Any]] = {
            ":new_owner": {"S": owner},
            ":switches": {"N": str(switches)},
        }
        if lease.lease_owner is None:
            owner_condition = "attribute_not_exists(#owner)"
        else:
            owner_condition = "#owner = :old_owner"
            values[":old_owner"] = {"S": lease.lease_owner}
        return self._update(
            lease,
            "#owner = :new_owner, #switches = :switches",
            f"#counter = :expected AND {owner_condition}",
            values,
            ambiguous_ok=lambda stored: stored.lease_owner == owner,
        )

    def release(self, lease: Lease) -> Lease:
        """Drop the owner and bump the counter, so another worker can take it without waiting."""
        return self._update(
            lease,
            "",
            "#counter = :expected AND #owner = :owner",
            {":owner": {"S": self._owner_of(lease)}},
            ambiguous_ok=lambda stored: stored.lease_owner is None,
            remove="#owner",
        )

    def checkpoint(self, lease: Lease, sequence: str, sub_sequence: int) -> Lease:
        """Record progress, fenced: only while the owner and counter are what we hold."""
        return self._update(
            lease,
            "#checkpoint = :checkpoint, #sub = :sub, #switches = :zero",
            "#counter = :expected AND #owner = :owner",
            {
                ":owner": {"S": self._owner_of(lease)},
                ":checkpoint": {"S": sequence},
                ":sub": {"N": str(sub_sequence)},
                ":zero": {"N": "0"},
            },
            ambiguous_ok=lambda stored: (
                stored.lease_owner == lease.lease_owner
                and stored.checkpoint == sequence
                and stored.checkpoint_sub_sequence_number == sub_sequence
            ),
        )

    def reset(self, lease: Lease, checkpoint: str, timestamp: float | None = None) -> Lease:
        """Set the checkpoint of the lease as observed (owner and counter) and free it.

        The counter bump and the removed owner fence whoever held it: its next renewal or
        checkpoint fails its condition and it stops the shard, so nothing it still had in
        flight can be checkpointed over the reset.
        """
        if lease.lease_owner is None:
            owner_condition = "attribute_not_exists(#owner)"
            values: dict[str, dict[str, Any]] = {}
        else:
            owner_condition = "#owner = :owner"
            values = {":owner": {"S": lease.lease_owner}}
        values.update({":checkpoint": {"S": checkpoint}, ":zero": {"N": "0"}})
        sets = "#checkpoint = :checkpoint, #sub = :zero, #switches = :zero"
        remove = "#owner"
        if timestamp is None:
            remove += ", #timestamp"
        else:
            sets += ", #timestamp = :timestamp"
            values[":timestamp"] = {"N": str(round(timestamp * 1000))}
        return self._update(
            lease,
            sets,
            f"#counter = :expected AND {owner_condition}",
            values,
            ambiguous_ok=lambda stored: (
                stored.lease_owner is None and stored.checkpoint == checkpoint
            ),
            remove=remove,
        )

    def delete(self, key: str) -> None:
        """Remove a lease unconditionally."""
        try:
            self._client.delete_item(TableName=self.table_name, Key={LEASE_KEY: {"S": key}})
        except AWS_CALL_ERRORS as error:
            raise self._classify(error) from error

    def _classify(self, error: Exception) -> Exception:
        """What is left after botocore's own retries: our transient error, or `error` itself."""
        return transient_error(error, f"lease table {self.table_name}") or error

    @staticmethod
    def _owner_of(lease: Lease) -> str:
        if lease.lease_owner is None:
            raise LeaseLostError(f"lease {lease.lease_key} has no owner to act for")
        return lease.lease_owner

    def _update(
        self,
        lease: Lease,
        sets: str,
        condition: str,
        values: dict[str, dict[str, Any]],
        ambiguous_ok: Callable[[Lease], bool],
        remove: str = "",
    ) -> Lease:
        """One conditional UpdateItem on the lease at its observed counter; the new lease.

        Every write bumps the counter and stamps when it did (see RENEWAL_MILLIS); `sets` and
        `remove` are the rest of its SET and REMOVE clauses.
        """
        names = {
            "#counter": LEASE_COUNTER,
            "#owner": LEASE_OWNER,
            "#checkpoint": CHECKPOINT,
            "#sub": CHECKPOINT_SUB_SEQUENCE,
            "#switches": OWNER_SWITCHES,
            "#timestamp": CHECKPOINT_TIMESTAMP,
            "#renewed_at": RENEWAL_MILLIS,
            "#renewed_counter": RENEWAL_COUNTER,
        }
        update = "SET #counter = :next, #renewed_at = :now, #renewed_counter = :next"
        update += f", {sets}" if sets else ""
        update += f" REMOVE {remove}" if remove else ""
        text = update + " " + condition
        values = {
            ":expected": {"N": str(lease.lease_counter)},
            ":next": {"N": str(lease.lease_counter + 1)},
            ":now": {"N": str(round(self._wall_clock() * 1000))},
            **values,
        }
        try:
            response = self._client.update_item(
                TableName=self.table_name,
                Key={LEASE_KEY: {"S": lease.lease_key}},
                UpdateExpression=update,
                ConditionExpression=condition,
                ExpressionAttributeNames={k: v for k, v in names.items() if k in text},
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
            )
        except ClientError as error:
            if error_code(error) != CONDITION_FAILED:
                raise self._classify(error) from error
            return self._after_condition_failed(lease, ambiguous_ok)
        except NETWORK_ERRORS as error:
            raise self._classify(error) from error
        return lease_from_item(response["Attributes"])

    def _after_condition_failed(self, lease: Lease, ambiguous_ok: Callable[[Lease], bool]) -> Lease:
        """Tell a lost lease from our own write retried by botocore after a lost response.

        A retried request whose first attempt did succeed fails its condition; the item then
        shows exactly our write (counter one past what we sent), which is a success.
        """
        stored = self.get(lease.lease_key)
        if (
            stored is not None
            and stored.lease_counter == lease.lease_counter + 1
            and ambiguous_ok(stored)
        ):
            return stored
        owner = stored.lease_owner if stored is not None else None
        raise LeaseLostError(
            f"lease {lease.lease_key} changed: expected counter {lease.lease_counter} "
            f"owner {lease.lease_owner}, found owner {owner}"
        )
