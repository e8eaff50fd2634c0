"""A projection's settings: a pydantic model, validated like the rest of the configuration.

Each projection class names its model (`settings_model`); the loader validates the TOML
`settings` table against it before the projection is built, so a typo or a wrong type stops
start-up with a line that names the key, e.g. `projections[0].settings.max_workers: Input
should be greater than or equal to 1 (got 0)`. Models are strict (no "8" for 8, no 1 for
true) and forbid unknown keys, so a misspelled key never falls back to a default silently.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from consumer.config import Location, problem_of, setting_path
from consumer.errors import ConfigError

S = TypeVar("S", bound=BaseModel)
# A name (table, schema, attribute): an empty one is always a mistake.
Text = Annotated[str, Field(min_length=1)]


class ProjectionSettings(BaseModel):
    """Base of every projection's settings model: strict types, no unknown keys, immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class SettingsError(ConfigError):
    """Settings that do not validate: each problem located relative to the settings table."""

    def __init__(self, problems: Sequence[tuple[Location, str]]) -> None:
        self.problems = tuple(problems)
        super().__init__(self.render(()))

    @classmethod
    def at(cls, location: Location, message: str) -> SettingsError:
        """One problem at `location`."""
        return cls([(location, message)])

    def under(self, *prefix: str | int) -> SettingsError:
        """The same problems, seen from a table that holds these settings at `prefix`."""
        return SettingsError([(prefix + location, message) for location, message in self.problems])

    def render(self, where: Location) -> str:
        """One line: every problem with its full path, `where` being the settings table's."""
        lines = []
        for location, message in self.problems:
            path = setting_path(where + location)
            lines.append(f"{path}: {message}" if path else message)
        return "; ".join(lines)


def validate_settings(model: type[S], settings: Mapping[str, Any]) -> S:
    """`settings` as an instance of `model`; a SettingsError names every bad key."""
    try:
        return model.model_validate(dict(settings))
    except ValidationError as error:
        raise SettingsError([problem_of(item, model) for item in error.errors()]) from None
