"""Build the configured projections from `[[projections]]`: a class by import path + settings."""

from __future__ import annotations

from collections.abc import Sequence

from consumer.config import ProjectionEntry
from consumer.errors import ConfigError
from projections.loader import build_projection
from projections.projection import Projection, Resources
from projections.settings import SettingsError


def load_projections(entries: Sequence[ProjectionEntry], resources: Resources) -> list[Projection]:
    """One projection per entry, in file order; names must be unique (they label metrics)."""
    seen: set[str] = set()
    projections: list[Projection] = []
    for index, entry in enumerate(entries):
        where = ("projections", index)
        if entry.name in seen:
            raise ConfigError(
                f"projections[{index}].name: duplicate projection name {entry.name!r}"
            )
        seen.add(entry.name)
        try:
            projection = build_projection(entry.class_, entry.name, entry.settings, resources)
        except SettingsError as exc:
            raise ConfigError("invalid configuration: " + exc.render(where)) from exc
        projections.append(projection)
    if not projections:
        raise ConfigError("projections: at least one [[projections]] entry is required")
    return projections
