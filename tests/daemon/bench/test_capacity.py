"""bench capacity: its config, verdict, window, percentile, thread groups, and the cameras it serves over RTSP."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import cv2
import pytest

from daemon.bench import capacity
from daemon.bench.capacity import _latencies, _percentile, config_text
from daemon.config import load_config
from daemon.sources.rtsp import RtspOptions
from tests.fixtures.rtsp_server import require_gst_rtsp


def test_k_cameras_are_rtsp_sources_behind_dropping_queues_with_default_runtimes(
    tmp_path: Path, models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGEWATCH_MODELS", str(models_dir))
    path = tmp_path / "capacity.yaml"
    urls = [f"rtsp://127.0.0.1:8554/cam{i}" for i in range(3)]
    path.write_text(config_text(urls, 10.0, tmp_path))
    config = load_config(path)
    assert [s.id for s in config.sources] == ["cam0", "cam1", "cam2"]
    assert all(isinstance(s, RtspOptions) for s in config.sources)
    assert {(s.fps, s.queue.policy) for s in config.sources} == {(None, "drop_oldest")}  # cameras send 10 fps
    assert [s.id for s in config.sinks] == ["out"]
    assert config.pipeline.tracking is not None
    runtimes = {m.runtime.intra_op_threads for m in config.models.values()}
    assert runtimes == {None} and {m.runtime.parallel_runs for m in config.models.values()} == {"auto"}


def test_the_window_keeps_results_captured_in_it_and_the_percentile_is_nearest_rank(tmp_path: Path) -> None:
    rows = [
        {"timestamp": "2026-01-01T00:00:00.000Z", "latency_ms": {"queue": 900.0, "infer": 300.0}},  # before
        {"timestamp": "2026-01-01T00:00:05.000Z", "latency_ms": {"queue": 20.0, "infer": 30.0}},
        {"timestamp": "2026-01-01T00:00:06.000Z", "latency_ms": {"queue": 100.0, "infer": 50.0}},
        {"timestamp": "2026-01-01T00:00:06.500Z"},  # a status message: no latency
    ]
    results = tmp_path / "r.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    start = 1767225600.0 + 1  # 2026-01-01T00:00:01Z
    assert _latencies(results, start, start + 10) == pytest.approx([0.05, 0.15])
    assert _percentile([0.05, 0.15, 0.3, 2.0], 50) == 0.15 and _percentile([], 99) is None


def run_row(frames: list[int], latencies: list[float], drops: int | None = None) -> dict[str, object]:
    row: dict[str, object] = {
        "frames": {str(i): n for i, n in enumerate(frames)},
        "latencies": latencies,
        "stage_ms_per_frame": {"vehicles": 10.0},
    }
    if drops is not None:
        row.update(real_drops=drops, cpu_ms_per_frame={"inference": 20.0})
    return row


def test_a_k_passes_only_with_every_camera_at_95_percent_a_p99_under_1_s_and_no_real_drop() -> None:
    fast = [0.1] * 99
    assert capacity.summary([run_row([100, 96], fast, 0)], 10.0, 10.0)["ok"]
    assert not capacity.summary([run_row([100, 94], fast, 0)], 10.0, 10.0)["ok"]  # one camera fell behind
    assert not capacity.summary([run_row([100, 100], [*fast, 1.5, 1.5], 0)], 10.0, 10.0)["ok"]  # p99 1.5 s
    assert not capacity.summary([run_row([100, 100], fast, 3)], 10.0, 10.0)["ok"]  # frames really dropped
    peer = capacity.summary([run_row([100], fast), run_row([80], fast), run_row([99], fast)], 10.0, 10.0)
    assert peer["ok"] and peer["slowest_camera_fps"] == 9.9 and "real_drops" not in peer  # medians over rounds


def test_thread_cpu_puts_the_worker_and_its_part_threads_under_inference() -> None:
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            sum(range(1000))

    thread = threading.Thread(target=spin, name="infer-part_9", daemon=True)
    before = capacity.thread_cpu()
    thread.start()
    time.sleep(0.3)
    after = capacity.thread_cpu()
    stop.set()
    thread.join()
    assert after["inference"] - before.get("inference", 0.0) > 0.05


@pytest.mark.integration
def test_the_file_cameras_stream_the_video_at_its_own_pace(media_dir: Path) -> None:
    require_gst_rtsp()
    with capacity.file_cameras(media_dir / "london_street_TestV4.mp4", 2, 12.0, 10.0) as urls:
        assert urls[1].endswith("/cam1")
        cap = cv2.VideoCapture(urls[1], cv2.CAP_FFMPEG)
        try:
            start, stamps = time.monotonic(), []
            while time.monotonic() - start < 5.0:
                ok, image = cap.read()
                assert ok, "no frame from the file camera"
                stamps.append(time.monotonic() - start)
        finally:
            cap.release()
    assert image.shape == (720, 1280, 3)
    steady = sum(1 for t in stamps if t >= 2.0)  # the first second comes in a burst (the server's preroll)
    assert 24 <= steady <= 36  # 3 s of a 10 fps camera played live, not decoded flat out
