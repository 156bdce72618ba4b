"""`edgewatch bench capacity`: cameras per box with the tracked vehicle -> plate -> OCR chain, beside the peer.

k cameras are k RTSP streams of the London video at `fps` (10) frames a second from the RTSP test server on
loopback (daemon/bench/rtsp_serve.py: the clip encoded once at that rate, then only demuxed and sent live, so
the server costs little). Two contenders run them, one after the other, interleaved over rounds:

- edgewatch: the example config's models, pipeline and tracking (configs/vehicle-plates-tracked.yaml) with
  its runtime defaults, k `rtsp` sources behind drop_oldest queues;
- the peer: Roboflow's InferencePipeline (`streamvision`, in its own venv, defaults), whose callback runs
  the same three models naively: vehicles, then the plate detector on every vehicle crop, then the reader on
  every plate, one `session.run` each (reference.NaiveLpr; cv2, numpy and ONNX Runtime only).

A k passes when, over the window after a warm-up, every camera had at least 95% of its `fps` frames through
the chain, the p99 of capture-to-result stayed under 1 s and (edgewatch, which counts them) no frame was
really dropped (queue full, stale, error). The largest k that passes is the
capacity; figures are medians over rounds.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from daemon.bench.main import ROOT, SHARED
from daemon.bench.peer import DRIVER, ensure_venv

EXAMPLE = ROOT / "configs" / "vehicle-plates-tracked.yaml"
SERVER = Path(__file__).with_name("rtsp_serve.py")
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's python3-gi is built for it, not for the venv
REAL_DROPS = ("queue_full", "stale", "error")  # fps_cap skips are the cap working, not lost frames
P99_LIMIT_S = 1.0
MIN_RATE = 0.95  # of `fps`, per camera
WARMUP_S = 5.0


@contextmanager
def file_cameras(video: Path, k: int, seconds: float, fps: float) -> Iterator[list[str]]:
    """k RTSP URLs on loopback, each a camera sending `video` at `fps` (looped to last `seconds`) from its start.

    The video is encoded once at `fps`, as a camera's stream set to that rate (what Frigate and DeepStream
    users configure): neither contender then decodes frames it throws away, and neither needs a rate cap
    (InferencePipeline's `max_fps` took 8.3-8.4 frames a second from a 30 fps stream capped at 10 even with one
    idle camera: it waits a whole interval after each frame, then for the next one to arrive).
    """
    with tempfile.TemporaryDirectory(prefix="edgewatch-cameras-") as tmp:
        looped = Path(tmp) / "looped.mp4"
        plays = math.ceil(seconds / _duration(video))
        subprocess.run(
            ["ffmpeg", "-v", "error", "-y", "-stream_loop", str(plays - 1), "-i", str(video), "-an",
             "-vf", f"fps={fps:g}", "-c:v", "libx264", "-preset", "veryfast", "-bf", "0",
             "-g", str(max(1, round(fps))), str(looped)],
            check=True,
        )  # fmt: skip
        command = [SYSTEM_PYTHON, str(SERVER), "--port", "0"]
        for i in range(k):
            command += ["--mount", f"/cam{i}=file:{looped}"]
        server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            assert server.stdout is not None
            line = server.stdout.readline().split()
            if len(line) != 2 or line[0] != "READY":
                raise RuntimeError(
                    f"bench capacity: the RTSP test server did not start ({SERVER}; needs python3-gi "
                    "and gir1.2-gst-rtsp-server-1.0)"
                )
            yield [f"rtsp://127.0.0.1:{line[1]}/cam{i}" for i in range(k)]
        finally:
            server.terminate()
            server.wait(10)
            if server.stdout is not None:
                server.stdout.close()


def _duration(video: Path) -> float:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(video)],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip())


def config_text(urls: Sequence[str], fps: float, workdir: Path) -> str:
    """The example tracked config with one rtsp source per URL (cameras at `fps`), one JSONL sink, state in
    workdir."""
    config = yaml.safe_load(EXAMPLE.read_text())
    tracking = config["pipeline"]["tracking"]
    tracking["tracker"]["frame_rate"] = fps
    tracking["events"]["zones"] = {}  # the example's zone is drawn for its own source id
    for model in config["models"].values():
        model["runtime"] = {"providers": ["cpu"]}  # the daemon's defaults (parallel_runs auto)
    config.update(
        state_dir=str(workdir / "state"),
        status_interval_s=0,
        sources=[
            {"id": f"cam{i}", "type": "rtsp", "url": url, "queue": {"size": 8, "policy": "drop_oldest"}}
            for i, url in enumerate(urls)
        ],
        sinks=[{"id": "out", "type": "jsonl", "path": str(workdir / "results.jsonl"), "kinds": ["result"]}],
    )
    return yaml.safe_dump(config, sort_keys=False)


def edgewatch_cameras(urls: Sequence[str], fps: float, seconds: float) -> dict[str, Any]:
    """One daemon on the k cameras: frames per camera, real drops, latencies, CPU and stage time per frame."""
    from daemon.app import Daemon
    from daemon.config import load_config

    with tempfile.TemporaryDirectory(prefix="edgewatch-capacity-") as tmp:
        workdir = Path(tmp)
        path = workdir / "capacity.yaml"
        path.write_text(config_text(urls, fps, workdir))
        os.environ.setdefault("EDGEWATCH_MODELS", str(SHARED / "models"))
        daemon = Daemon(load_config(path))
        daemon.start()
        try:
            _wait_streaming(daemon, 60.0)
            time.sleep(WARMUP_S)
            start = _counters(daemon), time.time(), thread_cpu()
            time.sleep(seconds)
            end = _counters(daemon), time.time(), thread_cpu()
        finally:
            daemon.stop()
        latencies = _latencies(workdir / "results.jsonl", start[1], end[1])
    done = {sid: end[0]["processed"][sid] - start[0]["processed"][sid] for sid in end[0]["processed"]}
    frames = max(1, sum(done.values()))
    stages = {name: (ms - start[0]["stage_ms"].get(name, 0.0)) / frames for name, ms in end[0]["stage_ms"].items()}
    cpu = {group: (end[2].get(group, 0.0) - start[2].get(group, 0.0)) * 1000 / frames for group in end[2]}
    return {
        "frames": done,
        "real_drops": end[0]["drops"] - start[0]["drops"],
        "latencies": latencies,
        "stage_ms_per_frame": stages,
        "cpu_ms_per_frame": cpu,
    }


def peer_cameras(python: Path, urls: Sequence[str], seconds: float, threads: int) -> dict[str, Any]:
    """The peer's run on the k cameras (peer_driver.py --lpr in its own venv)."""
    models = SHARED / "models"
    command = [
        str(python),
        str(DRIVER),
        "--model",
        str(models / "yolox_nano.onnx"),
        "--threads",
        str(threads),
        "--lpr",
        str(models / "plate_det_y5fu_640.onnx"),
        str(reader_model()),
        "--fps",
        "0",  # no max_fps: the cameras send `fps` (InferencePipeline's limiter would take about 6 of 10)
        "--warmup",
        str(WARMUP_S),
        "--seconds",
        str(seconds),
        *urls,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"bench capacity: the peer's run failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def reader_model() -> Path:
    """The PP-OCRv4 recogniser the example config's `ocr` model uses (from the rapidocr_onnxruntime wheel)."""
    from pipelines.ocr import default_rec_model

    return default_rec_model()


def _wait_streaming(daemon: Any, timeout: float) -> None:
    """Until every camera streams: FFmpeg's probe on open buffers about a key-frame interval of frames and
    hands them over in a burst, which must not fall into the measured window."""
    deadline = time.monotonic() + timeout
    while any(s.state != "streaming" for s in daemon.stats.sources.values()):
        if time.monotonic() > deadline:
            states = {sid: s.state for sid, s in daemon.stats.sources.items()}
            raise RuntimeError(f"bench capacity: cameras not streaming after {timeout:g} s: {states}")
        time.sleep(0.1)


def _counters(daemon: Any) -> dict[str, Any]:
    sources = daemon.stats.sources
    return {
        "processed": {sid: s.processed for sid, s in sources.items()},
        "drops": sum(s.dropped[reason] for s in sources.values() for reason in REAL_DROPS),
        "stage_ms": dict(daemon.stats.worker.stage_ms_total),
    }


def thread_cpu() -> dict[str, float]:
    """CPU seconds of this process's threads so far, grouped: capture (and the decoders' native threads),
    inference (the worker and the threads running parts of its batches), everything else."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    groups: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for task in os.listdir("/proc/self/task"):
        try:
            fields = Path(f"/proc/self/task/{task}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:  # ended meanwhile
            continue
        name = names.get(int(task))
        group = (
            "capture+decode"
            if name is None or name.startswith("capture")
            else "inference"
            if name.startswith(("worker", "infer-part"))
            else "other"
        )
        groups[group] = groups.get(group, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return groups


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


def summary(rows: Sequence[dict[str, Any]], fps: float, seconds: float) -> dict[str, Any]:
    """Medians over rounds of one contender at one k, and whether it passed."""
    rates = [min(r["frames"].values()) / seconds for r in rows]
    p99 = [p for r in rows if (p := _percentile(r["latencies"], 99)) is not None]
    out: dict[str, Any] = {
        "slowest_camera_fps": statistics.median(rates),
        "p99_capture_to_result_s": statistics.median(p99) if p99 else None,
        "p50_capture_to_result_s": statistics.median(
            [p for r in rows if (p := _percentile(r["latencies"], 50)) is not None] or [math.nan]
        ),
        "stage_ms_per_frame": _median_maps([r["stage_ms_per_frame"] for r in rows]),
    }
    if "real_drops" in rows[0]:
        out["real_drops"] = statistics.median(r["real_drops"] for r in rows)
        out["cpu_ms_per_frame"] = _median_maps([r["cpu_ms_per_frame"] for r in rows])
    out["ok"] = (
        out["slowest_camera_fps"] >= MIN_RATE * fps
        and out["p99_capture_to_result_s"] is not None
        and out["p99_capture_to_result_s"] < P99_LIMIT_S
        and out.get("real_drops", 0) == 0
    )
    return out


def _median_maps(maps: Sequence[dict[str, float]]) -> dict[str, float]:
    return {key: round(statistics.median(m.get(key, 0.0) for m in maps), 2) for key in maps[0]}


def run(
    cameras_list: str = "1,2,3",
    seconds: float = 20.0,
    rounds: int = 2,
    fps: float = 10.0,
    threads: int = 2,
    peer: bool = True,
) -> dict[str, Any]:
    """Each k once per round for each contender, rounds interleaved; medians, capacities and their ratio."""
    video = SHARED / "media" / "london_street_TestV4.mp4"
    for path in (video, SHARED / "models" / "yolox_nano.onnx", SHARED / "models" / "plate_det_y5fu_640.onnx"):
        if not path.is_file():
            raise FileNotFoundError(f"bench capacity: {path} does not exist (set EDGEWATCH_SHARED)")
    ks = sorted({int(k) for k in cameras_list.split(",") if k.strip()})
    python = ensure_venv() if peer else None
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    with file_cameras(video, max(ks), WARMUP_S + seconds + 30.0, fps) as urls:
        for _ in range(rounds):
            peer_fell_behind = False  # then more cameras cannot pass either: not run in this round
            for k in ks:
                runs.setdefault(("edgewatch", k), []).append(edgewatch_cameras(urls[:k], fps, seconds))
                if python is not None and not peer_fell_behind:
                    row = peer_cameras(python, urls[:k], seconds, threads)
                    runs.setdefault(("peer", k), []).append(row)
                    peer_fell_behind = min(row["frames"].values()) < MIN_RATE * fps * seconds
    figures: dict[str, Any] = {"fps_per_camera": fps, "seconds": seconds, "rounds": rounds, "peer_threads": threads}
    capacity: dict[str, int] = {}
    for (who, k), rows in runs.items():
        figures[f"{who} k{k}"] = summary(rows, fps, seconds)
        if figures[f"{who} k{k}"]["ok"]:
            capacity[who] = max(capacity.get(who, 0), k)
    for who in ("edgewatch", "peer") if peer else ("edgewatch",):
        figures[f"{who} capacity_cameras"] = capacity.get(who, 0)
    if peer and capacity.get("peer"):
        figures["capacity ratio edgewatch / peer"] = capacity.get("edgewatch", 0) / capacity["peer"]
    return figures
