"""End to end: two RTSP cameras and a file -> YOLOX-nano -> real mosquitto and JSONL, with faults on the way."""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from daemon.app import Daemon
from daemon.config import load_config
from tests.fixtures.mosquitto import Mosquitto
from tests.fixtures.rtsp_server import RtspServer

pytestmark = pytest.mark.integration

PASSWORD = "s3cr3t-Pa55"  # must never show up in logs


def write_config(tmp_path: Path, models_dir: Path, media_dir: Path, server: RtspServer, broker: Mosquitto) -> Path:
    (tmp_path / "rtsp_password").write_text(PASSWORD)
    text = f"""
models:
  det: {{type: yolox, path: {models_dir}/yolox_nano.onnx, runtime: {{intra_op_threads: 1}}}}
pipeline: {{name: e2e, detector: det}}
sources:
  - id: cam1
    type: rtsp
    url: {server.url("/cam1")}
    username: viewer
    password: ${{file:{tmp_path}/rtsp_password}}
    stall_timeout_s: 3
    reconnect: {{initial_s: 0.3, max_s: 2}}
  - id: cam2
    type: rtsp
    url: rtsp://viewer:{PASSWORD}@{server.url("/cam2").removeprefix("rtsp://")}
    reconnect: {{initial_s: 0.3, max_s: 2}}
  - id: street
    type: file
    path: {media_dir}/london_street_TestV4.mp4
    pace: realtime
    loop: true
    fps: 5
sinks:
  - {{id: broker, type: mqtt, host: 127.0.0.1, port: {broker.port}, qos: 1}}
  - {{id: lines, type: jsonl, path: {tmp_path}/results.jsonl, flush: every}}
batch: {{max_size: 3, timeout_ms: 20}}
state_dir: {tmp_path}/state
"""
    path = tmp_path / "e2e.yaml"
    path.write_text(text)
    return path


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def jsonl_results(path: Path) -> dict[str, set[int]]:
    seen: dict[str, set[int]] = defaultdict(set)
    for line in path.read_text().splitlines():
        message = json.loads(line)
        if message["kind"] == "result":
            seen[message["source_id"]].add(message["seq"])
    return seen


def test_cameras_and_file_to_mqtt_and_jsonl_through_faults(
    tmp_path: Path, models_dir: Path, media_dir: Path, caplog: pytest.LogCaptureFixture,
    rtsp_server_factory: Callable[..., RtspServer], mosquitto: Mosquitto,
) -> None:
    caplog.set_level(logging.DEBUG)
    server = rtsp_server_factory(user="viewer", password=PASSWORD)
    results = mosquitto.subscribe("edgewatch/+/results")
    status = mosquitto.subscribe("edgewatch/+/status")
    daemon = Daemon(load_config(write_config(tmp_path, models_dir, media_dir, server, mosquitto)))
    daemon.start()
    processed = lambda sid: daemon.stats.source(sid).processed  # noqa: E731
    try:
        wait_until(lambda: all(processed(s) >= 10 for s in ("cam1", "cam2", "street")), 60, "all three streams")

        # Kill the RTSP server: both cameras reconnect once it is back; the file never stops meanwhile.
        before = {s: processed(s) for s in ("cam1", "street")}
        server.kill()
        wait_until(lambda: daemon.stats.source("cam1").state in ("reconnecting", "connecting"), 20, "cam1 to notice")
        street_during = processed("street")
        time.sleep(1.5)
        assert processed("street") > street_during, "the file source stopped while the cameras were down"
        server.restart()
        wait_until(lambda: processed("cam1") > before["cam1"] + 5, 30, "cam1 to resume after restart")
        assert daemon.stats.source("cam1").reconnects >= 1

        # Stall the server (connection stays open, no frames): the watchdog reconnects cam1.
        reconnects = daemon.stats.source("cam1").reconnects
        server.stall()
        wait_until(lambda: daemon.stats.source("cam1").reconnects > reconnects, 20, "the stall watchdog")
        server.resume()
        resumed_from = processed("cam1")
        wait_until(lambda: processed("cam1") > resumed_from + 5, 30, "cam1 to resume after the stall")
    finally:
        assert daemon.stop()

    lines = jsonl_results(tmp_path / "results.jsonl")
    assert set(lines) == {"cam1", "cam2", "street"}
    wait_until(lambda: sum(len(v) for v in _mqtt_results(results).values()) >= sum(len(v) for v in lines.values()),
               15, "MQTT to catch up with the JSONL file")
    assert _mqtt_results(results) == lines  # the subscriber got exactly what the file recorded
    for sid in ("cam1", "cam2", "street"):
        assert len(lines[sid]) == daemon.stats.source(sid).processed
    states = [m.json()["state"] for m in status.on("edgewatch/cam1/status")]
    assert "streaming" in states and "reconnecting" in states

    logs = caplog.text + server.log_text()
    assert PASSWORD not in logs and PASSWORD not in (tmp_path / "results.jsonl").read_text()


def _mqtt_results(collector: Any) -> dict[str, set[int]]:
    seen: dict[str, set[int]] = defaultdict(set)
    for message in list(collector.messages):
        payload = message.json()
        seen[payload["source_id"]].add(payload["seq"])
    return seen
