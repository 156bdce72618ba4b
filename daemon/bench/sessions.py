"""`edgewatch bench sessions`: how one ONNX Runtime session uses the cores, bare (no project code).

The evidence behind `runtime.parallel_runs` (pipelines/runtime/parallel.py): YOLOX-nano on frames letterboxed
beforehand (reference.py), one frame per `session.run`, through one session with 1 thread, one session with
`threads` intra-op threads with ORT's spin-wait on (its default) and off, and `threads` single-thread runs of
one session side by side on as many Python threads (ORT releases the GIL in `run`). Modes interleaved over
rounds; fps are medians.
"""

from __future__ import annotations

import statistics
import threading
import time
from pathlib import Path
from typing import Any

from daemon.bench import reference
from daemon.bench.main import SHARED


def sequential(sess: Any, tensors: list[reference.Tensor]) -> float:
    """fps of one thread calling `sess` frame after frame."""
    name = sess.get_inputs()[0].name
    t0 = time.perf_counter()
    for tensor in tensors:
        sess.run(None, {name: tensor})
    return len(tensors) / (time.perf_counter() - t0)


def side_by_side(sess: Any, tensors: list[reference.Tensor], runs: int) -> float:
    """fps of `runs` threads calling the one `sess` at once, each on every runs-th frame."""
    name = sess.get_inputs()[0].name

    def share(start: int) -> None:
        for tensor in tensors[start::runs]:
            sess.run(None, {name: tensor})

    threads = [threading.Thread(target=share, args=(i,)) for i in range(runs)]
    t0 = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(tensors) / (time.perf_counter() - t0)


def run(rounds: int = 3, threads: int = 2, frames: int = 150, model: Path | None = None) -> dict[str, Any]:
    """Every mode once per round, rounds interleaved; medians and each mode against ORT's default."""
    model = model or SHARED / "models" / "yolox_nano.onnx"
    video = SHARED / "media" / "london_street_TestV4.mp4"
    for path in (model, video):
        if not path.is_file():
            raise FileNotFoundError(f"bench sessions: {path} does not exist (set EDGEWATCH_SHARED)")
    one = reference.session(model, 1, spin=False)
    width, height = reference.input_wh(one)
    tensors = [reference.letterbox(image, width, height) for image in reference.decode(video, frames)]
    spinning = reference.session(model, threads, spin=True)
    still = reference.session(model, threads, spin=False)
    modes = {
        "one session, 1 thread": lambda: sequential(one, tensors),
        f"one session, {threads} threads, spin on (ORT default)": lambda: sequential(spinning, tensors),
        f"one session, {threads} threads, spin off": lambda: sequential(still, tensors),
        f"{threads} single-thread runs of one session side by side": lambda: side_by_side(one, tensors, threads),
    }
    for sess in (one, spinning, still):
        sequential(sess, tensors[:3])  # warm-up
    measured: dict[str, list[float]] = {mode: [] for mode in modes}
    for _ in range(rounds):
        for mode, measure in modes.items():
            measured[mode].append(measure())
    default = statistics.median(measured[f"one session, {threads} threads, spin on (ORT default)"])
    figures: dict[str, Any] = {"frames": len(tensors), "rounds": rounds, "model": model.name}
    for mode, values in measured.items():
        figures[f"{mode} fps"] = statistics.median(values)
        figures[f"{mode} fps per round"] = [round(v, 1) for v in values]
        figures[f"{mode} vs ORT default"] = statistics.median(values) / default
    return figures
