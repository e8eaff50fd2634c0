"""`leases reset`: move checkpoints back or forward, fenced, after a dry run shows the plan.

Modelled on Kafka's consumer-group offset reset: choose a target (TRIM_HORIZON, LATEST,
AT_TIMESTAMP T, SEQUENCE S), a scope (every shard, or `--shard`), look at the plan, then
execute it. A shard whose lease a live worker holds is refused unless forced; every write is
conditional on the lease as observed and bumps its counter, so a worker that still holds it
(forced, or judged dead by mistake) loses it at its next renewal or checkpoint and can never
checkpoint over the reset (docs/design.md, invariant 3).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from botocore.exceptions import BotoCoreError, ClientError

from consumer.errors import LeaseLostError, OperatorInputError, StreamProjectorError
from consumer.leases.lease import (
    SENTINEL_AT_TIMESTAMP,
    SENTINEL_LATEST,
    SENTINEL_TRIM_HORIZON,
    Lease,
)
from consumer.leases.store import LeaseStore
from consumer.sources.position import StartPosition
from consumer.sources.reader import StreamSource

TargetKind = Literal["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP", "SEQUENCE"]
TARGET_KINDS: tuple[TargetKind, ...] = ("TRIM_HORIZON", "LATEST", "AT_TIMESTAMP", "SEQUENCE")


@dataclass(frozen=True, slots=True)
class ResetTarget:
    """Where `--to` moves the checkpoints: a sentinel, a timestamp, or one sequence number."""

    kind: TargetKind
    timestamp: float | None = None
    sequence: str | None = None

    @classmethod
    def parse(cls, kind: str, value: str | None) -> ResetTarget:
        """From `--to KIND [VALUE]`; OperatorInputError names what is wrong."""
        kind = kind.upper()
        if kind not in TARGET_KINDS:
            raise OperatorInputError(
                f"--to {kind}: expected one of {', '.join(TARGET_KINDS)} "
                "(AT_TIMESTAMP and SEQUENCE take a value)"
            )
        if kind in ("TRIM_HORIZON", "LATEST"):
            if value is not None:
                raise OperatorInputError(f"--to {kind} takes no value (got {value!r})")
            return cls(kind)
        if value is None:
            example = "2025-04-01T09:00:00Z" if kind == "AT_TIMESTAMP" else "4968048210310..."
            raise OperatorInputError(f"--to {kind} needs a value, e.g. --to {kind} {example}")
        if kind == "AT_TIMESTAMP":
            return cls("AT_TIMESTAMP", timestamp=parse_timestamp(value))
        if not value.isdigit():
            raise OperatorInputError(f"--to SEQUENCE {value!r}: a sequence number is all digits")
        return cls("SEQUENCE", sequence=value)

    @property
    def checkpoint(self) -> str:
        """The value the lease's `checkpoint` attribute gets."""
        if self.kind == "SEQUENCE":
            assert self.sequence is not None
            return self.sequence
        return {
            "TRIM_HORIZON": SENTINEL_TRIM_HORIZON,
            "LATEST": SENTINEL_LATEST,
            "AT_TIMESTAMP": SENTINEL_AT_TIMESTAMP,
        }[self.kind]

    def describe(self) -> str:
        """The target as the operator wrote it."""
        if self.timestamp is not None:
            return f"AT_TIMESTAMP {datetime.fromtimestamp(self.timestamp, UTC).isoformat()}"
        return self.checkpoint


def parse_timestamp(value: str) -> float:
    """ISO 8601 (naive means UTC, a trailing Z is accepted) or epoch seconds."""
    try:
        return float(value)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise OperatorInputError(
            f"--to AT_TIMESTAMP {value!r}: expected ISO 8601 like 2025-04-01T09:00:00Z "
            "or epoch seconds"
        ) from None
    return moment.replace(tzinfo=moment.tzinfo or UTC).timestamp()


@dataclass(frozen=True, slots=True)
class ResetStep:
    """One shard of the plan: its lease as observed, what happens, and why not if refused."""

    lease: Lease
    action: Literal["reset", "unchanged", "refused"]
    reason: str = ""


