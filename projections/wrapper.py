"""A projection that wraps another: built from `projection` + `settings`, hooks passed through."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from projections.loader import build_projection
from projections.projection import BaseProjection, Projection, Resources
from projections.settings import ProjectionSettings


class WrappedSettings(ProjectionSettings):
    """The inner projection of a wrapper: its class by import path and its own settings."""

    projection: str = Field(min_length=1)
    settings: dict[str, Any] = Field(default_factory=dict)


def build_inner(name: str, settings: WrappedSettings, resources: Resources) -> Projection:
    """The projection a wrapper's settings name, built under the wrapper's name."""
    return build_projection(
        settings.projection, name, settings.settings, resources, class_key="projection"
    )


class WrappingProjection(BaseProjection):
    """Passes `migrate`, `ready` and `close` through to `inner`."""

    inner: Projection

    def migrate(self) -> None:
        """Migrate the inner projection."""
        self.inner.migrate()

    def ready(self) -> bool:
        """Ready when the inner projection is."""
        return self.inner.ready()

    def close(self) -> None:
        """Close the inner projection."""
        self.inner.close()
