"""`edgewatch bench capacity`: how many cameras this box serves with the tracked vehicle -> plate -> OCR chain.

k cameras are k file sources of the London video played at its own pace (looping, like a camera: decoded at
30 fps, capped to `fps` each; the cap's skips are not drops), each behind a drop_oldest queue as a live camera
is, through the example config's pipeline and tracking (configs/vehicle-plates-tracked.yaml) in one daemon.
A k passes when, over the measured window after a warm-up, no frame was really dropped (queue full, stale,
error) and the p99 of capture-to-publish (a result's queue + infer time) stayed under 1 s. The largest k that
passes is the capacity. Beside it, the bare reference (daemon/bench/reference.py: letterbox + session.run of
YOLOX-nano on frames decoded beforehand, no project code) and the camera count that loop alone would bound
at the same fps. Every k is run once per round, rounds interleaved; figures are medians over rounds.
"""

from __future__ import annotations

import json
import math
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from daemon.bench.main import ROOT, SHARED
from daemon.bench.reference import decode, loop

EXAMPLE = ROOT / "configs" / "vehicle-plates-tracked.yaml"
REAL_DROPS = ("queue_full", "stale", "error")  # fps_cap skips are the cap working, not lost frames
P99_LIMIT_S = 1.0
WARMUP_S = 5.0


def config_text(k: int, fps: float, video: Path, workdir: Path) -> str:
    """The example config with k looping file cameras at `fps`, one JSONL sink, state in workdir."""
    config = yaml.safe_load(EXAMPLE.read_text())
    tracking = config["pipeline"]["tracking"]
    tracking["tracker"]["frame_rate"] = fps
    tracking["events"]["zones"] = {}  # the example's zone is drawn for its own source id
    config.update(
        state_dir=str(workdir / "state"),
        status_interval_s=0,
        sources=[
            {
                "id": f"cam{i}",
                "type": "file",
                "path": str(video),
                "pace": "realtime",
                "loop": True,
                "fps": fps,
                "queue": {"size": 8, "policy": "drop_oldest"},
            }
            for i in range(k)
        ],
        sinks=[{"id": "out", "type": "jsonl", "path": str(workdir / "results.jsonl"), "kinds": ["result"]}],
    )
    return yaml.safe_dump(config, sort_keys=False)


def cameras(k: int, fps: float, seconds: float, video: Path) -> dict[str, Any]:
    """One daemon with k cameras: real drops, p99 capture-to-publish and CPU per frame over the window."""
    from daemon.app import Daemon
    from daemon.config import load_config

    with tempfile.TemporaryDirectory(prefix="edgewatch-capacity-") as tmp:
        workdir = Path(tmp)
        path = workdir / "capacity.yaml"
        path.write_text(config_text(k, fps, video, workdir))
        os.environ.setdefault("EDGEWATCH_MODELS", str(SHARED / "models"))
        daemon = Daemon(load_config(path))
        daemon.start()
        try:
            time.sleep(WARMUP_S)
            start = _counters(daemon), time.time(), _cpu()
            time.sleep(seconds)
            end = _counters(daemon), time.time(), _cpu()
        finally:
            daemon.stop()
        latencies = _latencies(workdir / "results.jsonl", start[1], end[1])
    frames = end[0]["processed"] - start[0]["processed"]
    return {
        "k": k,
        "processed_fps": frames / seconds,
        "real_drops": end[0]["drops"] - start[0]["drops"],
        "p99_s": _percentile(latencies, 99),
        "p50_s": _percentile(latencies, 50),
        "cpu_ms_per_frame": 1000 * (end[2] - start[2]) / frames if frames else None,
    }


def _counters(daemon: Any) -> dict[str, int]:
    sources = daemon.stats.sources.values()
    return {
        "processed": sum(s.processed for s in sources),
        "drops": sum(s.dropped[reason] for s in sources for reason in REAL_DROPS),
    }


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _latencies(results: Path, t_from: float, t_to: float) -> list[float]:
    """Capture-to-publish seconds (queue + infer) of the results captured in the window."""
    out = []
    for line in results.read_text().splitlines():
        row = json.loads(line)
        stamp = datetime.fromisoformat(row["timestamp"].replace("Z", "+00:00")).timestamp()
        if t_from <= stamp <= t_to and "latency_ms" in row:
            out.append(sum(row["latency_ms"].get(k, 0.0) for k in ("queue", "infer")) / 1000.0)
    return out


def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)  # nearest rank: the smallest value with at least q% of the values at or below it
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def run(
    cameras_list: str = "1,2,3", seconds: float = 20.0, rounds: int = 2, fps: float = 10.0, threads: int = 2
) -> dict[str, Any]:
    """Each k in cameras_list once per round, rounds interleaved with the bare loop; medians."""
    video = SHARED / "media" / "london_street_TestV4.mp4"
    model = SHARED / "models" / "yolox_nano.onnx"
    for path in (video, model):
        if not path.is_file():
            raise FileNotFoundError(f"bench capacity: {path} does not exist (set EDGEWATCH_SHARED)")
    ks = sorted({int(k) for k in cameras_list.split(",") if k.strip()})
    frames = decode(video)
    runs: dict[int, list[dict[str, Any]]] = {k: [] for k in ks}
    bare: list[float] = []
    for _ in range(rounds):
        count, seconds_run = loop(model, frames, 1, threads, spin=False)
        bare.append(count / seconds_run)
        for k in ks:
            runs[k].append(cameras(k, fps, seconds, video))
    figures: dict[str, Any] = {"fps_per_camera": fps, "seconds": seconds, "rounds": rounds, "threads": threads}
    passed = []
    for k, rows in runs.items():
        p99 = statistics.median(r["p99_s"] for r in rows if r["p99_s"] is not None) if rows else None
        drops = statistics.median(r["real_drops"] for r in rows)
        ok = drops == 0 and p99 is not None and p99 < P99_LIMIT_S
        passed += [k] if ok else []
        figures[f"k{k}"] = {
            "ok": ok,
            "real_drops_median": drops,
            "p99_capture_to_publish_s": p99,
            "p50_capture_to_publish_s": statistics.median(r["p50_s"] for r in rows if r["p50_s"] is not None),
            "processed_fps": statistics.median(r["processed_fps"] for r in rows),
            "cpu_ms_per_frame": statistics.median(r["cpu_ms_per_frame"] for r in rows if r["cpu_ms_per_frame"]),
        }
    figures["capacity_cameras"] = max(passed) if passed else 0
    figures["bare_yolox_fps"] = statistics.median(bare)
    figures["bare_yolox_camera_bound"] = figures["bare_yolox_fps"] / fps
    figures["note"] = (
        "shared 2-core machine with other helpers busy; bare = letterbox + session.run of YOLOX-nano "
        "only (no plates, no OCR): an upper bound, not the same work"
    )
    return figures
