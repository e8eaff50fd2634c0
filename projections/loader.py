"""A projection built from its class's import path and its settings table."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from projections.projection import BaseProjection, Projection, Resources
from projections.settings import SettingsError


def load_class(path: str) -> type[BaseProjection]:
    """Import the projection class `module:Class`; a SettingsError (at the path's key) says why."""
    module_name, _, class_name = path.partition(":")
    if not module_name or not class_name:
        raise SettingsError.at((), f"expected 'module:Class', got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SettingsError.at((), f"cannot import module {module_name!r}: {exc}") from exc
    found = getattr(module, class_name, None)
    if found is None:
        raise SettingsError.at((), f"module {module_name!r} has no {class_name!r}")
    if not (isinstance(found, type) and issubclass(found, BaseProjection)):
        raise SettingsError.at(
            (), f"{path} is not a projection class (subclass projections.api.BaseProjection)"
        )
    return found


def build_projection(
    path: str,
    name: str,
    settings: Mapping[str, Any],
    resources: Resources,
    *,
    class_key: str = "class",
) -> Projection:
    """The projection class at `path`, built from its settings.

    SettingsError locations are relative to the table that holds the path (at `class_key`)
    and the settings (at `settings`).
    """
    try:
        cls = load_class(path)
    except SettingsError as exc:
        raise exc.under(class_key) from exc
    try:
        return cls.from_config(name, settings, resources)
    except SettingsError as exc:
        raise exc.under("settings") from exc
