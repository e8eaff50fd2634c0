"""The HTTP endpoints an orchestrator and Prometheus call: /metrics, /healthz and /readyz."""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any

import structlog
from prometheus_client.exposition import choose_encoder

from consumer.errors import ConfigError
from consumer.observability.http_server import BoundedHTTPServer
from consumer.observability.log import bind_thread
from consumer.observability.metrics import Metrics

Readiness = Callable[[], tuple[bool, str]]

log = structlog.get_logger(__name__)


class Heartbeat:
    """The main loop beats once per turn; its age says whether the loop is still turning."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last = clock()

    def beat(self) -> None:
        """Mark the loop alive now."""
        self._last = self._clock()  # a float store is atomic: no lock needed

    def age(self) -> float:
        """Seconds since the last beat (or since creation, before the first beat)."""
        return max(0.0, self._clock() - self._last)


class ReadinessReporter:
    """Logs why the worker is not ready every `interval` seconds while it is not, and once
    when it is again, so an outage waited out is never a silent spin."""

    def __init__(self, check: Readiness, interval: float) -> None:
        self._check = check
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="readiness-log", daemon=True)

    def start(self) -> None:
        """Begin checking; the first check comes after one interval (start-up takes time)."""
        self._thread.start()

    def stop(self) -> None:
        """Stop checking; returns promptly."""
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        bind_thread()
        was_ready = True
        while not self._stop.wait(self._interval):
            ready, reason = self._check()
            if not ready:
                log.warning("not ready", reason=reason)
            elif not was_ready:
                log.info("ready again")
            was_ready = ready


class _ReadinessCheck:
    """Runs the readiness callable with a deadline, at most one call in flight at a time.

    A check that hangs (a sink that never answers) must neither hang the probe nor pile up a
    thread per probe, so later probes wait on the call already running.
    """

    def __init__(self, readiness: Readiness, timeout: float) -> None:
        self._readiness = readiness
        self._timeout = timeout
        self._lock = threading.Lock()
        self._done: threading.Event | None = None
        self._result: tuple[bool, str] = (False, "readiness not checked yet")

    def __call__(self) -> tuple[bool, str]:
        with self._lock:
            if self._done is None:
                self._done = threading.Event()
                threading.Thread(
                    target=self._run, args=(self._done,), name="readiness-check", daemon=True
                ).start()
            done = self._done
        if not done.wait(self._timeout):
            return False, f"readiness check did not answer within {self._timeout:g}s"
        return self._result

    def _run(self, done: threading.Event) -> None:
        try:
            ready, message = self._readiness()
            result = (bool(ready), str(message))
        except Exception as exc:  # reported to the probe as not ready, with the error
            result = (False, f"readiness check failed: {type(exc).__name__}: {exc}")
        with self._lock:
            self._result = result
            self._done = None
        done.set()


def bind_error(host: str, port: int, exc: OSError) -> ConfigError:
    """The ConfigError for a port that cannot be bound, naming http.port or http.host."""
    if exc.errno == errno.EADDRINUSE:
        return ConfigError(
            f"http.port: {host}:{port} is already in use; set http.port "
            "[env STREAM_PROJECTOR_HTTP__PORT] to a free port, or stop the other process"
        )
    if exc.errno == errno.EACCES:
        return ConfigError(
            f"http.port: not allowed to listen on {host}:{port} (ports below 1024 need "
            "privileges); choose a port above 1023 [env STREAM_PROJECTOR_HTTP__PORT]"
        )
    return ConfigError(
        f"http.host: cannot listen on {host}:{port}: {exc.strerror}; set http.host to an "
        "address of this host, or 0.0.0.0 [env STREAM_PROJECTOR_HTTP__HOST]"
    )


class HealthServer:
    """Serves /metrics, /healthz and /readyz from a daemon thread on one port."""

    def __init__(
        self,
        metrics: Metrics,
        heartbeat: Heartbeat,
        host: str,
        port: int,
        heartbeat_timeout: float,
        readiness: Readiness,
        readiness_timeout: float = 5.0,
        **limits: Any,
    ) -> None:
        """`limits` go to BoundedHTTPServer (workers, request_timeout, idle_timeout, ...)."""
        self.metrics = metrics
        self.heartbeat = heartbeat
        self.host = host
        self.port = port
        self.heartbeat_timeout = heartbeat_timeout
        self._readiness = _ReadinessCheck(readiness, readiness_timeout)
        self._limits = limits
        self._server: BoundedHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind and serve in a daemon thread; with port 0, `.port` becomes the bound port."""
        handler = _make_handler(self)
        try:
            self._server = BoundedHTTPServer((self.host, self.port), handler, **self._limits)
        except OSError as exc:
            raise bind_error(self.host, self.port, exc) from exc
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="health-server", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def health(self) -> tuple[bool, str]:
        """Healthy while the main loop's heartbeat is younger than the timeout."""
        age = self.heartbeat.age()
        if age < self.heartbeat_timeout:
            return True, f"ok: heartbeat {age:.1f}s ago"
        return False, (
            f"main loop stuck: last heartbeat {age:.1f}s ago (timeout {self.heartbeat_timeout:g}s)"
        )

    def readiness(self) -> tuple[bool, str]:
        """The readiness callable's answer, bounded in time and with its errors caught."""
        return self._readiness()


def _make_handler(server: HealthServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # Probes and scrapes every few seconds would flood the log with access lines.
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self._answer(head=False)

        def do_HEAD(self) -> None:
            self._answer(head=True)

        def __getattr__(self, name: str) -> Any:
            # BaseHTTPRequestHandler answers 501 for a method it finds no do_<METHOD> for;
            # every method other than GET and HEAD is one these endpoints do not allow.
            if name.startswith("do_"):
                return self._not_allowed
            raise AttributeError(name)

        def _not_allowed(self) -> None:
            self._send(
                HTTPStatus.METHOD_NOT_ALLOWED,
                b"method not allowed: GET or HEAD\n",
                headers={"Allow": "GET, HEAD"},
            )

        def _answer(self, *, head: bool) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
                body = encoder(server.metrics.registry)
                self._send(HTTPStatus.OK, body, content_type=content_type, head=head)
            elif path == "/healthz":
                self._send_check(server.health(), head)
            elif path == "/readyz":
                self._send_check(server.readiness(), head)
            else:
                body = b"not found: try /metrics, /healthz, /readyz\n"
                self._send(HTTPStatus.NOT_FOUND, body, head=head)

        def _send_check(self, check: tuple[bool, str], head: bool) -> None:
            ok, message = check
            status = HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE
            self._send(status, (message + "\n").encode(), head=head)

        def _send(
            self,
            status: HTTPStatus,
            body: bytes,
            *,
            content_type: str = "text/plain; charset=utf-8",
            head: bool = False,
            headers: dict[str, str] | None = None,
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            if not head:
                self.wfile.write(body)

    return Handler
