"""`edgewatch bench ...`: benchmarks that measure ratios side by side in one run (never timed unit tests)."""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from daemon.service.memory import keep_frame_buffers

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("EDGEWATCH_SHARED", ROOT.parent / "shared"))


def register(subparsers: Any) -> None:
    bench = subparsers.add_parser("bench", help="benchmarks: overhead, two-stage, tracks, plates, api, soak")
    which = bench.add_subparsers(dest="bench", required=True)
    overhead = which.add_parser("overhead", help="daemon fps vs raw decode and vs the model alone")
    overhead.add_argument("--video", default=str(SHARED / "media" / "london_street_TestV4.mp4"))
    overhead.add_argument("--loops", type=int, default=3, help="times the video is played back to back")
    overhead.add_argument("--model", default=str(SHARED / "models" / "yolox_nano.onnx"))
    overhead.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    overhead.add_argument("--batch", type=int, default=4, help="daemon batch.max_size (batch 1 is measured too)")
    overhead.add_argument("--repeats", type=int, default=3, help="interleaved repetitions; figures are medians")
    overhead.add_argument("--json", action="store_true", help="print the figures as JSON")
    overhead.add_argument("--no-keep-frame-buffers", dest="keep_buffers", action="store_false",
                          help="leave glibc's allocator as it is (keep_frame_buffers: false), to measure what it adds")
    overhead.set_defaults(func=_cmd_overhead)
    for name, module, summary in (
        ("two-stage", "daemon.bench.stages", "second stages batched vs one call per crop, same results"),
        ("tracks", "daemon.bench.tracks", "second-stage calls and fps with per-track scheduling off vs on"),
        ("plates", "daemon.bench.plates", "vehicles read exactly, false plates, split tracks, read latency"),
        ("api", "daemon.bench.api", "0, 4, 16 HTTP clients against a 5 fps stream: its fps, API p50/p99, 503s"),
        ("soak", "daemon.bench.soak", "resident memory over a long tracked run, growth fitted after warm-up"),
        ("live", "daemon.bench.live", "pipeline fps with the web UI off, on with no viewer, on with one live viewer"),
        ("clips", "daemon.bench.clips", "event clips: buffering ms per frame, encode s per video s, bytes"),
        ("motion", "daemon.bench.motion", "detector calls and cars read with motion gating off and on"),
        ("capacity", "daemon.bench.capacity", "cameras per box with the tracked plate chain, beside the peer's"),
        ("peer", "daemon.bench.peer", "edgewatch vs Roboflow's InferencePipeline (own venv) vs the bare loop"),
        ("sessions", "daemon.bench.sessions", "one ORT session's threads vs single-thread runs side by side, bare"),
    ):
        sub = which.add_parser(name, help=f"{summary} ({module})")
        sub.add_argument("--json", action="store_true", help="print the figures as JSON")
        sub.set_defaults(func=_delegate(module))
    soak = which.choices["soak"]
    soak.add_argument("--seconds", type=float, default=180.0, help="how long the daemon runs")
    soak.set_defaults(func=_delegate("daemon.bench.soak", "seconds"))
    motion = which.choices["motion"]
    motion.add_argument("--seed", type=int, default=0, help="the rendered quiet street's seed")
    motion.add_argument("--rounds", type=int, default=3, help="interleaved off/on rounds; seconds are medians")
    motion.add_argument("--cache", default=None, help="where the rendered street is kept (default ~/.cache/edgewatch)")
    motion.set_defaults(func=_delegate("daemon.bench.motion", "seed", "rounds", "cache"))
    capacity = which.choices["capacity"]
    capacity.add_argument("--cameras", dest="cameras_list", default="1,2,3", help="comma-separated camera counts")
    capacity.add_argument("--seconds", type=float, default=20.0, help="measured window per run, after a warm-up")
    capacity.add_argument("--rounds", type=int, default=2, help="interleaved rounds; figures are medians")
    capacity.add_argument("--fps", type=float, default=10.0, help="frames per second each camera sends")
    capacity.add_argument("--threads", type=int, default=2, help="the peer's ONNX Runtime intra-op threads per model")
    capacity.add_argument("--no-peer", dest="peer", action="store_false",
                          help="edgewatch only (no InferencePipeline venv)")
    capacity.set_defaults(func=_delegate("daemon.bench.capacity", "cameras_list", "seconds", "rounds", "fps",
                                         "threads", "peer"))
    _peer_options(which.choices["peer"])
    sessions = which.choices["sessions"]
    sessions.add_argument("--rounds", type=int, default=3, help="interleaved rounds; fps are medians")
    sessions.add_argument("--threads", type=int, default=2, help="intra-op threads, and runs side by side")
    sessions.add_argument("--frames", type=int, default=150, help="frames of the London clip")
    sessions.set_defaults(func=_delegate("daemon.bench.sessions", "rounds", "threads", "frames"))
    plates = which.choices["plates"]
    plates.add_argument("--seeds", type=int, default=5, help="rendered streets, seeds 0..N-1")
    plates.add_argument("--chains", default="plate,text", help="comma-separated: plate (plate detector), text")
    plates.add_argument("--cache", default=None, help="where rendered streets are kept (default ~/.cache/edgewatch)")
    plates.add_argument("--no-photos", dest="photos", action="store_false", help="skip the real photos")
    plates.add_argument("--no-example", dest="example", action="store_false",
                        help="skip the example tracked config on the London video and the demo street")
    plates.add_argument("--baseline", action="store_true",
                        help="also run each chain with issue 15's identity, re-linking and weighted vote switched off")
    plates.set_defaults(func=_delegate("daemon.bench.plates", "seeds", "chains", "cache", "photos", "example",
                                       "baseline"))


