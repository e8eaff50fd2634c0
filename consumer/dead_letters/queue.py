"""The dead-letter queue as the operator tools see it: receive, read, release, delete, move.

Every message is read defensively: anything a queue can hold (a non-JSON body, a JSON object
that is no envelope, an S3 pointer into somebody else's bucket) becomes a `Message` with a
`defect`, never an exception that would crash a tool and leave a received batch invisible.
An S3 pointer is followed only inside `dead_letter.bucket` and `dead_letter.prefix`, and only
to an object whose SHA-256 matches the pointer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from botocore.exceptions import BotoCoreError, ClientError

from consumer.aws_errors import error_code
from consumer.dead_letters.letter import ENVELOPE_VERSION, letter_id

RECEIVE_BATCH = 10
# Fields every envelope has (docs/failures.md, "Envelope format"); a pointer lacks `record`.
REQUIRED = ("version", "stream", "shard_id", "sequence_number", "projection", "reason")
# Fields a pointer and its stored envelope must agree on.
IDENTITY = (
    "application",
    "stream",
    "shard_id",
    "sequence_number",
    "sub_sequence_number",
    "projection",
)
NOT_A_LETTER = "not a dead letter of this application"

DefectKind = Literal["malformed", "refused"]


@dataclass(slots=True)
class Message:
    """One received message: the envelope it carries, or why it carries none we can use.

    `malformed`: not a dead letter at all (a quarantine candidate). `refused`: shaped like
    one, but a check failed (a pointer outside our bucket, a stored object that does not
    match); such a message stays in the queue for a person to look at.
    """

    message_id: str
    receipt_handle: str
    body: str
    attributes: dict[str, Any] = field(default_factory=dict)
    envelope: dict[str, Any] | None = None
    pointer: dict[str, Any] | None = None
    # What was signed: the message body, and for a pointer also the stored envelope.
    signed: list[dict[str, Any]] = field(default_factory=list)
    defect: str | None = None
    defect_kind: DefectKind | None = None

    @property
    def usable(self) -> bool:
        """An envelope we could read, with nothing wrong found so far."""
        return self.envelope is not None and self.defect is None

    @property
    def projection(self) -> str:
        """The projection that failed, `(decode)`, or `*`."""
        return str((self.envelope or {}).get("projection", ""))

    @property
    def reason(self) -> str:
        """Why it was dead-lettered: decode_error, projection_error, record_too_old."""
        return str((self.envelope or {}).get("reason", ""))

    @property
    def identity(self) -> str:
        """The letter's identity (`letter_id`); duplicates of one failure share it."""
        envelope = self.envelope or {}
        return letter_id(
            str(envelope.get("stream", "")),
            str(envelope.get("shard_id", "")),
            str(envelope.get("sequence_number", "")),
            _int(envelope.get("sub_sequence_number", 0)),
            str(envelope.get("projection", "")),
        )

    @property
    def stored_object(self) -> tuple[str, str] | None:
        """(bucket, key) of the envelope stored in S3, when we read it from our bucket."""
        if self.pointer is None or self.envelope is None:
            return None
        return str(self.pointer["bucket"]), str(self.pointer["key"])


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


