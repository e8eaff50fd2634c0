"""Start-up checks: a mistake in the configuration stops the daemon within seconds, with a
message naming the setting; an outage of what it only writes to is waited out.

What "does not exist" and "does not answer" mean for each resource is written down in
docs/errors.md. The stream is what the daemon reads: if it cannot be listed at start-up, there
is nothing to do, and exiting with the reason lets the orchestrator show it (and retry).
PostgreSQL is a sink: a server that refuses the DSN is a mistake, one that does not answer is an
outage the shards wait out (the records stay in the stream), shown in /readyz and the logs. The
dead-letter queue and bucket are checked only for existence: the daemon's least-privilege role
may send to them and nothing else, so a refusal to look leaves them to the first poison record.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog
from botocore.exceptions import BotoCoreError, ClientError

from consumer.aws_errors import INVALID_NAME_CODES, NOT_FOUND_CODES, error_code
from consumer.config import Settings
from consumer.errors import ConfigError, TransientError
from consumer.resources import SharedResources
from consumer.sources.reader import StreamSource

log = structlog.get_logger(__name__)


def source_setting(settings: Settings) -> str:
    """The setting that names the stream, as a user would look for it."""
    src = settings.source
    if src.stream_arn:
        return "source.stream_arn"
    return "source.table" if src.kind == "dynamodb" else "source.stream_name"


def check_source(source: StreamSource, settings: Settings, region: str) -> None:
    """List the stream's shards once; ConfigError naming the setting if it does not exist."""
    try:
        source.list_shards()
    except ClientError as exc:
        code = error_code(exc)
        if code not in NOT_FOUND_CODES | INVALID_NAME_CODES:
            raise
        message = exc.response.get("Error", {}).get("Message", "")
        raise ConfigError(
            f"{source_setting(settings)}: stream {source.stream_id!r} does not exist "
            f"({code}: {message}); check the name and the region ({region})"
        ) from None


def check_postgres(resources: SharedResources) -> None:
    """A DSN the server refuses stops start-up; a server that does not answer is waited for."""
    try:
        resources.check_postgres()
    except TransientError as exc:
        log.warning("postgres does not answer at start-up; shards wait for it", error=str(exc))


def check_dead_letters(settings: Settings, resources: SharedResources) -> None:
    """ConfigError when `[dead_letter]` names a queue or a bucket that does not exist."""
    queue, bucket = settings.dead_letter.queue_url, settings.dead_letter.bucket
    if queue:
        _must_exist(
            lambda: resources.aws_client("sqs").get_queue_attributes(
                QueueUrl=queue, AttributeNames=["QueueArn"]
            ),
            "dead_letter.queue_url",
            f"queue {queue}",
        )
    if bucket:
        _must_exist(
            lambda: resources.aws_client("s3").head_bucket(Bucket=bucket),
            "dead_letter.bucket",
            f"bucket {bucket}",
        )


def _must_exist(look: Callable[[], object], setting: str, what: str) -> None:
    try:
        look()
    except ClientError as exc:
        code = error_code(exc)
        if code in NOT_FOUND_CODES:
            raise ConfigError(
                f"{setting}: {what} does not exist ({code}); create it (deploy/terraform has "
                "one) or fix the setting"
            ) from None
        # Access denied is what a role that may only send gets: nothing to conclude.
        log.debug("could not check that it exists", setting=setting, error=str(exc))
    except BotoCoreError as exc:
        log.warning("could not check that it exists", setting=setting, error=str(exc))