def _peer_options(peer: Any) -> None:
    peer.add_argument("--streams", default="1,3", help="comma-separated stream counts (the same video k times)")
    peer.add_argument("--rounds", type=int, default=3, help="interleaved rounds; figures are medians")
    peer.add_argument("--spin", default="on,off", help="ONNX Runtime spin-wait settings to run: on, off or on,off")
    peer.add_argument("--batches", default="1,4", help="comma-separated edgewatch batch.max_size values")
    peer.add_argument("--no-peer", dest="peer", action="store_false",
                      help="skip InferencePipeline (no venv is built): bare loop and edgewatch only")
    peer.add_argument("--loops", type=int, default=3, help="times the video is played back to back")
    peer.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads, in every contender")
    peer.set_defaults(func=_delegate("daemon.bench.peer", "streams", "rounds", "spin", "batches", "peer", "loops",
                                     "threads"))


def _delegate(module: str, *options: str) -> Any:
    """A command calling `module.run(option=value, ...)` with the named command-line options."""

    def run(args: argparse.Namespace) -> int:
        import importlib

        figures = importlib.import_module(module).run(**{name: getattr(args, name) for name in options})
        _print(figures, args.json)
        return 0

    return run


def _print(figures: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(figures, indent=2))
        return
    for key, value in figures.items():
        print(f"{key:32s} {value:.3f}" if isinstance(value, float) else f"{key:32s} {value}")


def _cmd_overhead(args: argparse.Namespace) -> int:
    for path in (args.video, args.model):
        if not Path(path).is_file():
            print(f"bench overhead: {path} does not exist (set EDGEWATCH_SHARED or pass --video/--model)",
                  file=sys.stderr)
            return 1
    _print(overhead(Path(args.video), Path(args.model), args.loops, args.threads, args.batch, args.repeats,
                    args.keep_buffers), args.json)
    return 0


