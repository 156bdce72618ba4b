"""The camera routes on the http: server (web UI on, its login required) of an in-process daemon, and the
control's in-process effects: the worker's detect flags, the running captures, the overlay on disk."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from daemon.app import Daemon
from daemon.config import load_config
from tests.fixtures.daemon_proc import wait_until

TOKEN = "ui-t0ken-for-tests"


def request(daemon: Daemon, method: str, path: str, body: object = None,
            token: str | None = TOKEN) -> tuple[int, Any]:
    assert daemon.health is not None
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(daemon.health.url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def daemon(tmp_path: Path, models_dir: Path, media_dir: Path) -> Iterator[Daemon]:
    video = str(media_dir / "london_street_TestV4.mp4")
    data = {
        "pipeline": {"name": "p", "detector": "det"},
        "models": {"det": {"type": "yolox", "path": str(models_dir / "yolox_nano.onnx"),
                           "runtime": {"providers": ["cpu"], "intra_op_threads": 1}}},
        "sources": [{"id": cam, "type": "file", "path": video, "loop": True, "fps": 2} for cam in ("cam1", "cam2")],
        "state_dir": str(tmp_path / "state"),
        "stats_interval_s": 0,
        "http": {"enabled": True, "host": "127.0.0.1", "port": 0},
        "ui": {"enabled": True, "require_auth": True, "token": "${UI_TOKEN}"},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    running = Daemon(load_config(path, env={"UI_TOKEN": TOKEN}), config_path=path)
    running.start()
    yield running
    running.stop()


def test_routes_behind_the_ui_login(daemon: Daemon, media_dir: Path) -> None:
    assert request(daemon, "GET", "/api/cameras", token=None)[0] == 401
    assert request(daemon, "GET", "/api/cameras", token="wrong")[0] == 401
    status, body = request(daemon, "GET", "/api/cameras")
    assert status == 200 and [c["id"] for c in body["cameras"]] == ["cam1", "cam2"]

    status, body = request(daemon, "POST", "/api/cameras/cam1/detect", {"on": "OFF"})
    assert status == 200 and body["detect"] is False
    assert daemon.worker is not None and daemon.worker.detect_off == frozenset({"cam1"})
    status, body = request(daemon, "POST", "/api/cameras/cam2/enabled", {"on": False})
    assert status == 200 and body["state"] == "disabled" and "cam2" not in daemon.captures
    assert request(daemon, "POST", "/api/cameras", "not an object")[0] == 400

    entry = {"id": "cam3", "type": "file", "path": str(media_dir / "london_street_TestV4.mp4"), "loop": True}
    status, body = request(daemon, "POST", "/api/cameras", entry)
    assert status == 200 and "cam3" in daemon.captures
    wait_until(lambda: daemon.stats.sources["cam3"].processed > 0, 30, "cam3 frames processed")
    assert request(daemon, "DELETE", "/api/cameras/cam3")[0] == 200
    assert "cam3" not in daemon.captures and daemon.stats.sources["cam3"].state == "removed"

    overlay = json.loads((Path(daemon.config.state_dir) / "overlay.json").read_text())
    assert overlay == {"version": 1, "added": [], "removed": [], "detect": {"cam1": False},
                       "enabled": {"cam2": False}}
    status, body = request(daemon, "POST", "/api/cameras/cam2/enabled", {"on": "ON"})
    assert status == 200 and body["enabled"] is True and "cam2" in daemon.captures

    daemon.control.close()  # what Daemon.stop() does first: no change may start a camera after it
    status, body = request(daemon, "POST", "/api/cameras/cam2/enabled", {"on": False})
    assert status == 503 and body["message"] == "the daemon is stopping" and "cam2" in daemon.captures
