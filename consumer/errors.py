"""Errors as values the shard loop can classify: transient, poison, lease lost."""

from __future__ import annotations


class StreamProjectorError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(StreamProjectorError):
    """A setting is missing or invalid; the message names the setting."""


class MissingResourceError(StreamProjectorError):
    """A table, queue or secret a command needs does not exist; the message says how to get it."""


class OperatorInputError(StreamProjectorError):
    """An operator's command cannot be carried out as given (a refused reset, an unknown id)."""


class TransientError(StreamProjectorError):
    """Will likely succeed if retried later: throttling, network, a sink that is down."""


class PoisonError(StreamProjectorError):
    """Fails the same way every time for this record: bad data, a projection bug."""


class DecodeError(PoisonError):
    """A record could not be decoded into a ChangeRecord."""


class LeaseLostError(StreamProjectorError):
    """This worker no longer owns the lease; it must stop the shard and never write it again."""


class ExpiredIteratorError(TransientError):
    """The shard iterator expired (15 min on DynamoDB Streams, 5 min on Kinesis)."""


class TrimmedDataError(StreamProjectorError):
    """The requested position is older than the stream's retention: data was lost upstream."""


class ThrottledError(TransientError):
    """The stream or a sink throttled the call."""
