"""Scenario 2: the EC shop's event store projected into PostgreSQL read tables."""

from projections.shop.errors import (
    ConcurrentUpdateError,
    InvalidEventError,
    InvalidTransitionError,
    VersionGapError,
)
from projections.shop.projection import ShopProjection

__all__ = [
    "ConcurrentUpdateError",
    "InvalidEventError",
    "InvalidTransitionError",
    "ShopProjection",
    "VersionGapError",
]
