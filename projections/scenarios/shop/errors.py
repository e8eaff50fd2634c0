"""Why a shop event cannot be projected: each is a PoisonError, so it is dead-lettered."""

from __future__ import annotations

from consumer.errors import PoisonError, TransientError


class InvalidEventError(PoisonError):
    """A shop event whose payload is missing a field or has one of the wrong type."""

    def __init__(self, event_type: str, field: str, problem: str) -> None:
        super().__init__(f"{event_type}: field {field!r} {problem}")
        self.event_type = event_type
        self.field = field


class VersionGapError(PoisonError):
    """An aggregate's next event is not stored version + 1: events were lost upstream."""

    def __init__(self, aggregate_id: str, stored_version: int, event_version: int) -> None:
        super().__init__(
            f"aggregate {aggregate_id!r}: version gap, read model is at {stored_version}, "
            f"next event has version {event_version} (expected {stored_version + 1})"
        )
        self.aggregate_id = aggregate_id
        self.stored_version = stored_version
        self.event_version = event_version


class InvalidTransitionError(PoisonError):
    """An order event that its lifecycle (pending -> paid -> shipped, or cancelled) forbids."""


class ConcurrentUpdateError(TransientError):
    """Another writer advanced an aggregate while this batch was computed; retry it."""
