"""The GStreamer source (cpu preset) against a real gst-rtsp-server: frames, restart, stall, credentials kept secret.

The vaapi, nvdec and jetson presets need their hardware and have not run here (tests/daemon/sources checks the
pipelines they build).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import pytest

from daemon.capture import Capture, make_capture
from daemon.service.stats import SourceStats, Stats
from daemon.sources.gstreamer import GstOptions
from tests.fixtures.recorders import States
from tests.fixtures.rtsp_server import RtspServer

pytestmark = pytest.mark.integration

USER, PASSWORD = "viewer", "pa55:w@rd/x"  # ":", "@" and "/" must be percent-encoded in a URL
RETRY = {"initial_s": 0.2, "max_s": 1.0, "jitter": 0.1}
Factory = Callable[..., RtspServer]


def capture_for(url: str, **settings: Any) -> tuple[Capture, SourceStats, States]:
    options = {"id": "cam", "type": "gstreamer", "url": url, "open_timeout_s": 8, "reconnect": RETRY, **settings}
    stats, states = Stats(), States()
    capture = make_capture(GstOptions.model_validate(options), stats, on_state=states)
    return capture, stats.source("cam"), states


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def test_frames_arrive_scaled_and_the_capture_reconnects_after_the_server_restarts(
    rtsp_server_factory: Factory,
) -> None:
    server = rtsp_server_factory(mounts=("/cam1",))
    capture, stats, states = capture_for(server.url("/cam1"), decode_size=[160, 120], fps=10)
    capture.start()
    try:
        frame = capture.queue.get(timeout=15)
        assert frame is not None and frame.image.shape == (120, 160, 3)
        wait_until(lambda: stats.captured > 10, 15, "frames")
        assert stats.dropped["fps_cap"] > 0  # 15 fps from the server, capped at 10
        server.kill()
        wait_until(lambda: stats.state == "reconnecting", 20, "the capture to notice the dead server")
        server.restart()
        resumed_from = stats.captured
        wait_until(lambda: stats.captured > resumed_from + 10 and stats.state == "streaming", 30, "frames again")
        assert states.names[:4] == ["connecting", "streaming", "reconnecting", "streaming"]
        assert stats.reconnects >= 1
    finally:
        capture.stop(timeout=5)


def test_the_stall_watchdog_reconnects_a_silent_stream(rtsp_server: RtspServer) -> None:
    capture, stats, states = capture_for(rtsp_server.url("/cam2"), stall_timeout_s=1.5, read_timeout_s=60)
    capture.start()
    try:
        wait_until(lambda: stats.captured > 10, 15, "frames")
        rtsp_server.stall()
        wait_until(lambda: stats.errors_by_reason["stall"] == 1, 6, "the watchdog")
        assert any("stalled: no frame for" in detail for _, state, detail in states.calls if state == "reconnecting")
        rtsp_server.resume()
        resumed_from = stats.captured
        wait_until(lambda: stats.captured > resumed_from + 10 and stats.state == "streaming", 30, "frames again")
    finally:
        rtsp_server.resume()
        capture.stop(timeout=5)


@pytest.mark.parametrize(("how", "streams"), [("url", True), ("fields", True), ("url", False), ("fields", False)])
def test_credentials_never_reach_logs_errors_or_states(
    rtsp_server_factory: Factory,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    how: str,
    streams: bool,
) -> None:
    caplog.set_level(logging.DEBUG)
    password = PASSWORD if streams else PASSWORD + "-wrong"
    server = rtsp_server_factory(mounts=("/cam1",), user=USER, password=PASSWORD)
    if how == "url":
        url = server.url("/cam1", with_credentials=True).replace(
            "pa55%3Aw%40rd%2Fx", "pa55%3Aw%40rd%2Fx" + ("" if streams else "-wrong")
        )
        extra: dict[str, Any] = {}
    else:
        url, extra = server.url("/cam1"), {"username": USER, "password": password}
    capture, stats, states = capture_for(url, reconnect={**RETRY, "max_attempts": 1}, **extra)
    capture.start()
    try:
        if streams:
            wait_until(lambda: stats.captured > 5, 15, "frames through the authenticated session")
        else:
            assert capture.done.wait(20)
            assert stats.state == "failed" and "Unauthorized" in stats.last_error
    finally:
        capture.stop(timeout=5)
    seen = [
        caplog.text,
        capfd.readouterr().err,
        stats.last_error,
        capture.source.describe(),
        repr(capture.source.options),
        *(detail for _, _, detail in states.calls),
    ]
    for secret in (password, "pa55%3Aw%40rd", "pa55"):
        assert not any(secret in text for text in seen), f"{secret!r} leaked"
    assert "GStreamer pipeline rtspsrc" in caplog.text
