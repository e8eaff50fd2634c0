"""Whether a dead letter could be real: the checks `dlq redrive` makes before applying one.

A letter is applied only if it is signed with our key (when dead_letter.signing_key is set),
names this application and its stream, names a shard this application has (or had) a lease
for, and a position at or before the furthest checkpoint that shard ever had: a record the
daemon has not read yet cannot have failed in it. What each check stops, and what is left:
docs/failures.md, "Threat model".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from consumer.dead_letters.queue import Message
from consumer.dead_letters.signing import Signer
from consumer.leases.lease import Lease, covers, furthest


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a letter is not applied: a short kind (counted in summaries) and the detail."""

    kind: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


def furthest_checkpoints(leases: Iterable[Lease], recorded: Mapping[str, str]) -> dict[str, str]:
    """Each shard's furthest checkpoint, from the lease table and the ledger's record."""
    positions = dict(recorded)
    for lease in leases:
        known = positions.get(lease.lease_key)
        positions[lease.lease_key] = (
            lease.checkpoint if known is None else furthest(known, lease.checkpoint)
        )
    return positions


def same_stream(configured: str, named: str) -> bool:
    """The letter's stream is ours; a Kinesis name matches its ARN (`...:stream/<name>`)."""
    if configured == named:
        return True
    if ":dynamodb:" in configured or ":dynamodb:" in named:
        return False
    return configured.rsplit("stream/", 1)[-1] == named.rsplit("stream/", 1)[-1]


@dataclass(frozen=True, slots=True)
class LetterCheck:
    """The checks for one application reading one stream."""

    application: str
    stream: str
    positions: Mapping[str, str]
    signer: Signer | None = None

    def refusal(self, message: Message) -> Refusal | None:
        """The first check the message fails, or None when it may be applied."""
        if message.defect is not None:
            return Refusal(message.defect_kind or "malformed", message.defect)
        envelope = message.envelope
        assert envelope is not None  # a message without a defect carries its envelope
        if self.signer is not None:
            for part in message.signed:
                problem = self.signer.problem(part)
                if problem is not None:
                    return Refusal("signature", problem)
        application = envelope.get("application")
        if application != self.application:
            return Refusal(
                "application",
                f"letter of application {application!r}, this config is {self.application!r}",
            )
        stream = str(envelope["stream"])
        if not same_stream(self.stream, stream):
            return Refusal(
                "stream", f"letter of stream {stream!r}, this config reads {self.stream!r}"
            )
        shard = str(envelope["shard_id"])
        checkpoint = self.positions.get(shard)
        if checkpoint is None:
            return Refusal("shard", f"shard {shard!r} never had a lease of this application")
        sequence = str(envelope["sequence_number"])
        if not covers(checkpoint, sequence):
            return Refusal(
                "position",
                f"sequence {sequence} of shard {shard} is past its furthest checkpoint "
                f"{checkpoint}: a record not read yet cannot have failed",
            )
        return None
