"""Health endpoints over real HTTP: /metrics, /healthz from the heartbeat, /readyz."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from consumer.observability.health import HealthServer, Heartbeat
from consumer.observability.metrics import Metrics
from tests.fixtures.servers import wait_until

Readiness = Callable[[], tuple[bool, str]]


class Probe:
    """A running HealthServer and a GET helper."""

    def __init__(self, server: HealthServer) -> None:
        self.server = server

    def get(self, path: str, timeout: float = 5.0) -> requests.Response:
        return requests.get(f"http://127.0.0.1:{self.server.port}{path}", timeout=timeout)


@pytest.fixture
def start_server() -> Iterator[Callable[..., Probe]]:
    servers: list[HealthServer] = []

    def start(
        readiness: Readiness = lambda: (True, "ready"),
        heartbeat: Heartbeat | None = None,
        heartbeat_timeout: float = 30.0,
        readiness_timeout: float = 5.0,
        metrics: Metrics | None = None,
    ) -> Probe:
        server = HealthServer(
            metrics or Metrics(),
            heartbeat or Heartbeat(),
            "127.0.0.1",
            0,
            heartbeat_timeout,
            readiness,
            readiness_timeout=readiness_timeout,
        )
        server.start()
        servers.append(server)
        return Probe(server)

    yield start
    for server in servers:
        server.stop()


def test_port_zero_binds_a_free_port_reported_after_start(
    start_server: Callable[..., Probe],
) -> None:
    probe = start_server()
    assert probe.server.port != 0
    assert probe.get("/healthz").status_code == 200


def test_metrics_endpoint_serves_the_registry_in_prometheus_text_format(
    start_server: Callable[..., Probe],
) -> None:
    metrics = Metrics()
    metrics.set_leases_held(4)
    probe = start_server(metrics=metrics)

    response = probe.get("/metrics")

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    held = {
        s.name: s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }
    assert held["stream_projector_leases_held"] == 4


def test_metrics_endpoint_speaks_openmetrics_when_asked(
    start_server: Callable[..., Probe],
) -> None:
    probe = start_server()
    response = requests.get(
        f"http://127.0.0.1:{probe.server.port}/metrics",
        headers={"Accept": "application/openmetrics-text; version=1.0.0"},
        timeout=5,
    )
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")


def test_healthz_turns_503_when_the_loop_stops_beating_and_200_after_a_beat(
    start_server: Callable[..., Probe],
) -> None:
    heartbeat = Heartbeat()
    probe = start_server(heartbeat=heartbeat, heartbeat_timeout=0.3)
    assert probe.get("/healthz").status_code == 200

    # The loop is "stuck": nobody beats any more. (A Response is falsy when >= 400.)
    def unhealthy_body() -> str | None:
        response = probe.get("/healthz")
        return response.text if response.status_code == 503 else None

    body = wait_until(unhealthy_body, timeout=5, what="/healthz 503")
    assert "last heartbeat" in str(body)

    heartbeat.beat()
    assert probe.get("/healthz").status_code == 200


def test_heartbeat_age_counts_from_the_last_beat() -> None:
    now = [100.0]
    heartbeat = Heartbeat(clock=lambda: now[0])
    now[0] = 107.0
    assert heartbeat.age() == 7.0
    heartbeat.beat()
    now[0] = 108.5
    assert heartbeat.age() == 1.5


def test_readyz_reflects_the_readiness_callable(start_server: Callable[..., Probe]) -> None:
    state = {"ready": False, "message": "first shard sync not done"}
    probe = start_server(readiness=lambda: (state["ready"], state["message"]))

    not_ready = probe.get("/readyz")
    assert (not_ready.status_code, not_ready.text.strip()) == (503, "first shard sync not done")

    state.update(ready=True, message="lease table and sinks reachable")
    ready = probe.get("/readyz")
    assert (ready.status_code, ready.text.strip()) == (200, "lease table and sinks reachable")


def test_readyz_reports_an_error_raised_by_the_readiness_callable(
    start_server: Callable[..., Probe],
) -> None:
    def broken() -> tuple[bool, str]:
        raise ConnectionError("lease table unreachable")

    probe = start_server(readiness=broken)

    response = probe.get("/readyz")
    assert response.status_code == 503
    assert "ConnectionError: lease table unreachable" in response.text
    assert probe.get("/healthz").status_code == 200


def test_a_hanging_readiness_check_neither_hangs_the_probe_nor_the_server(
    start_server: Callable[..., Probe],
) -> None:
    release = threading.Event()
    finished = threading.Event()
    calls: list[int] = []

    def hanging() -> tuple[bool, str]:
        calls.append(1)
        release.wait(10)
        finished.set()
        return True, "finally"

    probe = start_server(readiness=hanging, readiness_timeout=0.2)
    try:
        first = probe.get("/readyz", timeout=3)
        assert first.status_code == 503
        assert "did not answer within 0.2s" in first.text
        # Answered while the check still hangs: the probe did not wait for it.
        assert not finished.is_set()
        assert probe.get("/readyz", timeout=3).status_code == 503
        assert probe.get("/healthz", timeout=3).status_code == 200
        assert probe.get("/metrics", timeout=3).status_code == 200
        # Probes while the check hangs wait on it rather than starting one thread each.
        assert len(calls) == 1
    finally:
        release.set()
    wait_until(lambda: probe.get("/readyz").status_code == 200, timeout=5, what="ready")


def test_unknown_paths_are_404(start_server: Callable[..., Probe]) -> None:
    assert start_server().get("/nope").status_code == 404


def test_stop_closes_the_port(start_server: Callable[..., Probe]) -> None:
    probe = start_server()
    probe.server.stop()
    with pytest.raises(requests.ConnectionError):
        probe.get("/healthz", timeout=1)
