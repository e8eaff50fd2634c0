"""Scenario 2: the EC shop's event store projected into PostgreSQL read tables."""

from projections.scenarios.shop.errors import (
    ConcurrentUpdateError,
    InvalidEventError,
    InvalidTransitionError,
    VersionGapError,
)
from projections.scenarios.shop.projection import ShopProjection

__all__ = [
    "ConcurrentUpdateError",
    "InvalidEventError",
    "InvalidTransitionError",
    "ShopProjection",
    "VersionGapError",
]
