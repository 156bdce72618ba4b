"""Runtime control against a real daemon process and a real mosquitto: MQTT switches, the REST camera API,
retained topics of a removed camera cleared, refusals that disturb nothing, and the overlay after a restart."""

from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.__main__ import main
from tests.fixtures.daemon_proc import DaemonProcess, wait_until
from tests.fixtures.mosquitto import Collector, Mosquitto, free_port

pytestmark = pytest.mark.integration

P = "edgewatch"
BATCH = 2  # batch.max_size below: what may still be in flight when a switch flips


def camera(media_dir: Path, source_id: str) -> dict[str, Any]:
    return {"id": source_id, "type": "file", "path": str(media_dir / "london_street_TestV4.mp4"),
            "pace": "realtime", "loop": True, "fps": 4}


def http(port: int, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                     headers={"Authorization": "Bearer k3y", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def results(seen: Collector, source: str) -> int:
    return len(seen.on(f"{P}/{source}/results"))


def retained_now(broker: Mosquitto, topic: str) -> dict[str, bytes]:
    """What a new subscriber gets replayed for `topic` (retained messages only), after a short settle."""
    fresh = broker.subscribe(topic)
    time.sleep(0.5)  # the broker sends retained messages right after the SUBACK
    got = {m.topic: m.payload for m in list(fresh.messages) if m.retain}
    fresh.close()
    return got


@pytest.fixture
def daemon(tmp_path: Path, models_dir: Path, media_dir: Path, mosquitto: Mosquitto
           ) -> Iterator[tuple[DaemonProcess, int]]:
    """The daemon (not started) and its API port: cam1 and cam2 loop the London video at 4 fps."""
    api_port = free_port()
    config = {
        "models": {"det": {"type": "yolox", "path": str(models_dir / "yolox_nano.onnx"),
                           "runtime": {"providers": ["cpu"], "intra_op_threads": 1}}},
        "pipeline": {"name": "control", "detector": "det"},
        "sources": [camera(media_dir, "cam1"), camera(media_dir, "cam2")],
        "sinks": [{"id": "mqtt", "type": "mqtt", "host": "127.0.0.1", "port": mosquitto.port, "qos": 0,
                   "kinds": ["result", "status", "control"], "reconnect_min_s": 1, "reconnect_max_s": 2,
                   "homeassistant": {"enabled": True}}],
        "batch": {"max_size": BATCH, "timeout_ms": 5},
        "stats_interval_s": 0,
        "api": {"enabled": True, "host": "127.0.0.1", "port": api_port, "api_key": "k3y"},
    }
    running = DaemonProcess(tmp_path / "daemon", config)
    yield running, api_port
    running.close()


def test_switches_cameras_and_overlay(
    daemon: tuple[DaemonProcess, int], mosquitto: Mosquitto, media_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    proc, port = daemon
    seen = mosquitto.subscribe(f"{P}/#")
    pub = mosquitto.client()
    pub.loop_start()
    proc.start().wait_for_log("edgewatch running", timeout=60)
    wait_until(lambda: results(seen, "cam1") > 2 and results(seen, "cam2") > 2, 30, "results of both", proc)
    seen.wait_for(lambda m: m.topic == f"{P}/cam1/detect/state" and m.payload == b"ON" and m.retain)

    # detect OFF: results stop within one batch, capture and status go on
    pub.publish(f"{P}/cam1/detect/set", "OFF", qos=1)
    seen.wait_for(lambda m: m.topic == f"{P}/cam1/detect/state" and m.payload == b"OFF")
    at_off, captured = results(seen, "cam1"), proc.metric("edgewatch_frames_captured_total", source="cam1")
    cam2_before = results(seen, "cam2")
    wait_until(lambda: results(seen, "cam2") >= cam2_before + 4, 20, "cam2 results go on", proc)
    assert results(seen, "cam1") <= at_off + BATCH
    assert proc.metric("edgewatch_frames_captured_total", source="cam1") > captured
    assert proc.metric("edgewatch_frames_dropped_total", source="cam1", reason="detect_off") > 0
    assert retained_now(mosquitto, f"{P}/cam1/status")[f"{P}/cam1/status"].find(b'"streaming"') > 0

    # bad payloads and unknown cameras: an error on <prefix>/status, nothing else changes
    pub.publish(f"{P}/cam2/detect/set", "MAYBE", qos=1)
    pub.publish(f"{P}/nope/enabled/set", "ON", qos=1)
    bad = seen.wait_for(lambda m: m.topic == f"{P}/status" and b"MAYBE" in m.payload).json()
    assert "expected ON or OFF" in bad["error"] and bad["camera"] == "cam2"
    unknown = seen.wait_for(lambda m: m.topic == f"{P}/status" and b"nope" in m.payload).json()
    assert "unknown camera 'nope'" in unknown["error"]

    # detect ON resumes; enabled OFF stops the capture with status "disabled"
    pub.publish(f"{P}/cam1/detect/set", "ON", qos=1)
    wait_until(lambda: results(seen, "cam1") > at_off + BATCH + 2, 20, "cam1 results again", proc)
    pub.publish(f"{P}/cam2/enabled/set", "off", qos=1)
    seen.wait_for(lambda m: m.topic == f"{P}/cam2/enabled/state" and m.payload == b"OFF")
    seen.wait_for(lambda m: m.topic == f"{P}/cam2/status" and b'"disabled"' in m.payload)
    stopped_at = proc.metric("edgewatch_frames_captured_total", source="cam2")
    cam3_wait = results(seen, "cam1")
    wait_until(lambda: results(seen, "cam1") >= cam3_wait + 4, 20, "cam1 results go on", proc)
    assert proc.metric("edgewatch_frames_captured_total", source="cam2") == stopped_at

    # HTTP: add (invalid, duplicate, good), list, remove
    status, body = http(port, "POST", "/api/cameras", {"id": "cam3", "type": "file", "fps": -1, "colour": 1})
    assert status == 422
    fields = {e["field"] for e in body["errors"]}
    assert {"fps", "colour"} <= fields and "path" in fields
    assert http(port, "POST", "/api/cameras", camera(media_dir, "cam1"))[0] == 409
    assert http(port, "POST", "/api/cameras/cam1/detect", {"on": "sideways"})[0] == 400
    assert http(port, "DELETE", "/api/cameras/nope")[0] == 404
    status, body = http(port, "POST", "/api/cameras", camera(media_dir, "cam3"))
    assert status == 200 and body["origin"] == "api"
    wait_until(lambda: results(seen, "cam3") > 2, 30, "results of the camera added over HTTP", proc)
    status, body = http(port, "DELETE", "/api/cameras/cam1")
    assert status == 200 and body["state"] == "removed"
    seen.wait_for(lambda m: m.topic == f"{P}/cam1/status" and m.payload == b"" and m.retain)
    assert not [t for t, v in retained_now(mosquitto, f"{P}/cam1/#").items() if v], "cam1 retained topics left"
    discovery = retained_now(mosquitto, "homeassistant/#")
    assert not [t for t, v in discovery.items() if "/cam1_" in t and v], "cam1 discovery configs left"
    assert [t for t, v in discovery.items() if "/cam2_" in t and v]
    listed = {c["id"]: c for c in http(port, "GET", "/api/cameras")[1]["cameras"]}
    assert set(listed) == {"cam2", "cam3"} and listed["cam2"]["state"] == "disabled"
    health = proc.healthz()  # cam1 and cam2 are required (the default), yet switched off on purpose
    assert health["healthy"], health

    # SIGHUP with the YAML unchanged: the overlay is applied again, so nothing changes
    mark = len(proc.log_text())
    proc.send_signal(signal.SIGHUP)
    proc.wait_for_log("nothing changed", timeout=30, after=mark)

    # a restart: the overlay brings the same cameras back, and validate --show-effective shows them
    assert proc.terminate() == 0
    overlay = json.loads((proc.state_dir / "overlay.json").read_text())
    assert overlay["removed"] == ["cam1"] and overlay["enabled"] == {"cam2": False}
    capsys.readouterr()
    assert main(["validate", str(proc.config_path), "--show-effective"]) == 0
    shown = capsys.readouterr()
    assert "id: cam3" in shown.out and "id: cam1" not in shown.out
    assert "removed: cam1" in shown.err and "capture off (enabled OFF): cam2" in shown.err
    after = len(seen.messages)
    proc.start().wait_for_log("edgewatch running", timeout=60, after=len(proc.log_text()))
    wait_until(lambda: sum(m.topic == f"{P}/cam3/results" for m in seen.messages[after:]) > 2, 30,
               "cam3 results after the restart", proc)
    assert not [m for m in seen.messages[after:] if m.topic in (f"{P}/cam1/results", f"{P}/cam2/results")]
    listed = {c["id"]: c for c in http(port, "GET", "/api/cameras")[1]["cameras"]}
    assert set(listed) == {"cam2", "cam3"} and not listed["cam2"]["enabled"]
    pub.loop_stop()
    pub.disconnect()