def overhead(
    video: Path, model: Path, loops: int, threads: int, batch: int, repeats: int = 3, keep_buffers: bool = True
) -> dict[str, Any]:
    """Raw decode, no-op daemon, model alone, the bare loop and YOLOX daemon on the same looped video, in one run.

    The four measurements are interleaved `repeats` times and each figure is the median, so that a noisy
    neighbour on a shared machine hits all of them alike rather than one phase.
    """
    from daemon.bench import reference  # onnxruntime: loaded by this benchmark, not by every `edgewatch` start
    from pipelines.runtime.base import RuntimeOptions

    # the daemon tunes the allocator when it starts and that is process-wide: tune it first so that raw decode
    # and the model alone are measured under the same allocator in every repeat
    if keep_buffers:
        keep_frame_buffers()
    runs: dict[str, list[float]] = {"raw_decode_fps": [], "daemon_noop_fps": [], "model_alone_fps": [],
                                    "bare_loop_fps": [], "daemon_yolox_fps": [], "daemon_yolox_batch1_fps": [],
                                    "daemon_noop_page_faults_per_frame": []}
    spin = RuntimeOptions().spin_wait  # the bare loop spins (or not) as the daemon's detector does by default
    decoded = reference.decode(video)
    with tempfile.TemporaryDirectory(prefix="edgewatch-bench-") as tmp:
        looped = Path(tmp) / "looped.mp4"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-stream_loop", str(loops - 1), "-i", str(video),
                        "-c", "copy", str(looped)], check=True)

        def daemon_fps(detector: Path | None, size: int) -> float:
            workdir = Path(tempfile.mkdtemp(dir=tmp))  # a fresh state_dir and results file per run
            return _ratio(_daemon_fps(looped, detector, threads, size, workdir, keep_buffers))

        for _ in range(repeats):
            frames, seconds = _raw_decode(looped)
            runs["raw_decode_fps"].append(frames / seconds)
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            runs["daemon_noop_fps"].append(daemon_fps(None, batch))
            runs["daemon_noop_page_faults_per_frame"].append(
                (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / frames)
            runs["model_alone_fps"].append(_ratio(_model_alone(video, model, threads)))
            runs["bare_loop_fps"].append(_ratio(reference.loop(model, decoded, 1, threads, spin)))
            runs["daemon_yolox_fps"].append(daemon_fps(model, batch))
            if batch != 1:
                runs["daemon_yolox_batch1_fps"].append(daemon_fps(model, 1))
    figures: dict[str, Any] = {"frames": frames, "repeats": repeats, "batch": batch, "threads": threads,
                               "keep_frame_buffers": keep_buffers, "spin_wait": spin}
    figures.update({key: statistics.median(values) for key, values in runs.items() if values})
    figures["noop_vs_decode"] = figures["daemon_noop_fps"] / figures["raw_decode_fps"]
    figures.update(_model_ratios(figures))
    return figures


def _model_ratios(figures: dict[str, Any]) -> dict[str, float]:
    """Each daemon figure against the bare reference loop and, labelled as such, against the project's detect()."""
    out = {"model_alone_vs_bare_loop": figures["model_alone_fps"] / figures["bare_loop_fps"]}
    for name, key in (("yolox", "daemon_yolox_fps"), ("yolox_batch1", "daemon_yolox_batch1_fps")):
        if key in figures:
            out[f"{name}_vs_bare_loop"] = figures[key] / figures["bare_loop_fps"]
            # the older figure: its denominator is the project's own detect() loop, not a bare session
            out[f"{name}_vs_model_alone (project-code denominator)"] = figures[key] / figures["model_alone_fps"]
    return out


def _ratio(measure: tuple[int, float]) -> float:
    frames, seconds = measure
    return frames / seconds


def _raw_decode(video: Path) -> tuple[int, float]:
    cap = cv2.VideoCapture(str(video), cv2.CAP_FFMPEG)
    frames, t0 = 0, time.perf_counter()
    while cap.read()[0]:
        frames += 1
    seconds = time.perf_counter() - t0
    cap.release()
    return frames, seconds


def _model_alone(video: Path, model: Path, threads: int) -> tuple[int, float]:
    """The detector called in a tight loop on frames decoded beforehand (pre- and post-processing included)."""
    from pipelines.models import load_model

    detector = load_model({"type": "yolox", "path": str(model), "runtime": {"intra_op_threads": threads}})
    if detector.kind != "detect":
        raise TypeError(f"type yolox loaded a {detector.kind} model, not a detector")
    cap = cv2.VideoCapture(str(video), cv2.CAP_FFMPEG)
    images = []
    while True:
        ok, image = cap.read()
        if not ok:
            break
        images.append(image.astype(np.uint8, copy=False))
    cap.release()
    t0 = time.perf_counter()
    for picture in images:
        detector.detect([picture])
    return len(images), time.perf_counter() - t0


def _daemon_fps(
    video: Path, model: Path | None, threads: int, batch: int, workdir: Path, keep_buffers: bool = True
) -> tuple[int, float]:
    from daemon.app import Daemon
    from daemon.config import load_config
    from pipelines.stages import NoopPipeline

    workdir.mkdir(parents=True, exist_ok=True)
    model_line = model or SHARED / "models" / "yolox_nano.onnx"
    config_path = workdir / "bench.yaml"
    config_path.write_text(
        f"models:\n  det: {{type: yolox, path: '{model_line}', runtime: {{intra_op_threads: {threads}}}}}\n"
        "pipeline: {name: bench, detector: det}\n"
        f"sources:\n  - {{id: bench, type: file, path: '{video}', pace: fast, queue: {{size: 16}}}}\n"
        f"sinks:\n  - {{id: out, type: jsonl, path: '{workdir}/results.jsonl', flush: close}}\n"
        f"batch: {{max_size: {batch}, timeout_ms: 2}}\nstate_dir: '{workdir}/state'\n"
        f"keep_frame_buffers: {str(keep_buffers).lower()}\n"
    )
    config = load_config(config_path)
    daemon = Daemon(config, pipeline=NoopPipeline("noop") if model is None else None)
    daemon.start()
    t0 = time.perf_counter()
    stats = daemon.stats.source("bench")
    while not daemon.finished() or stats.processed + sum(stats.dropped.values()) < stats.captured:
        time.sleep(0.005)
    seconds = time.perf_counter() - t0
    processed = stats.processed
    daemon.stop()
    return processed, seconds
