"""The command line's one error path: every failure ends as one line and an exit code.

An expected failure (a bad setting, a resource that does not exist, a service that does not
answer) prints one line that names the setting or resource and the fix, and exits 1; a usage
error exits 2 (click's own); anything else is a bug: one line, exit 70. `--debug` (or
STREAM_PROJECTOR_DEBUG=1) shows the traceback instead. Every line goes through redaction.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Mapping
from typing import Any

import click
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    CredentialRetrievalError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ProfileNotFound,
    ReadTimeoutError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from consumer.aws_errors import (
    ACCESS_DENIED_CODES,
    CREDENTIALS_REFUSED_CODES,
    NOT_FOUND_CODES,
    THROTTLING_CODES,
    error_code,
)
from consumer.errors import StreamProjectorError
from consumer.observability.redact import redact

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
# sysexits' EX_SOFTWARE: an error the code did not foresee, i.e. a bug to report.
EXIT_INTERNAL = 70
DEBUG_ENV = "STREAM_PROJECTOR_DEBUG"

REGION_FIX = "set aws.region, STREAM_PROJECTOR_AWS__REGION or AWS_REGION"
CREDENTIALS_FIX = (
    "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or run with an IAM role"
)
ENDPOINT_FIX = "check aws.endpoint_url / AWS_ENDPOINT_URL and aws.region, and that it is running"
POSTGRES_FIX = "check postgres.dsn / DATABASE_URL and that PostgreSQL is running"


class Failure(click.ClickException):
    """An error already reduced to its one line (redacted) and its exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(redact(message))
        # click annotates exit_code as a ClassVar, yet reads it from the instance it exits
        # with (sys.exit(e.exit_code)); one Failure type carries every code.
        self.exit_code = exit_code  # type: ignore[misc]

    def show(self, file: Any = None) -> None:
        """`error: <message>` on stderr."""
        click.echo(f"error: {self.format_message()}", err=True, file=file)


def debug_from_environment(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether STREAM_PROJECTOR_DEBUG asks for tracebacks."""
    return environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def explain(exc: BaseException) -> tuple[str, int]:
    """The one line for `exc` and its exit code: 1 when foreseen, 70 for a bug."""
    message = _foreseen(exc)
    if message is not None:
        return redact(message), EXIT_FAILURE
    text = redact(f"{type(exc).__name__}: {exc}".splitlines()[0])
    return (
        f"unexpected {text} (a bug: run again with --debug for the traceback and report it)",
        EXIT_INTERNAL,
    )


def _foreseen(exc: BaseException) -> str | None:
    if isinstance(exc, StreamProjectorError):
        return _one_line(str(exc)) or type(exc).__name__
    if isinstance(exc, NoRegionError):
        return f"aws.region: no AWS region is set; {REGION_FIX}"
    if isinstance(exc, NoCredentialsError | PartialCredentialsError | ProfileNotFound):
        return f"AWS credentials: {exc}; {CREDENTIALS_FIX}"
    if isinstance(exc, CredentialRetrievalError):
        return f"AWS credentials: {exc}"
    if isinstance(exc, EndpointConnectionError | ConnectTimeoutError | ReadTimeoutError):
        url = exc.kwargs.get("endpoint_url", "?")
        return f"AWS endpoint {url} does not answer ({type(exc).__name__}); {ENDPOINT_FIX}"
    if isinstance(exc, BotoConnectionError):
        return f"AWS: {_one_line(str(exc))}; {ENDPOINT_FIX}"
    if isinstance(exc, ClientError):
        return describe_client_error(exc)
    postgres = _postgres_message(exc)
    if postgres is not None:
        return postgres
    if isinstance(exc, OSError) and exc.errno is not None:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror or errno.errorcode.get(exc.errno, exc.errno)}{where}"
    return None


def describe_client_error(exc: ClientError) -> str:
    """One line for an AWS error answer: what was refused, and what to check."""
    code = error_code(exc)
    detail = str(exc.response.get("Error", {}).get("Message", "")) or code
    call = f"AWS {exc.operation_name}"
    if code in CREDENTIALS_REFUSED_CODES:
        return f"{call}: credentials refused ({code}: {detail}); {CREDENTIALS_FIX}"
    if code in ACCESS_DENIED_CODES:
        return (
            f"{call}: access denied ({detail}); grant the permission to the role this runs "
            "as (deploy/terraform/iam.tf lists what each part needs)"
        )
    if code in NOT_FOUND_CODES:
        return (
            f"{call}: {detail} ({code}); check the name in the configuration, and run "
            "`stream-projector migrate` for read-model tables"
        )
    if code in THROTTLING_CODES:
        return f"{call}: still throttled after retries ({code}); try again later"
    return f"{call}: {code}: {_one_line(detail)}"


def _postgres_message(exc: BaseException) -> str | None:
    # psycopg is optional at import time: a daemon without PostgreSQL projections needs none.
    try:
        import psycopg
        import psycopg_pool
    except ImportError:
        return None
    if isinstance(exc, psycopg_pool.PoolTimeout):
        return f"postgres: no connection within the pool's timeout ({exc}); {POSTGRES_FIX}"
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return f"postgres: {_one_line(str(exc))}; {POSTGRES_FIX}"
    return None


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in text.strip().splitlines() if part.strip())


class ReportingGroup(click.Group):
    """A click group whose commands share the one error path (see the module docstring)."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; turn whatever escapes it into a Failure unless --debug is on."""
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            # click declares message Final, but a UsageError must stay itself (its parameter
            # hints, its exit code 2): only its text is replaced by the redacted one.
            exc.message = redact(exc.message)  # type: ignore[misc]
            raise
        except click.ClickException as exc:
            if isinstance(exc, Failure):
                raise
            # A command's own ClickException gets the same prefix and redaction as the rest.
            raise Failure(exc.message, exc.exit_code) from None
        except (click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:
            if ctx.params.get("debug") or debug_from_environment():
                raise
            message, code = explain(exc)
            raise Failure(message, code) from None


def run_reporting(body: Callable[[], int], *, debug: bool, name: str) -> int:
    """For entry points without click (the KCL processor): `body()`'s exit code, or print one
    line, `<name>: error: <line>` on stderr, and return the failure's exit code."""
    try:
        return body()
    except Exception as exc:
        if debug:
            raise
        message, code = explain(exc)
        click.echo(f"{name}: error: {message}", err=True)
        return code
