"""Settings: one TOML file plus STREAM_PROJECTOR_<SECTION>__<KEY> environment overrides.

Validated once at start-up; a bad value stops the daemon with a ConfigError that names the
setting (as its TOML path and its environment variable). No other module reads the
environment, apart from boto3 itself (credentials, region, AWS_ENDPOINT_URL).
"""

from __future__ import annotations

import difflib
import os
import socket
import tomllib
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from consumer.errors import ConfigError
from consumer.observability.redact import (
    is_secret_name,
    redact,
    register_environment_secrets,
    register_named,
)

ENV_PREFIX = "STREAM_PROJECTOR_"
ENV_DELIMITER = "__"


class Section(BaseModel):
    """A TOML table: unknown keys are errors, so a typo never silently falls back to a default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceSettings(Section):
    """Which stream to read and where a new lease starts."""

    kind: Literal["dynamodb", "kinesis"] = "dynamodb"
    table: str = ""
    stream_arn: str = ""
    stream_name: str = ""
    initial_position: Literal["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"] = "TRIM_HORIZON"
    initial_timestamp: datetime | None = None
    # KPL aggregation is recognised by its magic bytes in every format.
    format: Literal["auto", "dynamodb", "json"] = "auto"
    # Plain JSON events on Kinesis: the fields of the event that make `record.keys` (default:
    # the record's partition key, as {"partition_key": ...}).
    key_fields: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _names_a_stream(self) -> SourceSettings:
        if self.kind == "dynamodb" and not (self.table or self.stream_arn):
            raise ValueError("set source.table or source.stream_arn for a DynamoDB stream")
        if self.kind == "kinesis" and not (self.stream_name or self.stream_arn):
            raise ValueError("set source.stream_name or source.stream_arn for a Kinesis stream")
        if self.key_fields and (self.kind != "kinesis" or self.format == "dynamodb"):
            raise ValueError(
                "source.key_fields keys plain JSON events: it needs kind kinesis and format json"
                " or auto"
            )
        if any(not name for name in self.key_fields):
            raise ValueError("source.key_fields: a field name cannot be empty")
        if self.initial_position == "AT_TIMESTAMP":
            if self.kind != "kinesis":
                raise ValueError("initial_position AT_TIMESTAMP exists only on Kinesis")
            if self.initial_timestamp is None:
                raise ValueError("initial_position AT_TIMESTAMP needs source.initial_timestamp")
        return self


class LeaseSettings(Section):
    """Lease table and the timings of renewal, taking and shard discovery."""

    table: str = ""
    failover_seconds: float = Field(10.0, gt=0)
    renew_interval_seconds: float = Field(3.0, gt=0)
    take_interval_seconds: float = Field(5.0, gt=0)
    max_leases_per_worker: int = Field(0, ge=0)
    # Leases one take may steal to balance (the KCL's maxLeasesToStealAtOneTime); 0: as many
    # as this worker's share needs.
    max_steals_per_take: int = Field(0, ge=0)
    shard_sync_interval_seconds: float = Field(60.0, gt=0)

    @model_validator(mode="after")
    def _renew_before_expiry(self) -> LeaseSettings:
        # A lease renewed less often than it expires would be stolen from a healthy worker.
        if self.renew_interval_seconds >= self.failover_seconds:
            raise ValueError("renew_interval_seconds must be below failover_seconds")
        return self


class PollingSettings(Section):
    """GetRecords paging and pacing, and the bounded prefetch per shard."""

    # The GetRecords Limit doubles toward max_records while a shard is behind and halves back
    # to min_records at its tip (DynamoDB Streams caps both at 1,000, its API's limit).
    max_records: int = Field(10000, ge=1, le=10000)
    # Unset: 1,000, or max_records when that is smaller.
    min_records: int | None = Field(None, ge=1, le=10000)
    idle_backoff_seconds: float = Field(1.0, ge=0)
    min_interval_seconds: float = Field(0.2, ge=0)
    prefetch_batches: int = Field(2, ge=1, le=100)
    # Records fetched ahead per shard, whatever the page size: the memory bound.
    prefetch_records: int = Field(10000, ge=1, le=1_000_000)
    # Kinesis: a shard serves 2 MB/s to all its consumers; after a page of B bytes the next
    # GetRecords waits B / this. 0 paces by calls only.
    kinesis_read_bytes_per_second: int = Field(2_000_000, ge=0)
    # Lanes per shard (Lambda's ParallelizationFactor): keys applied concurrently, each in order.
    parallelization_factor: int = Field(1, ge=1, le=10)

    @model_validator(mode="after")
    def _min_below_max(self) -> PollingSettings:
        if self.min_records is not None and self.min_records > self.max_records:
            raise ValueError(
                f"min_records ({self.min_records}) must not exceed max_records ({self.max_records})"
            )
        return self

    @property
    def tip_records(self) -> int:
        """The GetRecords Limit at the tip: min_records, or 1,000 capped by max_records."""
        return self.min_records if self.min_records is not None else min(1000, self.max_records)


class RetrySettings(Section):
    """Backoff for failed batches, and when a failing record counts as poison (see failures.md)."""

    base_seconds: float = Field(0.1, gt=0)
    cap_seconds: float = Field(30.0, gt=0)
    # Tries of one record before it is dead-lettered (a transient failure never counts).
    max_attempts: int = Field(3, ge=1, le=100)
    # Extra AWS error codes to wait out like throttling, on top of the built-in list.
    transient_error_codes: tuple[str, ...] = ()
    # Like Lambda's MaximumRecordAgeInSeconds: older records are dead-lettered; 0 turns it off.
    max_record_age_seconds: float = Field(0.0, ge=0)


class ShutdownSettings(Section):
    """How long a SIGTERM may wait for the batch in flight."""

    deadline_seconds: float = Field(20.0, gt=0)


class HttpSettings(Section):
    """The port serving /metrics, /healthz and /readyz."""

    host: str = "0.0.0.0"
    port: int = Field(9102, ge=0, le=65535)
    heartbeat_timeout_seconds: float = Field(30.0, gt=0)
    # While /readyz fails, its reasons are logged this often: an outage is never a silent wait.
    readiness_log_interval_seconds: float = Field(30.0, gt=0)


class AwsSettings(Section):
    """Region and endpoint; both default to what boto3 finds in the environment."""

    region: str = ""
    endpoint_url: str = ""


class PostgresSettings(Section):
    """The PostgreSQL read store; DATABASE_URL is the fallback DSN."""

    dsn: str = ""
    pool_max_size: int = Field(4, ge=1)


class DeadLetterSettings(Section):
    """Where poison records go (SQS, with S3 for envelopes over the SQS size limit)."""

    queue_url: str = ""
    bucket: str = ""
    # Key prefix of the envelopes stored in `bucket`.
    prefix: str = "dead-letters/"
    # HMAC key for the envelopes, or `secretsmanager:<arn-or-name>`; never shown anywhere.
    signing_key: SecretStr = SecretStr("")
    # The ledger of letters sent and shards finished; "" means "<application>-dead-letters".
    ledger_table: str = ""


class ProjectionEntry(Section):
    """One `[[projections]]` entry: a class by import path and its own settings."""

    name: str
    class_: str = Field(alias="class")
    settings: dict[str, Any] = Field(default_factory=dict)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Settings(BaseSettings):
    """Everything the daemon reads at start-up."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_DELIMITER,
        extra="forbid",
        frozen=True,
    )

    application: str = "stream-projector"
    # Drawn once, at load, when not set: the logs, the lease table and `status` then agree.
    worker_id: str = Field("", validate_default=True)
    source: SourceSettings
    leases: LeaseSettings = LeaseSettings()
    polling: PollingSettings = PollingSettings()
    retry: RetrySettings = RetrySettings()
    shutdown: ShutdownSettings = ShutdownSettings()
    http: HttpSettings = HttpSettings()
    aws: AwsSettings = AwsSettings()
    postgres: PostgresSettings = PostgresSettings()
    dead_letter: DeadLetterSettings = DeadLetterSettings()
    projections: list[ProjectionEntry] = Field(default_factory=list)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML file arrives as init kwargs; the environment overrides it, key by key.
        return (env_settings, init_settings)

    @property
    def lease_table(self) -> str:
        """The lease table's name: explicit, or derived from the application like the KCL."""
        return self.leases.table or f"{self.application}-leases"

    @property
    def dead_letter_ledger_table(self) -> str:
        """The dead-letter ledger's table: explicit, or derived from the application."""
        return self.dead_letter.ledger_table or f"{self.application}-dead-letters"

    @field_validator("worker_id")
    @classmethod
    def _worker_id_or_drawn(cls, value: str) -> str:
        return value or default_worker_id()


