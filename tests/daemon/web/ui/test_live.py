"""The live view: the frame path keeps a reference only; MJPEG parts for a viewer, capped and bounded."""

from __future__ import annotations

import http.client
import time
from pathlib import Path

import cv2
import numpy as np
import supervision as sv

from daemon.frames import Frame, Result
from daemon.service.uioptions import UiOptions
from daemon.web.ui.live import LiveFeed, NoLiveFeed, Viewers, live_feed
from tests.conftest import SHARED
from tests.daemon.web.ui.serve import request, ui_server

VIDEO = SHARED / "media" / "london_street_TestV4.mp4"


def frames_of_video(count: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(VIDEO))
    out: list[np.ndarray] = []
    while len(out) < count:
        ok, image = cap.read()
        assert ok, f"{VIDEO}: fewer than {count} frames"
        out.append(image)
    cap.release()
    return out


def result(image: np.ndarray, seq: int, source: str = "cam") -> Result:
    boxes = sv.Detections(
        xyxy=np.array([[100, 100, 300, 260]], dtype=np.float32),
        confidence=np.array([0.9]),
        class_id=np.array([2]),
        tracker_id=np.array([7]),
        data={"class_name": np.array(["car"])},
    )
    return Result(Frame(source, seq, image, time.time(), time.monotonic()), "test", boxes)


def test_offer_keeps_the_result_itself_and_off_keeps_nothing() -> None:
    image = np.zeros((48, 64, 3), np.uint8)
    feed = live_feed(UiOptions(enabled=True))
    first = result(image, 0)
    feed.offer(first)
    assert feed.latest("cam") is first and feed.latest("cam").frame.image is image  # type: ignore[union-attr]
    off = live_feed(UiOptions(enabled=False))
    assert isinstance(off, NoLiveFeed)
    off.offer(first)
    assert off.latest("cam") is None and off.sources() == []


def test_viewers_are_bounded() -> None:
    viewers = Viewers(2)
    assert viewers.admit() and viewers.admit() and not viewers.admit()
    viewers.leave()
    assert viewers.admit()


def read_parts(response: http.client.HTTPResponse, count: int) -> list[bytes]:
    parts: list[bytes] = []
    while len(parts) < count:
        line = response.readline()
        assert line, "the stream ended"
        if line.startswith(b"Content-Length:"):
            size = int(line.split(b":")[1])
            response.readline()
            parts.append(response.read(size))
    return parts


def test_mjpeg_sends_new_frames_only_and_refuses_viewers_over_the_limit(tmp_path: Path) -> None:
    feed = LiveFeed()
    images = frames_of_video(2)
    options = UiOptions(enabled=True, live_fps=20, live_max_width=320, max_viewers=1)
    with ui_server(tmp_path, feed, options=options) as (port, pages):
        assert request(port, "/live/cam.jpg").status == 404  # no frame yet
        assert request(port, "/live/nope.mjpg").status == 404
        feed.offer(result(images[0], 0))
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/live/cam.mjpg")
        response = conn.getresponse()
        assert response.status == 200
        assert response.headers["content-type"].startswith("multipart/x-mixed-replace")
        (first,) = read_parts(response, 1)
        assert request(port, "/live/cam.mjpg").status == 503  # one viewer is the limit
        time.sleep(0.3)
        assert pages.view.viewers.served == 1  # the same Result is not encoded again
        feed.offer(result(images[1], 1))
        (second,) = read_parts(response, 1)
        pages.view.stats.source("cam").set_state("stopped")  # the daemon stops: the stream ends by itself
        assert response.read() is not None and response.isclosed()
        conn.close()
        decoded = [np.asarray(cv2.imdecode(np.frombuffer(p, np.uint8), cv2.IMREAD_COLOR)) for p in (first, second)]
        assert decoded[0].shape == (180, 320, 3)  # scaled to live_max_width
        assert float(np.abs(decoded[0].astype(int) - decoded[1].astype(int)).mean()) > 1.0
        deadline = time.monotonic() + 5
        while pages.view.viewers.count and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pages.view.viewers.count == 0  # the viewer left: its slot is free again
