"""What `http:` and `api:` start: one server on a shared address, two on two, each alone; busy ports fail cleanly.

Real uvicorn on loopback and real HTTP requests; the daemon-level tests run `edgewatch run` and a Daemon.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.__main__ import main
from daemon.app import Daemon
from daemon.config import ApiOptions, BatchOptions, HttpOptions, load_config
from daemon.service.health import HealthRules
from daemon.service.metrics import Metrics
from daemon.service.stats import Stats
from daemon.web.app import Endpoints, Listener, listeners, start_endpoints
from daemon.web.health import health_routes
from daemon.web.server import ListenError
from daemon.worker import Worker
from pipelines.stages import NoopPipeline
from tests.fixtures.api_server import call


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def get(port: int, path: str) -> tuple[int, str, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            status, ctype, body = resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            status, ctype, body = exc.code, exc.headers["Content-Type"], exc.read().decode()
    return status, ctype, json.loads(body) if ctype == "application/json" else body


@pytest.fixture
def worker() -> Iterator[Worker]:
    running = Worker({}, NoopPipeline(), lambda r: None, Stats(), BatchOptions(max_size=4))
    running.start()
    yield running
    assert running.stop(timeout=5)


def start(worker: Worker, http: HttpOptions, api: ApiOptions) -> Endpoints:
    stats = Stats()
    stats.worker.last_progress_mono = time.monotonic()
    return start_endpoints(http, api, health_routes(stats, HealthRules(), Metrics(stats)), {}, {}, worker)


@pytest.mark.parametrize(
    ("http", "api", "expected"),
    [
        (HttpOptions(), ApiOptions(), []),
        (HttpOptions(enabled=True), ApiOptions(), [Listener("http", "127.0.0.1", 9108, health=True, api=False)]),
        (HttpOptions(), ApiOptions(enabled=True), [Listener("api", "127.0.0.1", 9001, health=False, api=True)]),
        (HttpOptions(enabled=True), ApiOptions(enabled=True),  # the defaults: two ports
         [Listener("api", "127.0.0.1", 9001, health=False, api=True),
          Listener("http", "127.0.0.1", 9108, health=True, api=False)]),
        (HttpOptions(enabled=True, port=9001), ApiOptions(enabled=True),
         [Listener("http and api", "127.0.0.1", 9001, health=True, api=True)]),
        # same port, other host: two binds (the second fails if the first covers it); port 0: two free ports
        (HttpOptions(enabled=True, host="0.0.0.0", port=9001), ApiOptions(enabled=True),
         [Listener("api", "127.0.0.1", 9001, health=False, api=True),
          Listener("http", "0.0.0.0", 9001, health=True, api=False)]),
        (HttpOptions(enabled=True, port=0), ApiOptions(enabled=True, port=0),
         [Listener("api", "127.0.0.1", 0, health=False, api=True),
          Listener("http", "127.0.0.1", 0, health=True, api=False)]),
        (HttpOptions(port=9001), ApiOptions(enabled=True), [Listener("api", "127.0.0.1", 9001, health=False,
                                                                     api=True)]),
    ],
)
def test_listeners_from_the_config(http: HttpOptions, api: ApiOptions, expected: list[Listener]) -> None:
    assert listeners(http, api) == expected


def test_http_and_api_on_one_port_is_one_server_with_all_routes(worker: Worker) -> None:
    port = free_port()
    endpoints = start(worker, HttpOptions(enabled=True, port=port), ApiOptions(enabled=True, port=port))
    try:
        assert endpoints.health is None and endpoints.api is not None and endpoints.api.port == port
        status, ctype, report = get(port, "/healthz")
        assert (status, ctype, report["healthy"]) == (200, "application/json", True)
        status, ctype, text = get(port, "/metrics")
        assert status == 200 and ctype.startswith("text/plain") and "edgewatch_uptime_seconds" in text
        status, _, info = get(port, "/info")
        assert status == 200 and info["name"] == "edgewatch"
        status, _, missing = get(port, "/nope")
        assert status == 404 and "/healthz" in missing["message"] and "/infer/object_detection" in missing["message"]
    finally:
        assert endpoints.stop()
    with socket.socket() as again:  # the one socket is closed
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))


def test_http_and_api_on_two_ports_keep_their_routes_apart(worker: Worker) -> None:
    endpoints = start(worker, HttpOptions(enabled=True, port=0), ApiOptions(enabled=True, port=0))
    try:
        assert endpoints.health is not None and endpoints.api is not None
        health, api = endpoints.health.port, endpoints.api.port
        assert health != api
        assert get(health, "/healthz")[0] == 200 and get(health, "/metrics")[0] == 200
        assert get(api, "/info")[0] == 200
        # an API on a public address never exposes /metrics; a scrape address never serves the API
        assert get(api, "/metrics")[0] == 404 and get(api, "/healthz")[0] == 404
        assert get(health, "/info")[0] == 404
    finally:
        assert endpoints.stop()


def test_http_only_serves_health_and_metrics(worker: Worker) -> None:
    endpoints = start(worker, HttpOptions(enabled=True, port=0), ApiOptions())
    try:
        assert endpoints.api is None and endpoints.health is not None
        port = endpoints.health.port
        assert get(port, "/healthz")[0] == 200 and get(port, "/metrics")[0] == 200
        status, _, missing = get(port, "/info")
        assert status == 404 and missing["message"] == "Not Found: this server serves /healthz, /metrics"
    finally:
        assert endpoints.stop()


def test_api_only_has_no_health_routes(worker: Worker) -> None:
    endpoints = start(worker, HttpOptions(), ApiOptions(enabled=True, port=0))
    try:
        assert endpoints.health is None and endpoints.api is not None
        assert get(endpoints.api.port, "/info")[0] == 200 and get(endpoints.api.port, "/healthz")[0] == 404
    finally:
        assert endpoints.stop()


def test_a_busy_port_fails_before_anything_serves(worker: Worker) -> None:
    api_port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        with pytest.raises(ListenError, match=f"^http: cannot listen on 127.0.0.1:{busy}: ") as info:
            start(worker, HttpOptions(enabled=True, port=busy), ApiOptions(enabled=True, port=api_port))
        assert "\n" not in str(info.value)
        with pytest.raises(ListenError, match=f"^http and api: cannot listen on 127.0.0.1:{busy}: "):
            start(worker, HttpOptions(enabled=True, port=busy), ApiOptions(enabled=True, port=busy))
    with socket.socket() as again:  # the API's socket, bound first, was let go again
        again.bind(("127.0.0.1", api_port))


def test_one_port_on_overlapping_hosts_is_a_port_in_use(worker: Worker) -> None:
    port = free_port()
    with pytest.raises(ListenError, match=f"^http: cannot listen on 0.0.0.0:{port}: Address already in use"):
        start(worker, HttpOptions(enabled=True, host="0.0.0.0", port=port), ApiOptions(enabled=True, port=port))


def daemon_config(tmp_path: Path, media_dir: Path, models_dir: Path, http: str, api: str) -> Path:
    path = tmp_path / "web.yaml"
    path.write_text("\n".join([
        f"models: {{det: {{type: yolox, path: {models_dir}/yolox_nano.onnx}}}}",
        "pipeline: {name: photos, detector: det}",
        f"sources: [{{id: photos, type: images, folder: {media_dir}, image_ext: [.jpg], loop: true, fps: 2}}]",
        f"state_dir: {tmp_path}/state",
        f"http: {http}",
        f"api: {api}",
    ]) + "\n")
    return path


def test_run_with_a_busy_port_is_one_line_and_exit_1(tmp_path: Path, media_dir: Path, models_dir: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        path = daemon_config(tmp_path, media_dir, models_dir, f"{{enabled: true, port: {busy}}}", "{enabled: false}")
        assert main(["run", str(path)]) == 1
    err = capsys.readouterr().err
    # refused while the config is checked (as `validate` does) or when the servers start: one line either way
    assert any(line.startswith(f"{path}: ") and f"http: cannot listen on 127.0.0.1:{busy}: " in line
               for line in err.splitlines()), err
    assert "Traceback" not in err


def test_daemon_serves_health_and_api_on_one_shared_port(tmp_path: Path, media_dir: Path, models_dir: Path) -> None:
    port = free_port()
    options = f"{{enabled: true, port: {port}}}"
    daemon = Daemon(load_config(daemon_config(tmp_path, media_dir, models_dir, options, options)))
    daemon.start()
    try:
        assert daemon.health is None and daemon.api is not None and daemon.api.port == port
        assert get(port, "/healthz")[2]["worker"]["healthy"] is True
        assert "edgewatch_frames_captured" in get(port, "/metrics")[2]
        assert call(port, "POST", "/model/add", {"model_id": "det/1"})[0] == 200  # the daemon's own loaded model
        assert [m["model_id"] for m in get(port, "/model/registry")[2]["models"]] == ["det/1"]
    finally:
        assert daemon.stop()
