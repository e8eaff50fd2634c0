"""Build the configured projections from `[[projections]]`: a class by import path + settings."""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import Any

from consumer.config import ProjectionSettings
from consumer.errors import ConfigError
from projections.projection import Projection, ProjectionFactory, Resources


def load_class(path: str, where: str) -> ProjectionFactory:
    """Import `module:Class`; a ConfigError names the setting `where` when it fails."""
    module_name, _, class_name = path.partition(":")
    if not module_name or not class_name:
        raise ConfigError(f"{where}: expected 'module:Class', got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{where}: cannot import module {module_name!r}: {exc}") from exc
    try:
        found: ProjectionFactory = getattr(module, class_name)
    except AttributeError:
        raise ConfigError(f"{where}: module {module_name!r} has no {class_name!r}") from None
    return found


def load_inner_projection(
    name: str, settings: Mapping[str, Any], resources: Resources, own_keys: set[str]
) -> Projection:
    """For wrapper projections: the one named by `settings.projection` with `settings.settings`.

    `own_keys` are the wrapper's other settings; any further key is a ConfigError.
    """
    where = f"projections.{name}.settings"
    unknown = set(settings) - {"projection", "settings", *own_keys}
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}")
    path = settings.get("projection")
    if not isinstance(path, str):
        raise ConfigError(f"{where}.projection must be 'module:Class'")
    inner_cls = load_class(path, f"{where}.projection")
    return inner_cls.from_config(name, settings.get("settings", {}), resources)


def load_projections(
    entries: Sequence[ProjectionSettings], resources: Resources
) -> list[Projection]:
    """One projection per entry, in file order; names must be unique (they label metrics)."""
    seen: set[str] = set()
    projections: list[Projection] = []
    for index, entry in enumerate(entries):
        where = f"projections[{index}]"
        if entry.name in seen:
            raise ConfigError(f"{where}.name: duplicate projection name {entry.name!r}")
        seen.add(entry.name)
        cls = load_class(entry.class_, f"{where}.class")
        factory = getattr(cls, "from_config", None)
        if factory is None:
            raise ConfigError(f"{where}.class: {entry.class_} has no from_config classmethod")
        try:
            projections.append(factory(entry.name, entry.settings, resources))
        except ConfigError as exc:
            raise ConfigError(f"{where}.settings: {exc}") from exc
        except (TypeError, KeyError, ValueError) as exc:
            raise ConfigError(f"{where}.settings: {type(exc).__name__}: {exc}") from exc
    if not projections:
        raise ConfigError("projections: at least one [[projections]] entry is required")
    return projections
