"""A projection that wraps another: lifecycle calls reach the inner projection."""

from __future__ import annotations

from projections.projection import Projection


class WrappingProjection:
    """Passes `migrate` and `close` through to `inner` when it has them."""

    inner: Projection

    def migrate(self) -> None:
        """Migrate the inner projection, when it owns tables."""
        migrate = getattr(self.inner, "migrate", None)
        if migrate is not None:
            migrate()

    def close(self) -> None:
        """Close the inner projection, when it holds resources."""
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()
