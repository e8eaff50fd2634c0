"""Creates the dead-letter queue, the envelope bucket and the alert topic in the emulator.

Run once by compose's `aws-init` service (with the daemon's own image, which has boto3) before
the consumer starts; the names must match the STREAM_PROJECTOR_DEAD_LETTER__* variables that
docker-compose.yml gives the consumer. Idempotent, so `docker compose up` can be rerun.
"""

from __future__ import annotations

import os
from typing import Any

import boto3
from botocore.exceptions import ClientError

QUEUE_NAME = os.environ.get("DLQ_NAME", "trip-search-dlq")
BUCKET_NAME = os.environ.get("ENVELOPE_BUCKET", "trip-search-dead-letters")
TOPIC_NAME = os.environ.get("ALERT_TOPIC", "stream-projector-alerts")
_BUCKET_EXISTS = {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}


def main() -> None:
    """Create (or find) each resource and print what exists afterwards."""
    # boto3 reads AWS_ENDPOINT_URL itself, so every client talks to the emulator.
    sqs = boto3.client("sqs")
    s3 = boto3.client("s3")
    sns = boto3.client("sns")
    queue_url = sqs.create_queue(QueueName=QUEUE_NAME)["QueueUrl"]
    # us-east-1 is the one region where a LocationConstraint must not be sent.
    region = s3.meta.region_name
    extra: dict[str, Any] = {}
    if region != "us-east-1":
        extra["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        s3.create_bucket(Bucket=BUCKET_NAME, **extra)
    except ClientError as error:
        # A rerun of `docker compose up` finds the bucket from the first run.
        if error.response["Error"]["Code"] not in _BUCKET_EXISTS:
            raise
    topic_arn = sns.create_topic(Name=TOPIC_NAME)["TopicArn"]
    print(f"queue={queue_url} bucket={BUCKET_NAME} topic={topic_arn}", flush=True)


if __name__ == "__main__":
    main()
