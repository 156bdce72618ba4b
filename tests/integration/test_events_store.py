"""The daemon on the rendered plates video with the events sink and http: on: GET /api/events lists the tracks with
their plate texts, and their snapshot, crop, plate and clip URLs answer with JPEG and MP4; history survives."""

from __future__ import annotations

import io
import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest
import yaml

from daemon.app import Daemon
from daemon.config import load_config
from daemon.web.events import event_routes
from daemon.web.server import WebServer, listen
from tests.fixtures.plates_daemon import plates_config
from tests.fixtures.plates_video import CARS

pytestmark = [pytest.mark.integration]

CLIPS = {"enabled": True, "pre_capture": 1.0, "post_capture": 0.5, "fps": 10, "min_free_bytes": 0}


def get(url: str) -> tuple[str, bytes]:
    with urllib.request.urlopen(url, timeout=10) as reply:
        return str(reply.headers["content-type"]), reply.read()


def listing(base: str) -> dict[str, Any]:
    return dict(json.loads(get(f"{base}/api/events?limit=100")[1]))


def wait_for_clips(base: str, timeout: float = 60.0) -> dict[str, Any]:
    """The event list once every event has ended and has its clip (clips are cut after post_capture)."""
    deadline = time.monotonic() + timeout
    found = listing(base)
    while time.monotonic() < deadline:
        events = found["events"]
        if events and all(e["ended"] and "clip" in e["urls"] for e in events):
            return found
        time.sleep(0.5)
        found = listing(base)
    raise AssertionError(f"events without an end or a clip after {timeout}s: {found}")


def test_the_daemon_keeps_a_history_with_snapshots_and_clips(models_dir: Path, tmp_path: Path) -> None:
    config = plates_config(tmp_path, models_dir, [{"id": "history", "type": "events", "clips": CLIPS}])
    data = yaml.safe_load(config.read_text())
    data["http"] = {"enabled": True, "port": 0}
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    daemon = Daemon(load_config(config), config_path=config)
    daemon.start()
    try:
        daemon.wait()  # the file plays to its end; its tracks end
        assert daemon.health is not None
        base = f"http://127.0.0.1:{daemon.health.port}"
        found = wait_for_clips(base)
        plates = {e["plate"] for e in found["events"]}
        assert {car.text for car in CARS} <= plates and found["total"] == len(found["events"])
        for event in found["events"]:
            check_files(base, event)
    finally:
        assert daemon.stop()
    # a restart: the history is on disk
    server = WebServer.serving([event_routes(tmp_path / "state")], listen("http", "127.0.0.1", 0), "http")
    server.start()
    try:
        again = listing(f"http://127.0.0.1:{server.port}")
        assert [e["event_id"] for e in again["events"]] == [e["event_id"] for e in found["events"]]
    finally:
        server.stop()


def check_files(base: str, event: dict[str, Any]) -> None:
    urls = event["urls"]
    assert set(urls) == {"snapshot", "crop", "plate", "clip"}, event
    for kind in ("snapshot", "crop", "plate"):
        content_type, body = get(base + urls[kind])
        image = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
        assert content_type == "image/jpeg" and image is not None and image.size > 0, (kind, event["event_id"])
    snapshot = cv2.imdecode(np.frombuffer(get(base + urls["snapshot"])[1], np.uint8), cv2.IMREAD_COLOR)
    assert snapshot.shape[:2] == (540, 960)  # the full frame, not a crop
    content_type, body = get(base + urls["clip"])
    assert content_type == "video/mp4" and body[4:8] == b"ftyp"
    moov, mdat = body.find(b"moov"), body.find(b"mdat")
    assert 0 < moov < mdat, "faststart: the index comes before the media data"
    with av.open(io.BytesIO(body)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        assert sum(1 for _ in container.decode(stream)) >= 2, event["event_id"]
