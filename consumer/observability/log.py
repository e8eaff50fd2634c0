"""JSON log lines, redacted, for our loggers and every library's, on one stream.

Our modules log with structlog; botocore, urllib3, psycopg_pool and the rest log with the
standard library. Both go through one logging handler that renders JSON and masks secrets,
so nothing reaches the terminal as plain text beside the JSON (a library's warning included),
and lines written by different threads never interleave.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any, TextIO

import structlog

from consumer.observability.redact import redact_event

# Libraries that log at INFO or DEBUG what a daemon should not print (request headers and
# bodies, every connection): only their warnings and errors are kept, whatever the level.
QUIET_LIBRARIES = ("botocore", "boto3", "urllib3", "s3transfer", "psycopg", "psycopg_pool")

_GLOBAL_BINDINGS: dict[str, str] = {}


def configure_logging(
    application: str = "",
    worker_id: str = "",
    level: str = "INFO",
    stream: TextIO | None = None,
) -> None:
    """JSON lines on `stream` (stdout by default); every line carries application and worker.

    Shard threads add stream, shard and sequence with `bind_thread`: a new thread starts with
    an empty context, so bindings never leak between shards.
    """
    before_render: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    handler = logging.StreamHandler(stream if stream is not None else sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*before_render, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                redact_event,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    threshold = logging.getLevelName(level.upper())
    root.setLevel(threshold)
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(threshold, logging.WARNING))
    logging.captureWarnings(True)
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *before_render,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    threading.excepthook = _log_thread_crash
    structlog.contextvars.clear_contextvars()
    _GLOBAL_BINDINGS.clear()
    fields = {"application": application, "worker_id": worker_id}
    _GLOBAL_BINDINGS.update({key: value for key, value in fields.items() if value})
    structlog.contextvars.bind_contextvars(**_GLOBAL_BINDINGS)


def bind_thread(**values: object) -> None:
    """Bind the process-wide fields plus `values` in the current (new) thread's log context."""
    structlog.contextvars.bind_contextvars(**_GLOBAL_BINDINGS, **values)


def _log_thread_crash(args: threading.ExceptHookArgs) -> None:
    # The default hook prints a plain-text traceback to stderr; a JSON line says the same.
    if args.exc_type is SystemExit:
        return
    thread = args.thread.name if args.thread is not None else "?"
    structlog.get_logger(__name__).error(
        "thread crashed",
        thread=thread,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )
