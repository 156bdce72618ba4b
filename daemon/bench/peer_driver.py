"""Runs in the peer's own venv (`edgewatch bench peer`): Roboflow's InferencePipeline with our bare session.run.

Started as a script by the peer venv's python, which has streamvision, onnxruntime, opencv-python and numpy
but no edgewatch: the only project code it loads is reference.py, by file path, which needs nothing else.
Prints one JSON line: {"frames": n, "seconds": s, "sources": k}.
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--spin", choices=("on", "off"), default="on")
    parser.add_argument("videos", nargs="+")
    args = parser.parse_args(argv)
    print(json.dumps(run(Path(args.model), args.videos, args.threads, args.spin == "on")), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
