"""Dead letters into SQS (standard or FIFO), with envelopes over the size limit stored in S3.

A letter is delivered when SQS accepted it; until then `send` raises TransientError and the
pipeline stalls the shard, so no checkpoint ever moves past an undelivered poison record.
With a ledger (consumer/dead_letters/ledger.py), a letter already sent by anyone (a replay,
another worker) is not sent again; with a signer, every envelope carries an HMAC.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import structlog
from botocore.exceptions import BotoCoreError, ClientError

from consumer.config import Settings
from consumer.dead_letters.ledger import Claim, DeadLetterLedger
from consumer.dead_letters.letter import DeadLetter
from consumer.dead_letters.signing import SIGNATURE, Signer
from consumer.errors import TransientError
from consumer.pipeline.retry import Backoff, retry
from projections.projection import Resources

log = structlog.get_logger(__name__)

# SQS limits: 10 entries per SendMessageBatch, 256 KiB per message (body and attributes) and
# per batch in total.
MAX_BATCH_ENTRIES = 10
MAX_MESSAGE_BYTES = 256 * 1024
# Rounds of resending the entries SQS refused before giving up on this call.
RESEND_ROUNDS = 3
# Letters this process already delivered, so a call repeated after a partial failure does not
# send the delivered ones again (FIFO queues would drop them; standard queues would not).
REMEMBERED = 10_000


class _Refused(Exception):
    """SQS accepted the call but refused some entries (their `Failed` items)."""

    def __init__(self, failures: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(failures)} entries refused")
        self.failures = failures


def dedup_id(letter: DeadLetter) -> str:
    """The letter's identity (the ledger key), also FIFO's MessageDeduplicationId."""
    return letter.identity


def attributes(letter: DeadLetter) -> dict[str, dict[str, str]]:
    """Message attributes to filter on without reading bodies (SQS refuses empty values)."""
    values = {
        "reason": letter.reason,
        "projection": letter.projection,
        "source": letter.source,
        "error_type": letter.error_type,
    }
    return {
        name: {"DataType": "String", "StringValue": value or "-"} for name, value in values.items()
    }


def _attributes_size(attrs: dict[str, dict[str, str]]) -> int:
    return sum(
        len(name.encode()) + len(a["DataType"].encode()) + len(a["StringValue"].encode())
        for name, a in attrs.items()
    )


def pointer(envelope: dict[str, Any], bucket: str, key: str, stored: bytes) -> dict[str, Any]:
    """The message for an envelope stored in S3: the envelope without its record, plus where.

    The SHA-256 of the stored bytes binds the pointer to that object, so a signed pointer
    vouches for the object too.
    """
    body = {k: v for k, v in envelope.items() if k not in ("record", SIGNATURE)}
    body["s3"] = {"bucket": bucket, "key": key, "sha256": hashlib.sha256(stored).hexdigest()}
    body["envelope_bytes"] = len(stored)
    return body


@dataclass(frozen=True, slots=True)
class _Entry:
    dedup: str
    letter: DeadLetter
    body: str
    attrs: dict[str, dict[str, str]]

    @property
    def size(self) -> int:
        return len(self.body.encode()) + _attributes_size(self.attrs)


class SqsDeadLetterSink:
    """Implements DeadLetterSink with SendMessageBatch; FIFO when the queue URL ends in .fifo."""

    def __init__(
        self,
        sqs: Any,
        queue_url: str,
        *,
        s3: Any = None,
        bucket: str = "",
        prefix: str = "dead-letters/",
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        application: str = "",
        signer: Signer | None = None,
        ledger: DeadLetterLedger | None = None,
    ) -> None:
        self._sqs = sqs
        self._s3 = s3
        self.queue_url = queue_url
        self.bucket = bucket
        self.prefix = prefix
        self.fifo = queue_url.endswith(".fifo")
        self.max_message_bytes = max_message_bytes
        self.application = application
        self._signer = signer
        self.ledger = ledger
        self._delivered: OrderedDict[str, None] = OrderedDict()
        # Delivered, but the ledger does not know yet (its write failed): retried first.
        self._unrecorded: set[str] = set()
        self._lock = threading.Lock()

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        resources: Resources,
        signer: Signer | None = None,
        ledger: DeadLetterLedger | None = None,
    ) -> SqsDeadLetterSink:
        """From `[dead_letter]`: queue_url, and bucket/prefix for oversized envelopes."""
        dead_letter = settings.dead_letter
        return cls(
            resources.aws_client("sqs"),
            dead_letter.queue_url,
            s3=resources.aws_client("s3") if dead_letter.bucket else None,
            bucket=dead_letter.bucket,
            prefix=dead_letter.prefix,
            application=settings.application,
            signer=signer,
            ledger=ledger,
        )

    def send(self, letters: Sequence[DeadLetter]) -> None:
        """Deliver every letter not already sent, or raise TransientError.

        A letter the ledger shows as sent is skipped; one another sender claimed moments ago
        raises TransientError, so the pipeline waits and asks again.
        """
        self._record_delivered()
        entries = []
        busy: list[DeadLetter] = []
        for letter in letters:
            if self._was_delivered(letter):
                continue
            if self.ledger is not None:
                claim = self.ledger.claim(letter.identity)
                if claim is Claim.SENT:
                    self._remember(letter.identity)
                    continue
                if claim is Claim.BUSY:
                    busy.append(letter)
                    continue
            entries.append(self._entry(letter))
        # What we claimed goes out even when others are busy: two senders each waiting for
        # the other's claims would otherwise both wait until the claims went stale.
        for batch in self._batches(entries):
            self._send_batch(batch)
        self._record_delivered()
        if busy:
            first = busy[0]
            raise TransientError(
                f"{len(busy)} dead letter(s), the first of shard {first.shard_id} sequence "
                f"{first.sequence_number} ({first.projection}), are being sent by another "
                "worker; waiting for it"
            )

    def _record_delivered(self) -> None:
        if self.ledger is None:
            return
        for identity in sorted(self._unrecorded):
            self.ledger.mark_sent(identity)
            with self._lock:
                self._unrecorded.discard(identity)

    # -- building messages ------------------------------------------------------------------

    def _was_delivered(self, letter: DeadLetter) -> bool:
        with self._lock:
            return dedup_id(letter) in self._delivered

    def _remember(self, dedup: str, unrecorded: bool = False) -> None:
        with self._lock:
            if unrecorded:
                self._unrecorded.add(dedup)
            self._delivered[dedup] = None
            while len(self._delivered) > REMEMBERED:
                self._delivered.popitem(last=False)

    def _entry(self, letter: DeadLetter) -> _Entry:
        dedup = dedup_id(letter)
        attrs = attributes(letter)
        # Round-tripped through JSON first, so what is signed is exactly what a reader parses.
        envelope = orjson.loads(letter.to_json())
        envelope["application"] = self.application
        body = orjson.dumps(self._signed(envelope))
        if len(body) + _attributes_size(attrs) > self.max_message_bytes:
            key = f"{self.prefix}{letter.shard_id}/{letter.sequence_number}-{dedup[:16]}.json"
            self._store(key, body, letter)
            body = orjson.dumps(self._signed(pointer(envelope, self.bucket, key, body)))
        return _Entry(dedup, letter, body.decode(), attrs)

    def _signed(self, envelope: dict[str, Any]) -> dict[str, Any]:
        return envelope if self._signer is None else self._signer.sign(envelope)

    def _store(self, key: str, body: bytes, letter: DeadLetter) -> None:
        if not self.bucket or self._s3 is None:
            # Truncating would lose the record, so this stalls the shard visibly instead.
            raise TransientError(
                f"dead letter of {len(body)} bytes exceeds the SQS limit of "
                f"{self.max_message_bytes} and dead_letter.bucket is not set "
                f"(sequence {letter.sequence_number})"
            )
        try:
            # The key is the letter's identity: storing it again overwrites, never duplicates.
            self._s3.put_object(
                Bucket=self.bucket, Key=key, Body=body, ContentType="application/json"
            )
        except (ClientError, BotoCoreError) as exc:
            raise TransientError(f"dead letter to s3://{self.bucket}/{key}: {exc}") from exc

    def _batches(self, entries: list[_Entry]) -> list[list[_Entry]]:
        """Consecutive groups of at most 10 entries and 256 KiB in total."""
        batches: list[list[_Entry]] = []
        current: list[_Entry] = []
        size = 0
        for entry in entries:
            if current and (
                len(current) == MAX_BATCH_ENTRIES or size + entry.size > self.max_message_bytes
            ):
                batches.append(current)
                current, size = [], 0
            current.append(entry)
            size += entry.size
        if current:
            batches.append(current)
        return batches

    # -- sending ----------------------------------------------------------------------------

    def _send_batch(self, batch: list[_Entry]) -> None:
        pending = {str(index): entry for index, entry in enumerate(batch)}

        def send() -> None:
            try:
                response = self._sqs.send_message_batch(
                    QueueUrl=self.queue_url,
                    Entries=[self._request(id_, entry) for id_, entry in pending.items()],
                )
            except (ClientError, BotoCoreError) as exc:
                raise TransientError(f"dead letter to {self.queue_url}: {exc}") from exc
            for ok in response.get("Successful", []):
                self._remember(pending.pop(ok["Id"]).dedup, unrecorded=self.ledger is not None)
            if pending:
                raise _Refused(response.get("Failed", []))

        def resending(exc: Exception, delay: float) -> None:
            failures = exc.failures if isinstance(exc, _Refused) else []
            log.warning(
                "some dead letters were refused; resending them",
                refused=len(pending),
                codes=sorted({f.get("Code", "") for f in failures}),
            )

        try:
            retry(
                send,
                backoff=Backoff(0.05, 1.0),
                retry_on=lambda exc: isinstance(exc, _Refused),
                attempts=RESEND_ROUNDS,
                on_retry=resending,
            )
        except _Refused as refused:
            first = refused.failures[0] if refused.failures else {}
            raise TransientError(
                f"dead letter to {self.queue_url}: {len(pending)} of {len(batch)} refused after "
                f"{RESEND_ROUNDS} tries: {first.get('Code')}: {first.get('Message')}"
            ) from None

    def _request(self, id_: str, entry: _Entry) -> dict[str, Any]:
        request: dict[str, Any] = {
            "Id": id_,
            "MessageBody": entry.body,
            "MessageAttributes": entry.attrs,
        }
        if self.fifo:
            # One group per shard keeps a shard's letters in order; the deduplication id makes
            # a send retried within SQS's 5-minute window a no-op.
            request["MessageGroupId"] = entry.letter.shard_id[:128] or "-"
            request["MessageDeduplicationId"] = entry.dedup
        return request