class DeadLetterQueue:
    """The queue and its bucket, as inspect, redrive, purge and delete use them."""

    def __init__(
        self,
        sqs: Any,
        queue_url: str,
        s3: Any = None,
        *,
        bucket: str = "",
        prefix: str = "",
        wait_seconds: int = 1,
    ) -> None:
        self._sqs = sqs
        self._s3 = s3
        self.queue_url = queue_url
        self.bucket = bucket
        self.prefix = prefix
        self.wait_seconds = wait_seconds

    def approximate_count(self) -> int:
        """Messages visible now, as SQS estimates them."""
        attrs = self._sqs.get_queue_attributes(
            QueueUrl=self.queue_url, AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]
        return int(attrs.get("ApproximateNumberOfMessages", 0))

    def receive(self, visibility_seconds: int) -> list[Message]:
        """Up to 10 messages, hidden from others for `visibility_seconds` (long polling)."""
        response = self._sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=RECEIVE_BATCH,
            VisibilityTimeout=visibility_seconds,
            WaitTimeSeconds=self.wait_seconds,
            MessageAttributeNames=["All"],
        )
        return [self.read(message) for message in response.get("Messages", [])]

    def drain(self, visibility_seconds: int, *, empty_receives: int = 3) -> Drain:
        """Receive everything: see `Drain`."""
        return Drain(self, visibility_seconds, empty_receives)

    # -- reading one message --------------------------------------------------------------------

    def read(self, raw: Mapping[str, Any]) -> Message:
        """The message as a Message; never raises for what the body holds."""
        message = Message(
            message_id=str(raw["MessageId"]),
            receipt_handle=str(raw["ReceiptHandle"]),
            body=str(raw.get("Body", "")),
            attributes=dict(raw.get("MessageAttributes") or {}),
        )
        try:
            body = orjson.loads(message.body)
        except orjson.JSONDecodeError:
            return _defect(message, "malformed", f"{NOT_A_LETTER}: the body is not JSON")
        if not isinstance(body, dict):
            return _defect(message, "malformed", f"{NOT_A_LETTER}: the body is not a JSON object")
        problem = _shape_problem(body, pointer="s3" in body)
        if problem is not None:
            return _defect(message, "malformed", f"{NOT_A_LETTER}: {problem}")
        message.signed.append(body)
        if "s3" not in body:
            message.envelope = body
            return message
        return self._follow(message, body)

    def _follow(self, message: Message, body: dict[str, Any]) -> Message:
        """Load a pointer's envelope from S3, only inside our bucket and prefix."""
        pointer = body["s3"]
        message.pointer = pointer
        message.envelope = body  # until the stored envelope is read: enough to show and count
        bucket, key = pointer.get("bucket"), pointer.get("key")
        if not (isinstance(bucket, str) and isinstance(key, str)):
            return _defect(message, "malformed", f"{NOT_A_LETTER}: s3 pointer without bucket/key")
        where = f"s3://{bucket}/{key}"
        if not self.bucket or bucket != self.bucket or not key.startswith(self.prefix):
            scope = f"s3://{self.bucket}/{self.prefix}" if self.bucket else "no dead_letter.bucket"
            return _defect(
                message, "refused", f"s3 pointer {where} is outside dead_letter.bucket ({scope})"
            )
        if ".." in key.split("/"):
            return _defect(message, "refused", f"s3 pointer {where} climbs out of the prefix")
        try:
            stored = self._s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as exc:
            return _defect(message, "refused", f"s3 pointer {where}: {error_code(exc)}")
        except BotoCoreError as exc:
            return _defect(message, "refused", f"s3 pointer {where}: {type(exc).__name__}")
        if hashlib.sha256(stored).hexdigest() != pointer.get("sha256"):
            return _defect(message, "refused", f"s3 object {where} does not match its pointer")
        try:
            envelope = orjson.loads(stored)
        except orjson.JSONDecodeError:
            return _defect(message, "refused", f"s3 object {where} is not JSON")
        problem = (
            _shape_problem(envelope, pointer=False)
            if isinstance(envelope, dict)
            else "not a JSON object"
        )
        if problem is None:
            differs = [f for f in IDENTITY if envelope.get(f) != body.get(f)]
            problem = f"differs from its pointer in {', '.join(differs)}" if differs else None
        if problem is not None:
            return _defect(message, "refused", f"s3 object {where}: {problem}")
        message.envelope = envelope
        message.signed.append(envelope)
        return message

    # -- acting on messages ---------------------------------------------------------------------

    def release(self, messages: Sequence[Message]) -> None:
        """Make messages visible again at once, so nothing stays hidden by looking at it."""
        for start in range(0, len(messages), RECEIVE_BATCH):
            chunk = messages[start : start + RECEIVE_BATCH]
            self._sqs.change_message_visibility_batch(
                QueueUrl=self.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m.receipt_handle, "VisibilityTimeout": 0}
                    for i, m in enumerate(chunk)
                ],
            )

    def delete(self, message: Message) -> None:
        """Delete the message, then its stored envelope (an orphaned object is harmless)."""
        self._sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message.receipt_handle)
        stored = message.stored_object
        if stored is not None and self._s3 is not None:
            self._s3.delete_object(Bucket=stored[0], Key=stored[1])

    def move(self, message: Message, queue_url: str) -> None:
        """Send the message as it is to another queue, then delete it here (quarantine)."""
        request: dict[str, Any] = {"QueueUrl": queue_url, "MessageBody": message.body}
        if message.attributes:
            request["MessageAttributes"] = {
                name: {k: v for k, v in value.items() if k in ("DataType", "StringValue")}
                for name, value in message.attributes.items()
            }
        if queue_url.endswith(".fifo"):
            request["MessageGroupId"] = "quarantine"
            request["MessageDeduplicationId"] = message.message_id
        self._sqs.send_message(**request)
        self._sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message.receipt_handle)


