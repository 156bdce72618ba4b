"""/healthz and /metrics on the one web stack: real uvicorn on loopback, real HTTP requests."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from daemon.service.health import HealthRules
from daemon.service.metrics import Metrics
from daemon.service.stats import Stats
from daemon.web.health import health_routes
from daemon.web.server import ListenError, WebServer, listen


def serve_health(stats: Stats, rules: HealthRules, host: str = "127.0.0.1", port: int = 0) -> WebServer:
    server = WebServer.serving([health_routes(stats, rules, Metrics(stats))], listen("http", host, port), "http")
    server.start()
    return server


@pytest.fixture
def live_stats() -> Stats:
    now = time.monotonic()
    stats = Stats()
    cam = stats.source("cam1")
    cam.set_state("streaming")
    cam.last_frame_mono = now
    cam.captured, cam.processed = 120, 118
    cam.dropped["queue_full"] = 2
    stats.sink("mqtt").connected = True
    return stats


@pytest.fixture
def server(live_stats: Stats) -> Iterator[WebServer]:
    rules = HealthRules(required_sources=frozenset({"cam1"}), required_sinks=frozenset({"mqtt"}))
    srv = serve_health(live_stats, rules)
    yield srv
    assert srv.stop()


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers["Content-Type"], exc.read().decode()


def test_healthz_200_then_503_with_reasons(server: WebServer, live_stats: Stats) -> None:
    assert server.url.startswith("http://127.0.0.1:") and server.port > 0
    code, ctype, body = get(server.url + "/healthz")
    assert (code, ctype) == (200, "application/json")
    report = json.loads(body)
    assert report["healthy"] is True
    assert report["sources"]["cam1"]["healthy"] is True
    assert report["sinks"]["mqtt"] == {"healthy": True, "reason": "connected", "required": True}

    live_stats.sources["cam1"].set_state("reconnecting")
    live_stats.sources["cam1"].last_error = "rtsp://cam1: connection refused"
    live_stats.sinks["mqtt"].connected = False
    code, _, body = get(server.url + "/healthz")
    report = json.loads(body)
    assert code == 503 and report["healthy"] is False
    assert report["sources"]["cam1"]["reason"].startswith("reconnecting for ")
    assert report["sources"]["cam1"]["reason"].endswith(": rtsp://cam1: connection refused")
    assert "nothing spooled" in report["sinks"]["mqtt"]["reason"]


def test_metrics_endpoint_parses_and_follows_stats(server: WebServer, live_stats: Stats) -> None:
    code, ctype, body = get(server.url + "/metrics")
    assert code == 200 and ctype.startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(body)}
    assert {"edgewatch_frames_captured", "edgewatch_source_state", "process_cpu_seconds"} <= set(families)
    live_stats.sources["cam1"].captured = 121  # no second counter to keep in step: the scrape reads Stats
    _, _, body = get(server.url + "/metrics")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(body)
        for s in f.samples
    }
    assert samples[("edgewatch_frames_captured_total", (("source", "cam1"),))] == 121


def test_unknown_path_is_404(server: WebServer) -> None:
    code, _, body = get(server.url + "/nope")
    assert code == 404 and "/healthz" in body


def test_port_in_use_is_a_clear_error(live_stats: Stats) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ListenError, match=f"cannot listen on 127.0.0.1:{port}"):
            serve_health(live_stats, HealthRules(), port=port)


def test_an_unbindable_host_is_a_one_line_error() -> None:
    with pytest.raises(ListenError, match=r"^http: cannot listen on 192\.0\.2\.1:9108: ") as info:
        listen("http", "192.0.2.1", 9108)  # TEST-NET-1: never an address of this machine
    assert "\n" not in str(info.value)


def test_cache_control_and_content_negotiation(server: WebServer) -> None:
    request = urllib.request.Request(server.url + "/metrics", headers={"Accept": "application/openmetrics-text"})
    with urllib.request.urlopen(request, timeout=5) as resp:
        assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
        assert resp.headers["Cache-Control"] == "no-store"
        assert resp.read().decode().rstrip().endswith("# EOF")


def test_ipv6_loopback(live_stats: Stats) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this Python")
    try:
        server = serve_health(live_stats, HealthRules(), host="::1")
    except ListenError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    try:
        assert server.url.startswith("http://[::1]:")
        code, ctype, body = get(server.url + "/healthz")
        assert (code, ctype) == (200, "application/json") and json.loads(body)["healthy"] is True
    finally:
        assert server.stop()
