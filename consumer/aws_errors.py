"""The one table of AWS error codes, and what a failed AWS call becomes in this package.

By the time a caller sees one of these errors botocore's standard retry mode has already
retried it (consumer/aws.py); what is left is an outage to wait out (docs/design.md, inv. 5):
the shard stalls, nothing is dead-lettered. Every module that looks at an AWS error code
uses the names below, so the daemon, the sinks and the tools agree on what "try again" means.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import NoReturn

from botocore.exceptions import BotoCoreError, ClientError, ConnectionError, HTTPClientError

from consumer.errors import (
    ExpiredIteratorError,
    StreamProjectorError,
    ThrottledError,
    TransientError,
    TrimmedDataError,
)

# The caller or the account is over a rate or quota for now: retrying later works.
THROTTLING_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",  # DynamoDB, Kinesis, DynamoDB Streams
        "ThrottlingException",  # DynamoDB control plane, most JSON services
        "Throttling",  # SNS, SQS (query protocol)
        "ThrottledException",
        "RequestLimitExceeded",  # DynamoDB: account-level request rate
        "LimitExceededException",  # Kinesis: control-plane rate; DynamoDB: concurrent tables
        "TooManyRequestsException",
        "RequestThrottled",  # SQS
        "SlowDown",  # S3
        "KMSThrottlingException",  # SQS and SNS with server-side encryption
    }
)
# Failures on AWS's side.
SERVER_ERROR_CODES = frozenset(
    {"InternalServerError", "InternalFailure", "ServiceUnavailable", "InternalError"}
)
# DynamoDB refused because another request on the same item was in flight.
CONFLICT_CODES = frozenset({"TransactionConflictException", "TransactionInProgressException"})
TRANSIENT_CODES = THROTTLING_CODES | SERVER_ERROR_CODES | CONFLICT_CODES

# Codes whose meaning depends on the call; each caller decides, by these names.
CONDITION_FAILED = "ConditionalCheckFailedException"
RESOURCE_NOT_FOUND = "ResourceNotFoundException"
RESOURCE_IN_USE = "ResourceInUseException"
VALIDATION = "ValidationException"
# The request itself is wrong (SNS and SQS): the same message fails the same way every time.
INVALID_PARAMETER_CODES = frozenset(
    {"InvalidParameter", "InvalidParameterValue", "ParameterValueInvalid"}
)
EXPIRED_ITERATOR = "ExpiredIteratorException"
TRIMMED_DATA = "TrimmedDataAccessException"

# What the configuration names does not exist, or we may not use it: the command line's error
# path (consumer/cli/failures.py) names the resource and the fix.
NOT_FOUND_CODES = frozenset(
    {
        RESOURCE_NOT_FOUND,
        "AWS.SimpleQueueService.NonExistentQueue",  # SQS (query protocol)
        "QueueDoesNotExist",  # SQS (JSON protocol)
        "NoSuchBucket",  # S3
        "NotFound",  # SNS: topic
        "NotFoundException",
        "404",  # S3 HeadBucket and HeadObject: the status, as the answer has no body
    }
)
# A stream's identifier is malformed (an ARN of the wrong shape, a name with bad characters).
INVALID_NAME_CODES = frozenset({VALIDATION, "InvalidArgumentException"})
ACCESS_DENIED_CODES = frozenset(
    {"AccessDeniedException", "AccessDenied", "AuthorizationError", "AuthorizationErrorException"}
)
# The credentials themselves are wrong, unknown or expired.
CREDENTIALS_REFUSED_CODES = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "MissingAuthenticationToken",
        "InvalidAccessKeyId",
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidToken",
    }
)

# For a table a projection reads or writes, a missing table is an outage of that sink (migrate
# not run yet, a region problem), not a property of one record: dead-lettering every record
# would be wrong. Sinks pass this as `extra_codes`.
SINK_TRANSIENT_CODES = frozenset({RESOURCE_NOT_FOUND})

# The network or the endpoint failed: no answer at all (refused, reset, timed out, TLS).
NETWORK_ERRORS: tuple[type[BotoCoreError], ...] = (ConnectionError, HTTPClientError)
# Whatever an AWS call raises that this table classifies: `except AWS_CALL_ERRORS`.
AWS_CALL_ERRORS: tuple[type[Exception], ...] = (ClientError, *NETWORK_ERRORS)


def error_code(exc: ClientError) -> str:
    """The service's error code of a ClientError ("" when absent)."""
    return str(exc.response.get("Error", {}).get("Code", ""))


def status_code(exc: ClientError) -> int:
    """The HTTP status of a ClientError (0 when absent)."""
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def is_transient(exc: BaseException, extra_codes: Collection[str] = ()) -> bool:
    """Throttling, a 5xx, a conflict or the network: an AWS failure that retrying later fixes.

    `extra_codes` are codes a caller or the operator adds (`[retry] transient_error_codes`).
    """
    if isinstance(exc, NETWORK_ERRORS):
        return True
    if isinstance(exc, ClientError):
        code = error_code(exc)
        return code in TRANSIENT_CODES or code in extra_codes or status_code(exc) >= 500
    return False


def transient_error(
    exc: BaseException, what: str, extra_codes: Collection[str] = ()
) -> TransientError | None:
    """ThrottledError or TransientError for a transient AWS failure of `what`, else None.

    `what` names the call and its target, so the message says where it happened.
    """
    if not is_transient(exc, extra_codes):
        return None
    if isinstance(exc, ClientError):
        code = error_code(exc)
        detail = exc.response.get("Error", {}).get("Message", "")
        message = f"{what}: {code or status_code(exc)}: {detail}"
        return ThrottledError(message) if code in THROTTLING_CODES else TransientError(message)
    return TransientError(f"{what}: {type(exc).__name__}: {exc}")


def translate_error(
    exc: BaseException, what: str, extra_codes: Collection[str] = ()
) -> StreamProjectorError | None:
    """Our typed error for a failed stream or table call, or None when it has none.

    Besides the transient failures, an expired iterator and trimmed data have their own types:
    the reader renews the one and reports the other as data lost upstream.
    """
    if isinstance(exc, ClientError):
        code = error_code(exc)
        message = f"{what}: {code}: {exc.response.get('Error', {}).get('Message', '')}"
        if code == EXPIRED_ITERATOR:
            return ExpiredIteratorError(message)
        if code == TRIMMED_DATA:
            return TrimmedDataError(message)
    return transient_error(exc, what, extra_codes)


def raise_translated(exc: Exception, what: str, extra_codes: Collection[str] = ()) -> NoReturn:
    """Raise the typed error for `exc` (chained to it), or `exc` itself when it has none."""
    translated = translate_error(exc, what, extra_codes)
    if translated is None:
        raise exc
    raise translated from exc
