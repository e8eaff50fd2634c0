"""Publish alerts to SNS, each once, behind idempotency records (projections/idempotency.py).

Per alert: claim its idempotency record (conditional PutItem), publish, mark it DONE. A
publish that fails releases the claim and raises TransientError, so the batch is retried and
the alert is published then: an alert is never lost to an outage. An alert already DONE is
skipped, so a retried or replayed batch publishes nothing twice. The window for a duplicate
is a crash between SNS accepting the message and DONE being stored; subscribers that must
never see one can drop repeats by the `alert_id` message attribute (on FIFO topics the
alert id is also the MessageDeduplicationId, and SNS drops repeats within 5 minutes).

Choice: at-least-once. Claim-then-publish-then-delete-on-failure alone would lose the alert
when the process dies after claiming; an out-of-stock alert that never arrives is worse than
a rare second one, so a stale PENDING claim is taken over (after `claim_timeout`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import botocore.exceptions
import orjson

from consumer.aws_errors import INVALID_PARAMETER_CODES, error_code
from consumer.errors import PoisonError, TransientError
from consumer.pipeline.classify import TRANSIENT_TYPES
from projections.idempotency import Claim, IdempotencyStore


@dataclass(frozen=True, slots=True)
class Alert:
    """One notification: its identity (idempotency key), subject, JSON body, FIFO group."""

    alert_id: str
    subject: str
    message: Mapping[str, Any]
    group: str = "alerts"


@dataclass(slots=True)
class PublishResult:
    """How many alerts were published now and how many had been published before."""

    published: int = 0
    duplicates: int = 0


class SnsAlertSink:
    """Publishes alerts to one topic, once each (see the module docstring)."""

    def __init__(self, client: Any, topic_arn: str, idempotency: IdempotencyStore) -> None:
        self.client = client
        self.topic_arn = topic_arn
        self.idempotency = idempotency
        self.fifo = topic_arn.endswith(".fifo")
        # Published but not yet marked DONE (the DynamoDB write failed): a retry only marks.
        self._unmarked: dict[str, str] = {}

    def publish(self, alerts: Sequence[Alert]) -> PublishResult:
        """Publish every alert not published before, in order; raise on the first failure."""
        result = PublishResult()
        for alert in alerts:
            if alert.alert_id in self._unmarked:
                self._complete(alert.alert_id, self._unmarked[alert.alert_id])
                result.published += 1
                continue
            claim = self.idempotency.claim(alert.alert_id)
            if claim is Claim.DONE:
                result.duplicates += 1
                continue
            if claim is Claim.BUSY:
                raise TransientError(
                    f"alert {alert.alert_id} is being published by another worker; "
                    "retrying until it is done or its claim goes stale"
                )
            try:
                message_id = self._send(alert)
            except BaseException:
                self.idempotency.release(alert.alert_id)
                raise
            self._unmarked[alert.alert_id] = message_id
            self._complete(alert.alert_id, message_id)
            result.published += 1
        return result

    def _complete(self, alert_id: str, message_id: str) -> None:
        self.idempotency.complete(alert_id, {"message_id": message_id})
        del self._unmarked[alert_id]

    def _send(self, alert: Alert) -> str:
        request: dict[str, Any] = {
            "TopicArn": self.topic_arn,
            "Subject": alert.subject[:100],  # SNS's limit; the body carries the details
            "Message": orjson.dumps(alert.message, default=str).decode(),
            "MessageAttributes": {
                "alert_id": {"DataType": "String", "StringValue": alert.alert_id},
            },
        }
        if self.fifo:
            request["MessageGroupId"] = alert.group
            request["MessageDeduplicationId"] = alert.alert_id[:128]
        try:
            return str(self.client.publish(**request)["MessageId"])
        except botocore.exceptions.ClientError as error:
            code = error_code(error)
            if code in INVALID_PARAMETER_CODES:
                raise PoisonError(f"SNS refused alert {alert.alert_id}: {code}") from error
            # Throttling, a missing topic, permissions being fixed: wait it out, never drop.
            raise TransientError(f"SNS publish of {alert.alert_id}: {code}") from error
        except TRANSIENT_TYPES as error:
            raise TransientError(f"SNS publish of {alert.alert_id}: {error}") from error
