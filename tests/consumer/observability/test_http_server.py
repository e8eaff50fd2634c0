"""The HTTP server under hostile clients, over real sockets: idle and half-open connections cost
no thread and are closed, slow requests are cut, disconnects are quiet, GET and HEAD only."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator

import pytest
import requests
from structlog.testing import capture_logs

from consumer.observability.health import HealthServer, Heartbeat
from consumer.observability.metrics import Metrics
from tests.fixtures.servers import wait_until

WORKERS = 4
IDLE_TIMEOUT = 0.5
REQUEST_TIMEOUT = 0.5


@pytest.fixture
def server() -> Iterator[HealthServer]:
    health = HealthServer(
        Metrics(),
        Heartbeat(),
        "127.0.0.1",
        0,
        30.0,
        lambda: (True, "ok"),
        workers=WORKERS,
        idle_timeout=IDLE_TIMEOUT,
        request_timeout=REQUEST_TIMEOUT,
        max_connections=64,
    )
    health.start()
    yield health
    health.stop()


def connect(server: HealthServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def closed_by_server(conn: socket.socket) -> bool:
    """True once the server has closed the connection (EOF or reset)."""
    conn.settimeout(0.05)
    try:
        return conn.recv(1024) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def raw_request(server: HealthServer, request: bytes) -> bytes:
    with connect(server) as conn:
        conn.sendall(request)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_idle_connections_cost_no_thread_and_are_closed(server: HealthServer) -> None:
    before = threading.active_count()
    idle = [connect(server) for _ in range(150)]
    try:
        # Probes are answered while 150 connections sit idle, by the fixed pool of workers.
        for _ in range(10):
            assert requests.get(f"http://127.0.0.1:{server.port}/healthz", timeout=5).ok
        assert threading.active_count() <= before + WORKERS
        # More than max_connections (64) idle: the oldest are dropped; then all time out.
        wait_until(lambda: all(closed_by_server(c) for c in idle), timeout=10, what="idle closed")
    finally:
        for conn in idle:
            conn.close()


def test_a_request_that_never_completes_is_cut_and_does_not_block_probes(
    server: HealthServer,
) -> None:
    slow = [connect(server) for _ in range(WORKERS * 2)]
    try:
        for conn in slow:
            conn.sendall(b"GET /metrics HTTP/1.0\r\nHost: x\r\n")  # the blank line never comes
        wait_until(lambda: all(closed_by_server(c) for c in slow), timeout=10, what="cut")
        assert requests.get(f"http://127.0.0.1:{server.port}/readyz", timeout=5).ok
    finally:
        for conn in slow:
            conn.close()


def test_clients_that_go_away_are_forgotten_without_a_line(
    server: HealthServer, capfd: pytest.CaptureFixture[str]
) -> None:
    with capture_logs() as logs:
        for n in range(100):
            conn = connect(server)
            if n % 2:
                conn.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            else:
                conn.sendall(b"GET /met")
            # Reset instead of a clean close: the server's write meets a broken connection.
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()
        assert requests.get(f"http://127.0.0.1:{server.port}/metrics", timeout=5).ok
    assert logs == []
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")


def test_head_is_get_without_a_body(server: HealthServer) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/nowhere"):
        get = requests.get(f"http://127.0.0.1:{server.port}{path}", timeout=5)
        head = requests.head(f"http://127.0.0.1:{server.port}{path}", timeout=5)
        assert head.status_code == get.status_code
        assert head.content == b""
        assert head.headers["Content-Type"] == get.headers["Content-Type"]
        assert int(head.headers["Content-Length"]) > 0


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "BREW"])
def test_every_other_method_is_405_with_allow(server: HealthServer, method: str) -> None:
    answer = raw_request(server, f"{method} /metrics HTTP/1.0\r\nHost: x\r\n\r\n".encode())
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 405 ")
    assert b"\r\nAllow: GET, HEAD" in head
    assert body == b"method not allowed: GET or HEAD\n"


def test_stop_does_not_wait_for_a_slow_client() -> None:
    health = HealthServer(
        Metrics(), Heartbeat(), "127.0.0.1", 0, 30.0, lambda: (True, "ok"), request_timeout=60
    )
    health.start()
    slow = connect(health)
    slow.sendall(b"GET /metrics HTTP/1.0\r\n")
    wait_until(lambda: health._server is not None and health._server._busy, what="in flight")
    stopped = threading.Event()
    threading.Thread(target=lambda: (health.stop(), stopped.set()), daemon=True).start()
    assert stopped.wait(10), "stop() waited for the slow client"
    slow.close()
