"""Runs in the peer's own venv: Roboflow's InferencePipeline with a bare callback (`bench peer`, `bench capacity`).

Started as a script by the peer venv's python, which has streamvision, onnxruntime, opencv-python and numpy
but no edgewatch: the only project code it loads is reference.py, by file path, which needs
nothing else. Prints one JSON line: {"frames": n, "seconds": s, "sources": k} for `bench peer`; with --lpr,
per camera the frames whose plate chain finished in the measured window and their capture-to-done seconds.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def load_reference() -> Any:
    """daemon/bench/reference.py as a module of its own (the peer venv has no `daemon` package)."""
    spec = importlib.util.spec_from_file_location("edgewatch_reference", Path(__file__).with_name("reference.py"))
    if spec is None or spec.loader is None:
        raise ImportError("peer driver: cannot load reference.py beside it")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(model: Path, videos: list[str], threads: int, spin: bool) -> dict[str, Any]:
    """Every frame of `videos` through InferencePipeline.init_with_custom_logic; frames counted in the callback."""
    from streamvision.stream.pipeline import InferencePipeline

    reference = load_reference()
    bare = reference.Reference(model, threads, spin)
    bare.infer(np.zeros((bare.height, bare.width, 3), np.uint8))  # warm up, as the daemon does when it loads
    done = [0]

    def on_video_frame(frames: list[Any]) -> list[Any]:
        # one session.run per frame, as a user's custom logic calls a single-image model
        outputs = [bare.infer(frame.image) for frame in frames]
        done[0] += len(frames)
        return outputs

    pipeline = InferencePipeline.init_with_custom_logic(
        video_reference=videos if len(videos) > 1 else videos[0],
        on_video_frame=on_video_frame,
        on_prediction=lambda predictions, frames: None,
    )
    t0 = time.perf_counter()  # as the daemon's figure: from opening the sources to the last frame
    pipeline.start(use_main_thread=True)
    pipeline.join()
    return {"frames": done[0], "seconds": time.perf_counter() - t0, "sources": len(videos)}


def run_lpr(
    models: list[Path], urls: list[str], threads: int, fps: float, warmup: float, seconds: float
) -> dict[str, Any]:
    """k live cameras at `fps` each through the naive plate chain; done frames and latencies in the window."""
    from streamvision.stream.pipeline import InferencePipeline

    lpr = load_reference().NaiveLpr(*models, threads)
    done: list[tuple[int, float, float]] = []  # (camera, captured, finished), wall-clock seconds

    def on_video_frame(frames: list[Any]) -> list[Any]:
        outputs = []
        for frame in frames:
            outputs.append(lpr(frame.image))
            done.append((int(frame.source_id or 0), frame.frame_timestamp.timestamp(), time.time()))
        return outputs

    pipeline = InferencePipeline.init_with_custom_logic(
        video_reference=urls,
        on_video_frame=on_video_frame,
        on_prediction=lambda predictions, frames: None,
        max_fps=fps or None,  # 0: take every frame the camera sends
    )
    pipeline.start(use_main_thread=False)
    deadline = time.time() + 60.0
    while {row[0] for row in done} != set(range(len(urls))) and time.time() < deadline:
        time.sleep(0.1)  # every camera has delivered (the daemon's bench waits for the same)
    start = time.time() + warmup
    time.sleep(warmup + seconds)
    pipeline.terminate()
    pipeline.join()
    window = [row for row in done if start <= row[2] <= start + seconds]
    return {
        "frames": {str(k): sum(1 for row in window if row[0] == k) for k in range(len(urls))},
        "stage_ms_per_frame": {name: ms / max(1, len(done)) for name, ms in lpr.ms.items()},
        "latencies": [row[2] - row[1] for row in window],
        "seconds": seconds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--spin", choices=("on", "off"), default="on")
    parser.add_argument("--lpr", nargs=2, metavar=("PLATES", "READER"), help="the plate chain, --model the vehicles")
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("videos", nargs="+")
    args = parser.parse_args(argv)
    if args.lpr:
        models = [Path(args.model), *map(Path, args.lpr)]
        figures = run_lpr(models, args.videos, args.threads, args.fps, args.warmup, args.seconds)
    else:
        figures = run(Path(args.model), args.videos, args.threads, args.spin == "on")
    print(json.dumps(figures), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