def default_worker_id() -> str:
    """host-pid-random, like the KCL's: unique even for two processes with one pid namespace."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def env_name(location: tuple[int | str, ...]) -> str:
    """The environment variable that sets the setting at `location` (for error messages)."""
    return ENV_PREFIX + ENV_DELIMITER.join(str(part).upper() for part in location)


Location = tuple[int | str, ...]


def setting_path(location: Location) -> str:
    """`("projections", 0, "settings", "table")` -> `projections[0].settings.table`."""
    path = ""
    for part in location:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else part
    return path


def problem_of(item: ErrorDetails, model: type[BaseModel]) -> tuple[Location, str]:
    """One validation error of `model` as (location, message), for a line that names it.

    An unknown key is named with a suggestion, never with its value (maybe a DSN with a
    password); the value of a secret-named setting is never shown either.
    """
    location = tuple(part for part in item["loc"] if part != "class_")
    if item["type"] == "extra_forbidden":
        return location, f"unknown setting{_suggestion(model, location)}"
    value = item.get("input")
    secret = bool(location) and is_secret_name(str(location[-1]))
    shown = "" if isinstance(value, dict | list) or secret else f" (got {value!r})"
    return location, str(item["msg"]).removeprefix("Value error, ") + shown


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        location, message = problem_of(item, Settings)
        # A cross-field rule names its fields in the message, and a list item has no variable
        # of its own: an env hint would mislead there.
        leaf = location and item["type"] not in ("value_error", "extra_forbidden")
        leaf = leaf and not any(isinstance(part, int) for part in location)
        hint = f" [env {env_name(location)}]" if leaf else ""
        lines.append(f"{setting_path(location) or '(file)'}: {message}{hint}")
    return redact("invalid configuration: " + "; ".join(lines))


def _suggestion(model: type[BaseModel], location: Location) -> str:
    """ "; did you mean x.y?" for a misspelled key, from the keys its table accepts."""
    for part in location[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        annotation = field.annotation if field is not None else None
        if get_origin(annotation) is list:
            annotation = get_args(annotation)[0]
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return ""
        model = annotation
    known = [field.alias or name for name, field in model.model_fields.items()]
    if not known:
        return "; this table takes no settings"
    close = difflib.get_close_matches(str(location[-1]), known, n=1)
    if not close:
        return f"; expected one of {', '.join(sorted(known))}"
    return f"; did you mean {setting_path((*location[:-1], close[0]))}?"


def read_toml(path: Path) -> dict[str, Any]:
    """The file's tables as a dict; a missing or malformed file is a ConfigError."""
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError as exc:
        raise ConfigError(f"--config: no such file: {path}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config: {path} is not valid TOML: {exc}") from exc


def load_settings(path: Path | None, **overrides: Any) -> Settings:
    """Validate the TOML file at `path` merged with the environment; raise ConfigError.

    `overrides` replace whole top-level keys or update tables (the demo and tests use them).
    """
    register_environment_secrets(os.environ)
    data: dict[str, Any] = read_toml(path) if path is not None else {}
    for key, value in overrides.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    database_url = os.environ.get("DATABASE_URL")
    if database_url and not data.get("postgres", {}).get("dsn"):
        data["postgres"] = {**data.get("postgres", {}), "dsn": database_url}
    _register_secrets(data)
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def _register_secrets(data: Any, key: str = "") -> None:
    """Register every secret of the raw settings for redaction, before anything can print it:
    values of secret-named keys, and the password of every URL (a DSN under any key)."""
    if isinstance(data, dict):
        for name, value in data.items():
            _register_secrets(value, str(name))
    elif isinstance(data, list):
        for value in data:
            _register_secrets(value, key)
    elif isinstance(data, str):
        register_named(key, data)
