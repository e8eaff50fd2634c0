"""structlog JSON lines on stdout, bound with application and worker, and per thread with shard."""

from __future__ import annotations

import logging
import sys

import structlog


def configure_logging(application: str, worker_id: str, level: str = "INFO") -> None:
    """JSON to stdout; every line carries application and worker id.

    Shard threads add stream, shard and sequence with `structlog.contextvars.bind_contextvars`:
    a new thread starts with an empty context, so bindings never leak between shards.
    """
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(message)s")
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.clear_contextvars()
    global _GLOBAL_BINDINGS
    _GLOBAL_BINDINGS = {"application": application, "worker_id": worker_id}
    structlog.contextvars.bind_contextvars(**_GLOBAL_BINDINGS)


_GLOBAL_BINDINGS: dict[str, str] = {}


def bind_thread(**values: object) -> None:
    """Bind the process-wide fields plus `values` in the current (new) thread's log context."""
    structlog.contextvars.bind_contextvars(**_GLOBAL_BINDINGS, **values)
