"""The capture thread on real sources: states, counters, the fps cap, reconnect backoff, stall watchdog, stop."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from daemon import registry
from daemon.capture import Backoff, Capture, FpsLimiter, make_capture
from daemon.frames import Frame
from daemon.queues import FrameQueue
from daemon.service.stats import SourceStats, Stats
from daemon.sources.base import QueuePolicy, ReconnectOptions, Source, SourceError, SourceOptions
from tests.fixtures.media import RawFrameServer, make_images, make_video
from tests.fixtures.recorders import States

FAST_RETRY = {"initial_s": 0.02, "max_s": 0.05, "jitter": 0.0}


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("cap") / "clip.mp4", seconds=2.0, fps=15)  # 30 frames


def build(options: dict[str, Any], states: States | None = None) -> tuple[Capture, SourceStats]:
    stats = Stats()
    validated = registry.resolve("source", options["type"]).Options.model_validate(options)
    return make_capture(validated, stats, on_state=states), stats.source(options["id"])


def collect(capture: Capture, until: Callable[[list[Frame]], bool], timeout: float = 10.0) -> list[Frame]:
    frames: list[Frame] = []
    deadline = time.monotonic() + timeout
    while not until(frames) and time.monotonic() < deadline:
        frame = capture.queue.get(timeout=0.1)
        if frame is not None:
            frames.append(frame)
    return frames


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_file_capture_delivers_every_frame_in_order_then_ends(clip: Path) -> None:
    states = States()
    capture, stats = build({"id": "f", "type": "file", "path": str(clip), "pace": "fast",
                            "queue": {"size": 2}}, states)
    assert capture.queue.policy == "block"
    capture.start()
    frames = collect(capture, lambda got: len(got) == 30 or (capture.done.is_set() and not len(capture.queue)))
    assert capture.done.wait(5)
    assert [f.seq for f in frames] == list(range(30))
    assert all(f.source_id == "f" and f.image.shape == (240, 320, 3) for f in frames)
    assert [f.pts for f in frames] == pytest.approx([i / 15 for i in range(30)], abs=0.002)
    assert states.names == ["connecting", "streaming", "ended"]
    assert (stats.state, stats.captured, sum(stats.dropped.values()), stats.errors) == ("ended", 30, 0, 0)
    assert not capture.queue.closed  # the app decides when a finished source's queue closes


@pytest.mark.parametrize(
    ("options", "policy"),
    [
        ({"type": "file", "path": "x.mp4"}, "block"),
        ({"type": "images", "folder": "imgs"}, "block"),
        ({"type": "rtsp", "url": "rtsp://cam/live"}, "drop_oldest"),
        ({"type": "ffmpeg", "input": "rtsp://cam/live"}, "drop_oldest"),
        ({"type": "webcam", "device": 0}, "drop_oldest"),
        ({"type": "rtsp", "url": "rtsp://cam/live", "queue": {"policy": "drop_newest", "size": 3}}, "drop_newest"),
        ({"type": "file", "path": "x.mp4", "queue": {"policy": "drop_oldest"}}, "drop_oldest"),
    ],
)
def test_make_capture_picks_the_queue_policy(options: dict[str, Any], policy: str) -> None:
    capture, _ = build({"id": "s", **options})
    assert capture.queue.policy == policy
    assert capture.queue.size == options.get("queue", {}).get("size", 8)


def test_fps_cap_paces_a_fast_file_without_losing_frames(tmp_path: Path) -> None:
    video = make_video(tmp_path / "v.mp4", seconds=0.6, fps=15)  # 9 frames
    capture, stats = build({"id": "f", "type": "file", "path": str(video), "pace": "fast", "fps": 20})
    capture.start()
    frames = collect(capture, lambda got: len(got) == 9)
    assert capture.done.wait(5)
    assert len(frames) == 9 and stats.dropped["fps_cap"] == 0
    gaps = np.diff([f.t_mono for f in frames])
    # at most 20 fps: the whole run takes its 8 intervals (a single gap may be shorter, by the limiter's
    # half-interval slack after a late frame, and by scheduler jitter on a loaded machine)
    assert frames[-1].t_mono - frames[0].t_mono >= 8 * 0.05 * 0.9 and gaps.min() >= 0.05 * 0.4


def test_fps_cap_drops_frames_of_a_realtime_file(clip: Path) -> None:
    capture, stats = build({"id": "f", "type": "file", "path": str(clip), "fps": 5})
    capture.start()
    frames = collect(capture, lambda got: capture.done.is_set() and not len(capture.queue))
    assert len(frames) + stats.dropped["fps_cap"] == stats.captured == 30
    assert 6 <= len(frames) <= 14  # 2 s at 5 fps; the camera-like file is never slowed down


@pytest.mark.parametrize(
    ("now", "drop", "admitted"),
    [
        ([0.0, 0.033, 0.066, 0.1, 0.133, 0.166, 0.2, 0.233], True, [0.0, 0.1, 0.2]),
        ([0.0, 0.5, 0.51, 0.6], True, [0.0, 0.5, 0.6]),  # a gap does not bank a burst
    ],
)
def test_fps_limiter_drop_mode(now: list[float], drop: bool, admitted: list[float]) -> None:
    limiter = FpsLimiter(10.0, drop=drop)
    stop = threading.Event()
    assert [t for t in now if limiter.admit(t, stop)] == admitted


def test_backoff_grows_caps_jitters_and_resets() -> None:
    plain = Backoff(ReconnectOptions(initial_s=1, max_s=10, multiplier=2, jitter=0, max_attempts=6))
    assert [plain.fail() for _ in range(6)] == [1, 2, 4, 8, 10, 10]
    assert plain.exhausted
    plain.reset()
    assert not plain.exhausted and plain.fail() == 1
    jittered = Backoff(ReconnectOptions(initial_s=1, max_s=100, jitter=0.2), random.Random(7))
    delays = [jittered.fail() for _ in range(5)]
    assert all(0.8 * 2**i <= d <= 1.2 * 2**i for i, d in enumerate(delays))
    assert len(set(delays)) == 5 and not jittered.exhausted  # no max_attempts: never gives up


class ScriptedSource(Source):
    """A live source following the real contract, driven by a script: "fail" (open raises), or a number
    n (open succeeds, n frames, then the connection drops)."""

    live: ClassVar[bool] = True
    script: ClassVar[list[str | int]] = []
    stall: ClassVar[float | None] = None

    @property
    def stall_timeout_s(self) -> float | None:
        return self.stall

    def __init__(self, options: SourceOptions) -> None:
        super().__init__(options)
        self.steps = list(self.script)
        self.left = 0

    def open(self) -> None:
        step = self.steps.pop(0) if self.steps else "fail"
        if step == "fail":
            raise SourceError("camera unreachable")
        self.left = int(step)

    def read(self) -> tuple[np.ndarray, float | None] | None:
        if self.left == 0:
            raise SourceError("connection lost")
        self.left -= 1
        return np.zeros((4, 4, 3), np.uint8), None

    def close(self) -> None:
        self.left = 0


def scripted(script: list[str | int], policy: QueuePolicy = "drop_oldest", size: int = 100, stall: float | None = None,
             **reconnect: Any) -> tuple[Capture, SourceStats, States]:
    ScriptedSource.script, ScriptedSource.stall = script, stall
    options = SourceOptions(id="cam", type="scripted", reconnect={**FAST_RETRY, **reconnect})
    stats, states = SourceStats("cam"), States()
    return Capture(ScriptedSource(options), FrameQueue(size, policy, stats), stats, states), stats, states


def test_failures_count_consecutively_and_frames_reset_the_backoff() -> None:
    capture, stats, states = scripted(["fail", "fail", 2, "fail", "fail"], max_attempts=3)
    capture.start()
    assert capture.done.wait(5)
    assert states.names == ["connecting", "reconnecting", "streaming", "reconnecting", "failed"]
    assert "gave up after 3 failed attempt(s)" in states.calls[-1][2]
    assert (stats.errors, stats.errors_by_reason["open"], stats.errors_by_reason["read"]) == (5, 4, 1)
    assert stats.reconnects == 4 and stats.captured == 2 and len(capture.queue) == 2


def test_time_blocked_on_a_full_queue_is_not_a_stall() -> None:
    capture, stats, states = scripted([50], policy="block", size=1, stall=0.3)
    capture.start()
    try:
        assert wait_for(lambda: stats.captured == 2)  # one frame queued, the next waits for room
        time.sleep(1.0)  # nobody reads the queue for over three stall timeouts
        assert stats.errors_by_reason["stall"] == 0 and states.names == ["connecting", "streaming"]
        frames = collect(capture, lambda got: len(got) == 50, timeout=5)
        assert [f.seq for f in frames] == list(range(50))
    finally:
        capture.stop(timeout=3)


def test_a_finite_source_that_cannot_open_fails_without_retrying(tmp_path: Path) -> None:
    states = States()
    capture, stats = build({"id": "f", "type": "file", "path": str(tmp_path / "gone.mp4")}, states)
    capture.start()
    assert capture.done.wait(5)
    assert states.names == ["connecting", "failed"]
    assert "gone.mp4" in states.calls[-1][2] and "gone.mp4" in stats.last_error
    assert (stats.errors_by_reason["open"], stats.reconnects) == (1, 0)


def test_unreadable_image_is_counted_and_the_rest_come_through(tmp_path: Path) -> None:
    make_images(tmp_path, ["a.png", "c.png"])
    (tmp_path / "b.png").write_bytes(b"garbage")
    capture, stats = build({"id": "imgs", "type": "images", "folder": str(tmp_path)})
    capture.start()
    frames = collect(capture, lambda got: capture.done.is_set() and not len(capture.queue))
    assert len(frames) == 2 and stats.state == "ended"
    assert (stats.errors, stats.errors_by_reason["unreadable"]) == (1, 1)
    assert "b.png" in stats.last_error


def test_stop_is_prompt_while_blocked_in_put(clip: Path) -> None:
    states = States()
    capture, stats = build({"id": "f", "type": "file", "path": str(clip), "pace": "fast",
                            "queue": {"size": 1}}, states)
    capture.start()
    assert wait_for(lambda: stats.captured >= 2)  # frame 0 queued, frame 1 waits for room
    started = time.monotonic()
    assert capture.stop(timeout=3)
    assert time.monotonic() - started < 1.5
    assert states.names[-1] == "stopped" and capture.done.is_set()
    assert not capture.queue.closed and len(capture.queue) == 1


def ffmpeg_stream(server: RawFrameServer, **options: Any) -> dict[str, Any]:
    return {"id": "ff", "type": "ffmpeg", "input": server.url, "input_args": server.input_args,
            "width": 64, "height": 48, **options}


def test_stop_is_prompt_while_blocked_in_read() -> None:
    with RawFrameServer(frames=3) as server:
        capture, stats = build(ffmpeg_stream(server, stall_timeout_s=None))
        capture.start()
        assert wait_for(lambda: stats.captured >= 1)
        time.sleep(0.5)  # the stream has gone silent: the capture thread sits in read()
        started = time.monotonic()
        assert capture.stop(timeout=3)
        assert time.monotonic() - started < 2.0
        assert stats.state == "stopped"


def test_stall_watchdog_closes_the_source_and_reconnects() -> None:
    states = States()
    with RawFrameServer(frames=8) as server:  # 0.4 s of frames per connection, then silence
        capture, stats = build(ffmpeg_stream(server, stall_timeout_s=0.6, reconnect=FAST_RETRY), states)
        capture.start()
        try:
            assert wait_for(lambda: stats.errors_by_reason["stall"] >= 1, timeout=5)
            first_session = stats.captured
            assert first_session >= 1
            assert wait_for(lambda: stats.captured > first_session, timeout=5)  # frames of a new connection
            assert server.connections >= 2
            assert states.names[:4] == ["connecting", "streaming", "reconnecting", "streaming"]
            assert "stalled: no frame for" in states.calls[2][2]
            assert stats.reconnects >= 1 and stats.errors_by_reason["read"] == 0  # counted once, as a stall
        finally:
            capture.stop(timeout=3)


def test_closing_the_queue_stops_a_blocked_capture(clip: Path) -> None:
    capture, stats = build({"id": "f", "type": "file", "path": str(clip), "pace": "fast", "queue": {"size": 1}})
    capture.start()
    assert wait_for(lambda: stats.captured >= 2)
    capture.queue.close()
    assert capture.done.wait(3)
    assert stats.state == "stopped"