def plan_reset(
    leases: Iterable[Lease],
    target: ResetTarget,
    *,
    shards: Sequence[str] = (),
    now: float,
    failover_seconds: float,
    force: bool = False,
) -> list[ResetStep]:
    """What a reset would do to each selected lease; pure, so a dry run shows exactly this."""
    by_key = {lease.lease_key: lease for lease in leases}
    unknown = sorted(set(shards) - set(by_key))
    if unknown:
        known = ", ".join(sorted(by_key)) or "none"
        raise OperatorInputError(
            f"--shard {unknown[0]}: no lease for this shard in the lease table (leases: {known})"
        )
    if target.kind == "SEQUENCE" and len(shards) != 1:
        raise OperatorInputError(
            "--to SEQUENCE: a sequence number belongs to one shard; name it with --shard ID"
        )
    selected = [by_key[key] for key in sorted(set(shards) or by_key)]
    return [_step(lease, target, now, failover_seconds, force) for lease in selected]


def _step(
    lease: Lease, target: ResetTarget, now: float, failover_seconds: float, force: bool
) -> ResetStep:
    if target.kind == "LATEST" and lease.finished:
        return ResetStep(lease, "unchanged", "finished: nothing after its end to skip to")
    if (
        lease.lease_owner is None
        and lease.checkpoint == target.checkpoint
        and lease.checkpoint_timestamp == target.timestamp
    ):
        return ResetStep(lease, "unchanged", "already there")
    if lease.lease_owner is not None and not lease.looks_expired(now, failover_seconds):
        age = lease.renewal_age(now)
        renewed = "renewal time unknown" if age is None else f"renewed {age:.1f}s ago"
        if not force:
            return ResetStep(
                lease,
                "refused",
                f"held by live worker {lease.lease_owner} ({renewed}); stop the workers or "
                "wait for the lease to expire, or add --force to fence it",
            )
        return ResetStep(lease, "reset", f"fences live worker {lease.lease_owner}")
    return ResetStep(lease, "reset")


def check_sequence(source: StreamSource, shard_id: str, sequence: str) -> None:
    """Ask the stream whether `sequence` is a position in the shard (within retention)."""
    try:
        source.open_reader(shard_id, StartPosition("AT_SEQUENCE_NUMBER", sequence)).close()
    except (ClientError, BotoCoreError, StreamProjectorError) as exc:
        said = exc.__cause__ or exc  # the stream's own words, not our reading of them
        raise OperatorInputError(
            f"--to SEQUENCE {sequence}: shard {shard_id} has no readable record with this "
            f"sequence number ({said})"
        ) from None


@dataclass(frozen=True, slots=True)
class ResetResult:
    """What happened to one shard when the plan was executed."""

    shard_id: str
    outcome: Literal["reset", "skipped", "conflict"]
    detail: str


def execute_reset(
    store: LeaseStore,
    steps: Sequence[ResetStep],
    target: ResetTarget,
    before_write: Callable[[Lease], None] = lambda lease: None,
) -> list[ResetResult]:
    """Write every `reset` step, each conditional on the lease as the plan observed it.

    `before_write` sees the old lease first (the dead-letter ledger keeps its high-water
    checkpoint, so letters from before a rewind stay redrivable). A lease that moved since
    the plan is reported, not retried: the operator looks again.
    """
    results = []
    for step in steps:
        if step.action != "reset":
            results.append(ResetResult(step.lease.lease_key, "skipped", step.reason or step.action))
            continue
        before_write(step.lease)
        try:
            store.reset(step.lease, target.checkpoint, target.timestamp)
        except LeaseLostError:
            results.append(
                ResetResult(
                    step.lease.lease_key,
                    "conflict",
                    "not reset: changed since it was read (a worker renewed or took it); "
                    "run the command again",
                )
            )
            continue
        results.append(ResetResult(step.lease.lease_key, "reset", f"reset to {target.describe()}"))
    return results
