"""A small HTTP server for probes and scrapes that no client can exhaust.

The standard library's ThreadingHTTPServer starts a thread per connection and waits forever
for a request: 250 half-open connections held 257 threads, and each disconnect printed a
traceback. Here one thread accepts and watches connections; a connection costs a worker only
once it has sent something, a fixed pool of workers answers, every request must be complete
within `request_timeout`, a connection that sends nothing is closed after `idle_timeout`, and
a client that goes away is simply forgotten. One request per connection (HTTP/1.0).
"""

from __future__ import annotations

import collections
import contextlib
import selectors
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler
from typing import Any

import structlog

log = structlog.get_logger(__name__)

WORKERS = 4
REQUEST_TIMEOUT_SECONDS = 10.0
IDLE_TIMEOUT_SECONDS = 10.0
# Connections accepted but not answered yet; past this the oldest idle one is dropped, so a
# flood costs file descriptors up to this bound and never a thread.
MAX_CONNECTIONS = 256
POLL_SECONDS = 0.1


class BoundedHTTPServer:
    """Serves `handler` (a BaseHTTPRequestHandler class) on `address` with bounded resources."""

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        *,
        workers: int = WORKERS,
        request_timeout: float = REQUEST_TIMEOUT_SECONDS,
        idle_timeout: float = IDLE_TIMEOUT_SECONDS,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind(address)
            self._listener.listen(128)
        except OSError:
            self._listener.close()
            raise
        self._listener.setblocking(False)
        self.server_address: tuple[Any, ...] = self._listener.getsockname()
        self._handler = handler
        self._request_timeout = request_timeout
        self._idle_timeout = idle_timeout
        self._max_connections = max_connections
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        # A worker that finishes wakes the loop, so waiting requests get it at once.
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_reader.setblocking(False)
        self._wake_writer.setblocking(False)
        self._selector.register(self._wake_reader, selectors.EVENT_READ)
        # Waiting for their first byte, and ready but waiting for a free worker: accept times.
        self._idle: dict[socket.socket, float] = {}
        self._ready: collections.OrderedDict[socket.socket, float] = collections.OrderedDict()
        # Being answered: the deadline of each request.
        self._busy: dict[socket.socket, float] = {}
        self._busy_lock = threading.Lock()
        self._free = threading.Semaphore(workers)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="http")
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._serving = False

    # -- the accept loop, on the caller's thread ------------------------------------------------

    def serve_forever(self) -> None:
        """Accept, watch and dispatch connections until shutdown()."""
        self._serving = True
        try:
            while not self._stopping.is_set():
                for key, _ in self._selector.select(timeout=POLL_SECONDS):
                    if key.fileobj is self._listener:
                        self._accept()
                    elif key.fileobj is self._wake_reader:
                        self._drain_wakeups()
                    else:
                        self._mark_ready(key.fileobj)  # type: ignore[arg-type]
                self._dispatch()
                self._expire(time.monotonic())
        finally:
            self._stopped.set()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # e.g. the client reset before accept: nothing to serve
            if len(self._idle) + len(self._ready) >= self._max_connections:
                self._drop_oldest()
            self._idle[conn] = time.monotonic()
            self._selector.register(conn, selectors.EVENT_READ)

    def _drain_wakeups(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while self._wake_reader.recv(4096):
                pass

    def _mark_ready(self, conn: socket.socket) -> None:
        self._selector.unregister(conn)
        self._ready[conn] = self._idle.pop(conn)

    def _dispatch(self) -> None:
        while self._ready and self._free.acquire(blocking=False):
            conn, _ = self._ready.popitem(last=False)
            with self._busy_lock:
                self._busy[conn] = time.monotonic() + self._request_timeout
            self._pool.submit(self._answer, conn)

    def _expire(self, now: float) -> None:
        for conn, since in list(self._idle.items()):
            if now - since > self._idle_timeout:
                self._selector.unregister(conn)
                del self._idle[conn]
                _close(conn)
        for conn, since in list(self._ready.items()):
            if now - since > self._idle_timeout:
                del self._ready[conn]
                _close(conn)
        with self._busy_lock:
            late = [conn for conn, deadline in self._busy.items() if now > deadline]
        for conn in late:
            # Unblocks the worker's read or write; it then closes the connection itself.
            _shut(conn)

    def _drop_oldest(self) -> None:
        oldest_idle = min(self._idle, key=self._idle.__getitem__, default=None)
        oldest_ready = next(iter(self._ready), None)
        if oldest_idle is not None and (
            oldest_ready is None or self._idle[oldest_idle] <= self._ready[oldest_ready]
        ):
            self._selector.unregister(oldest_idle)
            del self._idle[oldest_idle]
            _close(oldest_idle)
        elif oldest_ready is not None:
            del self._ready[oldest_ready]
            _close(oldest_ready)

    # -- a worker --------------------------------------------------------------------------------

    def _answer(self, conn: socket.socket) -> None:
        try:
            conn.setblocking(True)
            conn.settimeout(self._request_timeout)
            peer = conn.getpeername()
            self._handler(conn, peer, self)  # type: ignore[arg-type]
        except OSError:
            pass  # the client went away or was too slow: nothing to answer, nothing to log
        except Exception:  # a bug in a handler: say so once, keep serving
            log.exception("http request failed")
        finally:
            with self._busy_lock:
                self._busy.pop(conn, None)
            _close(conn)
            self._free.release()
            with contextlib.suppress(OSError):  # full (the loop is awake anyway) or closed
                self._wake_writer.send(b"\0")

    # -- lifecycle ---------------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop the accept loop (when serve_forever runs), cut the requests in flight."""
        self._stopping.set()
        if self._serving:
            self._stopped.wait(timeout=5)
        with self._busy_lock:
            busy = list(self._busy)
        for conn in busy:
            _shut(conn)  # a slow client must not hold the daemon's stop
        self._pool.shutdown(wait=True, cancel_futures=True)

    def server_close(self) -> None:
        """Close the listening socket and every connection not answered yet."""
        # Requests cancelled by shutdown() never ran: their connections are closed here too.
        for conn in [*self._idle, *self._ready, *self._busy]:
            _close(conn)
        self._idle.clear()
        self._ready.clear()
        self._busy.clear()
        self._selector.close()
        self._listener.close()
        self._wake_reader.close()
        self._wake_writer.close()


def _shut(conn: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed by the client
        conn.shutdown(socket.SHUT_RDWR)


def _close(conn: socket.socket) -> None:
    _shut(conn)
    conn.close()
