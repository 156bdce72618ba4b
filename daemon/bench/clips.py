"""`edgewatch bench clips`: what event clips cost, on the London street video played back at its own rate.

The events sink's clip recorder (daemon/sinks/clips.py) buffers the frames (JPEG at a capped fps) and encodes one
9 s clip (2 s pre-capture, a 5 s event, 2 s post-capture) per libx264 preset: buffering milliseconds per frame,
encode seconds per second of video, and bytes per clip and per second, as the clips of the sink's defaults.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import cv2

from daemon.bench.reference import decode
from daemon.frames import Frame
from daemon.sinks.clips import ClipOptions, ClipRecorder
from pipelines.models import Image

ROOT = Path(__file__).resolve().parents[2]
VIDEO = ROOT.parent / "shared" / "media" / "london_street_TestV4.mp4"
T0 = 1_800_000_000.0
PRE, EVENT_START, EVENT_END, POST = 2.0, 4.0, 9.0, 2.0


def _frames(video: Path) -> tuple[list[Image], float]:
    """Every frame (the bench reference loop's decoder) and the video's frame rate."""
    capture = cv2.VideoCapture(str(video))
    fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
    capture.release()
    return decode(video), fps


def _one(images: list[Image], fps: float, preset: str, folder: Path) -> dict[str, Any]:
    written: list[Path] = []
    options = ClipOptions(enabled=True, pre_capture=PRE, post_capture=POST, preset=preset, min_free_bytes=0)
    recorder = ClipRecorder(options, lambda _event, path: written.append(path))
    recorder.schedule("bench", "london", T0 + EVENT_START, T0 + EVENT_END, folder / f"{preset}.mp4")
    total = int((EVENT_END + POST + 1.0) * fps)
    started = time.perf_counter()
    for i in range(total):  # the video looped at its own rate until the clip's window has passed
        recorder.frame(Frame("london", i, images[i % len(images)], T0 + i / fps, i / fps))
    feed_s = time.perf_counter() - started
    recorder.close(timeout=300.0)
    counters = recorder.counters
    if not written or counters.written != 1:
        raise RuntimeError(f"the {preset} clip was not written: {counters}")
    size = written[0].stat().st_size
    buffer = recorder.buffer("london")
    return {
        f"{preset}_encode_s_per_video_s": round(counters.encode_seconds / counters.video_seconds, 3),
        f"{preset}_clip_bytes": size,
        f"{preset}_bytes_per_video_s": round(size / counters.video_seconds),
        "clip_video_s": round(counters.video_seconds, 2),
        "buffer_ms_per_input_frame": round(1000 * feed_s / total, 2),
        "buffer_bytes_per_s": round(buffer.bytes / ((buffer.newest or 0) - (buffer.oldest or 0) + 1 / options.fps)),
    }


def run() -> dict[str, Any]:
    images, fps = _frames(VIDEO)
    figures: dict[str, Any] = {
        "video": VIDEO.name,
        "width": images[0].shape[1],
        "height": images[0].shape[0],
        "source_fps": round(fps, 2),
        "clip_fps": ClipOptions().fps,
    }
    with tempfile.TemporaryDirectory(prefix="edgewatch-bench-clips-") as folder:
        for preset in ("veryfast", "ultrafast"):
            figures.update(_one(images, fps, preset, Path(folder)))
    return figures
