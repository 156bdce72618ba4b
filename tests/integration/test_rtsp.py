"""RTSP sources against a real gst-rtsp-server: reading, kill/restart, stalls, and credentials kept secret."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from daemon.capture import Capture, make_capture
from daemon.service.stats import SourceStats, Stats
from daemon.sources.base import SourceError
from daemon.sources.ffmpeg import FfmpegOptions, FfmpegSource
from daemon.sources.rtsp import RtspOptions, RtspSource
from tests.fixtures.mosquitto import free_port
from tests.fixtures.recorders import States
from tests.fixtures.rtsp_server import RtspServer

pytestmark = pytest.mark.integration

USER, PASSWORD = "viewer", "pa55:w@rd/x"  # ":", "@" and "/" must be percent-encoded in a URL
RETRY = {"initial_s": 0.2, "max_s": 1.0, "jitter": 0.1}
Factory = Callable[..., RtspServer]


def capture_for(url: str, source_id: str = "cam", **options: Any) -> tuple[Capture, SourceStats, States]:
    settings = {"id": source_id, "type": "rtsp", "url": url, "open_timeout_s": 3, "reconnect": RETRY, **options}
    stats, states = Stats(), States()
    capture = make_capture(RtspOptions.model_validate(settings), stats, on_state=states)
    return capture, stats.source(source_id), states


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds it took; fails the test after `timeout`."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)
    return time.monotonic() - started


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_reads_the_live_stream_with_increasing_pts(rtsp_server: RtspServer, transport: str) -> None:
    source = RtspSource(RtspOptions(id="cam", type="rtsp", url=rtsp_server.url("/cam2"), transport=transport))
    source.open()
    try:
        items = [source.read() for _ in range(50)]  # over three seconds of the live stream
    finally:
        source.close()
    images = [item[0] for item in items if item is not None]
    pts = [item[1] for item in items if item is not None]
    assert len(images) == 50 and images[0].shape == (240, 320, 3)
    assert pts[0] is None  # FFmpeg knows no time for the very first RTP frame
    steps = np.diff(np.array(pts[1:], dtype=float))
    assert steps == pytest.approx(np.full(48, 1 / 15), abs=0.002)  # across the loop too: no repeat, no jump


def test_killed_server_reconnects_while_another_camera_keeps_streaming(rtsp_server_factory: Factory) -> None:
    # one server per camera: killing a server process takes all of its mounts down
    flaky, steady = rtsp_server_factory(mounts=("/cam1",)), rtsp_server_factory(mounts=("/cam2",))
    cam1, stats1, states1 = capture_for(flaky.url("/cam1"), "cam1")
    cam2, stats2, states2 = capture_for(steady.url("/cam2"), "cam2")
    cam1.start()
    cam2.start()
    try:
        wait_until(lambda: stats1.captured > 10 and stats2.captured > 10, 15, "both cameras streaming")
        flaky.kill()
        wait_until(lambda: stats1.state == "reconnecting", 10, "cam1 to notice the dead server")
        steady_during = stats2.captured
        time.sleep(1.5)  # a few failed attempts against a closed port
        assert stats2.captured > steady_during + 10, "cam2 stopped while cam1's server was down"
        assert stats1.errors_by_reason["open"] >= 1
        flaky.restart()
        resumed_from = stats1.captured
        wait_until(lambda: stats1.captured > resumed_from + 10, 15, "cam1 streaming again")
        assert states1.names[:4] == ["connecting", "streaming", "reconnecting", "streaming"]
        assert stats1.state == "streaming" and stats1.reconnects >= 1
        assert states2.names == ["connecting", "streaming"] and stats2.reconnects == 0
    finally:
        cam1.stop(timeout=3)
        cam2.stop(timeout=3)


def test_stall_watchdog_reconnects_within_the_timeout(rtsp_server: RtspServer) -> None:
    stall_timeout = 1.5
    # FFmpeg's own read timeout is far longer: only the watchdog can notice in time
    capture, stats, states = capture_for(rtsp_server.url("/cam1"), stall_timeout_s=stall_timeout,
                                         read_timeout_s=60, open_timeout_s=2)
    capture.start()
    try:
        wait_until(lambda: stats.captured > 10, 15, "frames")
        rtsp_server.stall()
        noticed = wait_until(lambda: stats.errors_by_reason["stall"] == 1, stall_timeout + 3, "the watchdog")
        assert noticed <= stall_timeout + 2.0
        assert stats.state == "reconnecting"
        assert any("stalled: no frame for" in detail for _, state, detail in states.calls if state == "reconnecting")
        rtsp_server.resume()
        resumed_from = stats.captured
        wait_until(lambda: stats.captured > resumed_from + 10 and stats.state == "streaming", 20, "frames again")
        assert states.names[:4] == ["connecting", "streaming", "reconnecting", "streaming"]
    finally:
        rtsp_server.resume()
        capture.stop(timeout=3)


def test_ffmpeg_gets_an_rtsp_password_through_a_private_file_not_its_command_line(
    rtsp_server_factory: Factory,
) -> None:
    server = rtsp_server_factory(mounts=("/cam1",), user=USER, password=PASSWORD)
    options = {"id": "ff", "type": "ffmpeg", "input": server.url("/cam1", with_credentials=True),
               "input_args": ["-rtsp_transport", "tcp"], "probe_args": ["-rtsp_transport", "tcp"]}
    source = FfmpegSource(FfmpegOptions.model_validate(options))
    encoded = "pa55%3Aw%40rd%2Fx"
    source.open()
    try:
        assert encoded not in " ".join(source.probe_command())  # as open() ran ffprobe
        frames = [source.read() for _ in range(5)]
        assert all(f is not None and f[0].shape == (240, 320, 3) for f in frames)  # authenticated and probed
        assert source._proc is not None and source._input_file is not None
        argv = Path(f"/proc/{source._proc.pid}/cmdline").read_bytes().decode()
        assert encoded not in argv and PASSWORD not in argv and "concat" in argv
        secret_file = Path(source._input_file.path)
        assert secret_file.stat().st_mode & 0o777 == 0o600 and secret_file.parent.stat().st_mode & 0o777 == 0o700
        assert "option rtsp_transport 'tcp'" in secret_file.read_text()
    finally:
        source.close()
    assert not secret_file.parent.exists()


def test_a_refused_connection_is_logged_as_refused_not_as_a_timeout() -> None:
    port = free_port()  # nothing listens there
    source = RtspSource(RtspOptions(id="cam", type="rtsp", url=f"rtsp://127.0.0.1:{port}/cam1", open_timeout_s=10))
    with pytest.raises(SourceError) as info:
        source.open()
    assert f"rtsp://127.0.0.1:{port}/cam1: connection refused after " in str(info.value)
    assert "within 10s" not in str(info.value)


def test_a_server_that_answers_but_does_not_stream_is_not_a_timeout(rtsp_server: RtspServer) -> None:
    source = RtspSource(RtspOptions(id="cam", type="rtsp", url=rtsp_server.url("/no-such-mount"), open_timeout_s=10))
    with pytest.raises(SourceError) as info:
        source.open()
    assert "/no-such-mount: the server answered but the stream did not open" in str(info.value)


@pytest.mark.parametrize(
    ("how", "password", "streams"),
    [("url", PASSWORD, True), ("fields", PASSWORD, True), ("url", PASSWORD + "-wrong", False),
     ("fields", PASSWORD + "-wrong", False)],
)
def test_credentials_never_reach_logs_errors_or_states(
    rtsp_server_factory: Factory, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str],
    how: str, password: str, streams: bool,
) -> None:
    caplog.set_level(logging.DEBUG)
    server = rtsp_server_factory(mounts=("/cam1",), user=USER, password=password if streams else PASSWORD)
    if how == "url":
        url, extra = server.url("/cam1", with_credentials=True), {}
        if not streams:
            url = url.replace("pa55%3Aw%40rd%2Fx", "pa55%3Aw%40rd%2Fx-wrong")
    else:
        url, extra = server.url("/cam1"), {"username": USER, "password": password}
    capture, stats, states = capture_for(url, reconnect={**RETRY, "max_attempts": 1}, **extra)
    capture.start()
    try:
        if streams:
            wait_until(lambda: stats.captured > 5, 15, "frames through the authenticated session")
        else:
            assert capture.done.wait(15)
            assert stats.state == "failed" and stats.errors_by_reason["open"] == 1
            with pytest.raises(SourceError) as info:
                capture.source.open()
            assert PASSWORD not in str(info.value) and "answered but the stream did not open" in str(info.value)
    finally:
        capture.stop(timeout=3)
    seen = [caplog.text, capfd.readouterr().err, stats.last_error, capture.source.describe(),
            repr(capture.source.options), *(detail for _, _, detail in states.calls)]
    for secret in (password, "pa55%3Aw%40rd", "pa55"):
        assert not any(secret in text for text in seen), f"{secret!r} leaked"
    if how == "url":
        assert f"rtsp://***@127.0.0.1:{server.port}/cam1" in caplog.text