class Drain:
    """Receives until `empty_receives` receives in a row bring no message at all.

    One empty receive does not mean an empty queue (SQS may answer from a subset of its
    servers, another consumer may hold messages that come back), so it takes several in a
    row, each a long poll. A message seen before comes back when its visibility ran out on a
    long run: it is not yielded again, but its new receipt handle is kept (that receive hid
    it again), so `release` still reaches every message this drain holds.
    """

    def __init__(self, queue: DeadLetterQueue, visibility_seconds: int, empty_receives: int):
        self._queue = queue
        self._visibility = visibility_seconds
        self._empty_receives = empty_receives
        self.held: dict[str, Message] = {}

    def __iter__(self) -> Iterator[Message]:
        empty = stale = 0
        # Receives bringing only messages we hold are not empty, but when there have been
        # enough of them to bring back everything we hold, the visibility is shorter than
        # one pass over the queue and they would go on for ever: that counts as the end.
        while empty < self._empty_receives and stale <= len(self.held) // RECEIVE_BATCH + 1:
            received = self._queue.receive(self._visibility)
            empty = 0 if received else empty + 1
            stale += 1
            fresh = []
            # All of a batch is held before any of it is yielded: a caller that stops early
            # must still release what this receive hid.
            for message in received:
                known = self.held.get(message.message_id)
                if known is not None:
                    known.receipt_handle = message.receipt_handle
                    continue
                self.held[message.message_id] = message
                fresh.append(message)
            if fresh:
                stale = 0
            yield from fresh

    def done(self, message: Message) -> None:
        """The message was deleted or moved: nothing left to release."""
        self.held.pop(message.message_id, None)

    def release(self) -> None:
        """Make every message still held visible again at once."""
        self._queue.release(list(self.held.values()))
        self.held.clear()


def _defect(message: Message, kind: DefectKind, why: str) -> Message:
    message.defect = why
    message.defect_kind = kind
    return message


def _shape_problem(body: Mapping[str, Any], *, pointer: bool) -> str | None:
    """What keeps a JSON object from being an envelope (or a pointer to one), if anything."""
    missing = [f for f in (*REQUIRED, *(() if pointer else ("record",))) if f not in body]
    if missing:
        return f"no {', '.join(missing)}"
    version = body["version"]
    if not isinstance(version, int) or isinstance(version, bool) or not version >= 1:
        return f"version {version!r} is not an envelope version"
    if version > ENVELOPE_VERSION:
        return f"envelope version {version} is newer than this tool ({ENVELOPE_VERSION})"
    for name in ("stream", "shard_id", "sequence_number", "projection", "reason"):
        if not isinstance(body[name], str):
            return f"{name} is not a string"
    if pointer and not isinstance(body["s3"], dict):
        return "s3 is not an object"
    return None
