"""`edgewatch bench live`: what the web UI's live view costs the pipeline: fps with ui: off, on with no viewer,
and on with one viewer reading the MJPEG stream, on one looping file source played as fast as the pipeline goes.

The three cases run interleaved, `rounds` times each, and each figure is the median, so a noisy neighbour on a
shared machine hits all of them alike. Every run is a fresh Daemon (YOLOX-nano, same batch and threads) with
http: on; its fps is the frames processed in a `seconds` window that opens `warmup_s` after start() returned, and
its CPU per frame the process's CPU time (every thread) in that window over those frames: on a shared machine
fps swings with the neighbours' load, CPU per frame much less.
"""

from __future__ import annotations

import http.client
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from daemon.service.uioptions import UiOptions

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("EDGEWATCH_SHARED", ROOT.parent / "shared"))
CASES = ("ui_off", "ui_on_0_viewers", "ui_on_1_viewer")


class Viewer(threading.Thread):
    """One client reading /live/SOURCE.mjpg until stopped; counts the JPEG parts it received."""

    def __init__(self, port: int, source: str) -> None:
        super().__init__(name="bench-viewer", daemon=True)
        self.port, self.source = port, source
        self.frames = 0
        self.stop = threading.Event()

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn.request("GET", f"/live/{self.source}.mjpg")
        response = conn.getresponse()
        if response.status != 200:
            raise RuntimeError(f"bench live: the live view answered {response.status}")
        while not self.stop.is_set():
            line = response.readline()
            if not line:
                break
            if line.startswith(b"Content-Length:"):
                self.frames += 1
        conn.close()


def _config(workdir: Path, video: Path, model: Path, ui: bool, threads: int) -> Path:
    config: dict[str, Any] = {
        "models": {
            "det": {"type": "yolox", "path": str(model), "runtime": {"providers": ["cpu"], "intra_op_threads": threads}}
        },
        "pipeline": {"name": "bench-live", "detector": "det"},
        "sources": [{"id": "cam", "type": "file", "path": str(video), "pace": "fast", "loop": True}],
        "batch": {"max_size": 2, "timeout_ms": 2},
        "state_dir": str(workdir / "state"),
        "http": {"enabled": True, "host": "127.0.0.1", "port": 0},
        "ui": {"enabled": ui},
    }
    path = workdir / "bench.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def _one_run(config_path: Path, viewer: bool, seconds: float, warmup_s: float) -> tuple[float, float, float]:
    """Pipeline fps of one daemon run, the process's CPU ms per processed frame (all threads: capture, worker,
    web server, encoder), and the frames per second the viewer received (0 without one)."""
    from daemon.app import Daemon
    from daemon.config import load_config

    daemon = Daemon(load_config(config_path))
    daemon.start()
    try:
        watcher = Viewer(daemon.health.port, "cam") if viewer and daemon.health is not None else None
        if watcher is not None:
            watcher.start()
        stats = daemon.stats.source("cam")
        time.sleep(warmup_s)
        processed, received, t0 = stats.processed, watcher.frames if watcher else 0, time.perf_counter()
        cpu0 = time.process_time()
        time.sleep(seconds)
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        frames = stats.processed - processed
        fps, cpu_ms = frames / elapsed, 1000.0 * cpu / max(1, frames)
        shown = ((watcher.frames - received) / elapsed) if watcher is not None else 0.0
    finally:
        if watcher is not None:  # the viewer leaves first: the server's shutdown then has no stream to wait for
            watcher.stop.set()
            watcher.join(5)
        daemon.request_stop()
        daemon.stop()
    return fps, cpu_ms, shown


def encode_ms(video: Path, repeats: int = 50) -> float:
    """Median ms to draw and encode one live frame (the video's first, eight labelled boxes) at the defaults."""
    import cv2
    import numpy as np
    import supervision as sv

    from daemon.frames import Frame, Result
    from daemon.web.ui.live import encode

    capture = cv2.VideoCapture(str(video))
    ok, image = capture.read()
    capture.release()
    if not ok:
        raise ValueError(f"bench live: cannot read a frame of {video}")
    boxes = np.array([[60 + 140 * i, 200, 180 + 140 * i, 320] for i in range(8)], dtype=np.float32)
    detections = sv.Detections(
        xyxy=boxes,
        confidence=np.full(8, 0.8),
        class_id=np.full(8, 2),
        tracker_id=np.arange(8),
        data={"class_name": np.array(["car"] * 8)},
    )
    frame = Frame("cam", 0, np.asarray(image, dtype=np.uint8), time.time(), time.monotonic())
    result = Result(frame, "bench", detections)
    options = UiOptions(enabled=True)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        encode(result, options)
        times.append(1000.0 * (time.perf_counter() - t0))
    return statistics.median(times)


def run(
    rounds: int = 5,
    seconds: float = 12.0,
    warmup_s: float = 2.0,
    threads: int = 2,
    video: str | Path | None = None,
    model: str | Path | None = None,
) -> dict[str, Any]:
    """Median fps per case over `rounds` interleaved rounds, and each ui-on case's cost against ui: off."""
    video = Path(video or SHARED / "media" / "london_street_TestV4.mp4")
    model = Path(model or SHARED / "models" / "yolox_nano.onnx")
    for path in (video, model):
        if not path.is_file():
            raise FileNotFoundError(f"bench live: {path} does not exist (set EDGEWATCH_SHARED)")
    fps: dict[str, list[float]] = {case: [] for case in CASES}
    cpu: dict[str, list[float]] = {case: [] for case in CASES}
    viewer_fps: list[float] = []
    with tempfile.TemporaryDirectory(prefix="edgewatch-bench-live-") as tmp:
        configs = {
            case: _config(Path(tempfile.mkdtemp(dir=tmp)), video, model, case != "ui_off", threads) for case in CASES
        }
        for _ in range(rounds):
            for case in CASES:
                pipeline_fps, cpu_ms, received = _one_run(configs[case], case == "ui_on_1_viewer", seconds, warmup_s)
                fps[case].append(pipeline_fps)
                cpu[case].append(cpu_ms)
                if case == "ui_on_1_viewer":
                    viewer_fps.append(received)
    figures: dict[str, Any] = {
        "seconds_per_run": seconds,
        "rounds": rounds,
        "threads": threads,
        "live_fps_cap": UiOptions().live_fps,
    }
    figures.update({f"{case}_fps": statistics.median(values) for case, values in fps.items()})
    figures.update({f"{case}_cpu_ms_per_frame": statistics.median(values) for case, values in cpu.items()})
    figures["viewer_received_fps"] = statistics.median(viewer_fps)
    figures["encode_ms_per_live_frame"] = encode_ms(video)
    base = figures["ui_off_fps"]
    figures["cost_0_viewers_pct"] = 100.0 * (1.0 - figures["ui_on_0_viewers_fps"] / base)
    figures["cost_1_viewer_pct"] = 100.0 * (1.0 - figures["ui_on_1_viewer_fps"] / base)
    # CPU per frame hardly depends on what other processes do, unlike fps on a shared machine: on a CPU-bound
    # pipeline, the share of CPU a case adds is the share of fps it costs once the machine is otherwise idle
    cpu_base = figures["ui_off_cpu_ms_per_frame"]
    figures["cpu_cost_0_viewers_pct"] = 100.0 * (figures["ui_on_0_viewers_cpu_ms_per_frame"] / cpu_base - 1.0)
    figures["cpu_cost_1_viewer_pct"] = 100.0 * (figures["ui_on_1_viewer_cpu_ms_per_frame"] / cpu_base - 1.0)
    return figures
