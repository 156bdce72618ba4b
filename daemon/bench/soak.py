"""`edgewatch bench soak`: the daemon's resident memory over a long run, to show it levels off instead of growing.

The London street video loops, as fast as the worker goes, through the tracked vehicles -> plates -> OCR chain
with consensus and events, into a JSONL sink that rotates (so the disk stays bounded), with the metrics
endpoint on. Tracks start and end on every loop, so per-track state that is never freed would show as
growth. RSS is sampled every few seconds; after a warm-up (models, allocator arenas, caches) the growth is
fitted with a least-squares line and reported per minute and per 10,000 frames.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from daemon.bench.main import SHARED

PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
SAMPLE_S = 2.0
WARMUP_FRACTION = 0.25  # samples before this share of the run are warm-up, not fitted


def rss_mb() -> float:
    """Resident set size of this process from /proc (what the kernel counts, not what Python thinks)."""
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * PAGE_BYTES / 2**20


def soak_config(workdir: Path) -> str:
    models = SHARED / "models"
    return f"""
models:
  vehicles: {{type: yolox, path: '{models / "yolox_nano.onnx"}', class_filter: [car, bus, truck, motorcycle],
             runtime: {{intra_op_threads: 2}}}}
  plates: {{type: yolov5, path: '{models / "plate_det_y5fu_320.onnx"}', num_keypoints: 4, pad_value: 0,
           class_names: [single, double], class_agnostic_nms: true, runtime: {{intra_op_threads: 2}}}}
  reader: {{type: ocr, runtime: {{intra_op_threads: 2}}}}
pipeline:
  name: soak
  detector: vehicles
  stages:
    - {{name: plates, model: plates, stages: [{{name: text, model: reader, crop: {{rectify_keypoints: true}}}}]}}
  tracking:
    tracker: {{frame_rate: 25, lost_track_seconds: 0.5, track_activation_threshold: 0.3}}
    schedule: {{area_growth: 0.2, reinfer_interval: 30, max_reads: 10, consensus: {{min_reads: 3}}}}
    events: {{min_frames: 3}}
sources:
  - {{id: london, type: file, path: '{SHARED / "media" / "london_street_TestV4.mp4"}', pace: fast, loop: true}}
sinks:
  - {{id: out, type: jsonl, path: '{workdir}/out.jsonl', rotate_bytes: 20000000, keep: 2}}
http: {{enabled: true, port: 0}}
state_dir: '{workdir}/state'
"""


def fit_growth(samples: list[tuple[float, int, float]]) -> tuple[float, float]:
    """(MB per minute, MB per 10,000 frames): least-squares slopes of RSS over the samples given."""
    seconds, frames, rss = (np.array(column, dtype=np.float64) for column in zip(*samples, strict=True))
    per_second = float(np.polyfit(seconds, rss, 1)[0])
    per_frame = float(np.polyfit(frames, rss, 1)[0]) if np.ptp(frames) > 0 else 0.0
    return per_second * 60.0, per_frame * 10_000.0


def run(seconds: float = 180.0) -> dict[str, Any]:
    from daemon.app import Daemon
    from daemon.config import load_config

    with tempfile.TemporaryDirectory(prefix="edgewatch-soak-") as tmp:
        path = Path(tmp) / "soak.yaml"
        path.write_text(soak_config(Path(tmp)))
        daemon = Daemon(load_config(path), config_path=path)
        start_rss = rss_mb()
        daemon.start()
        stats = daemon.stats.source("london")
        t0 = time.monotonic()
        samples: list[tuple[float, int, float]] = []
        try:
            while (elapsed := time.monotonic() - t0) < seconds:
                samples.append((elapsed, stats.processed, rss_mb()))
                time.sleep(SAMPLE_S)
            samples.append((time.monotonic() - t0, stats.processed, rss_mb()))
        finally:
            daemon.stop()
    fitted = [s for s in samples if s[0] >= seconds * WARMUP_FRACTION]
    per_minute, per_10k = fit_growth(fitted)
    return {
        "seconds": round(samples[-1][0], 1),
        "frames": samples[-1][1],
        "fps": round(samples[-1][1] / samples[-1][0], 1),
        "track_events": dict(daemon.stats.worker.events),
        "worker_errors": daemon.stats.worker.errors,
        "rss_mb_before_start": round(start_rss, 1),
        "rss_mb_after_warmup": round(fitted[0][2], 1),
        "rss_mb_peak": round(max(s[2] for s in samples), 1),
        "rss_mb_end": round(samples[-1][2], 1),
        "rss_growth_mb_per_minute": round(per_minute, 3),
        "rss_growth_mb_per_10k_frames": round(per_10k, 3),
    }
