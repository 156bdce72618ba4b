"""`edgewatch bench motion`: detector calls and cars read with and without motion gating, on a quiet street.

The street (daemon/bench/traffic.py's renderer: asphalt, lane marks, cars with known plates drawn by
daemon/bench/scenes.py) stays empty for long stretches; now and then one car crosses. Each frame carries a
little sensor noise and a clock in the top-left corner that changes every second (masked in the motion
options, as a camera's timestamp overlay would be). The video and its truth are rendered once into the cache
folder, never the checkout. Both variants run the tracked plate chain of `bench plates` frame by frame, as a
single-source daemon's worker does, on the same decoded frames: without gating every frame is inferred; with
gating the capture-side MotionDetector marks each frame and the worker's MotionGate picks the frames to infer
(daemon/motion.py, the daemon's own code). Rounds are interleaved (off, on, off, on, ...); seconds are medians.
"""

from __future__ import annotations

import hashlib
import logging
import statistics
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from daemon.bench.main import SHARED
from daemon.bench.plates import STAGE, chain_spec, load_models, observed
from daemon.bench.platescore import Published, Seen, score_video
from daemon.bench.traffic import (
    BODY_COLOURS,
    FPS,
    SIZE_WH,
    Car,
    CarTruth,
    Scene,
    background,
    plate_text,
    render_frame,
    render_once,
)
from daemon.cli.demo import cache_dir
from daemon.frames import Frame, Result
from daemon.motion import MotionDetector, MotionGate
from daemon.service.stats import Stats
from daemon.sources.base import MotionOptions
from pipelines.build import build_pipeline
from pipelines.models import LoadedModel
from pipelines.preprocess import as_image
from pipelines.stages import FrameInfo

log = logging.getLogger(__name__)

RENDER_VERSION = 2  # part of the cache key: bump when the drawing changes
FRAMES = 3000  # 200 s at 15 fps
ENTERS = (150, 1200, 2300)  # one car at a time, about a minute apart
CLOCK_BOX = [(0.0, 0.0), (360.0, 0.0), (360.0, 70.0), (0.0, 70.0)]  # the clock overlay, masked
OFF_PICTURE = (5000, 5028)  # traffic.py's post and glare band, moved out of the picture: a plain street


def quiet_scene(seed: int) -> Scene:
    """Three cars with known plates, one at a time in the two near lanes; no blur, post or glare."""
    rng = np.random.default_rng(seed)
    cars = []
    for index, enter in enumerate(ENTERS):
        fmt = ("uk", "eu", "us")[index % 3]
        text, shown = plate_text(rng, fmt)
        right = index % 2 == 0
        speed = float(rng.uniform(11, 13)) * (1 if right else -1)
        cars.append(
            Car(
                text,
                shown,
                fmt,
                BODY_COLOURS[index],
                str(rng.choice(["white", "yellow"])),
                398 if right else 262,
                -220.0 if right else float(SIZE_WH[0]),
                speed,
                enter,
                1.0,
                float(rng.uniform(-3, 3)),
                0.05,
            )
        )
    return Scene(seed, tuple(cars), 10**9, OFF_PICTURE, OFF_PICTURE)


def quiet_frames(sc: Scene, frames: Iterable[int] = range(FRAMES)) -> Iterator[tuple[np.ndarray, list[CarTruth]]]:
    """Each frame with sensor noise and the clock drawn on it, and its truth."""
    street = background(sc.seed)
    for frame in frames:
        image, truth = render_frame(sc, frame, street)
        noise = np.random.default_rng((sc.seed, frame, 7)).integers(0, 6, image.shape, dtype=np.uint8)
        image = cv2.add(image, noise)
        clock = time.strftime("%H:%M:%S", time.gmtime(int(frame / FPS)))
        cv2.putText(image, clock, (8, 56), cv2.FONT_HERSHEY_SIMPLEX, 2.0, (255, 255, 255), 4, cv2.LINE_AA)
        yield image, truth


def rendered_quiet(seed: int, cache: Path) -> tuple[Path, list[list[CarTruth]]]:
    """The quiet street of `seed` rendered into `cache` once (video and truth renamed into place whole)."""
    sc = quiet_scene(seed)
    key = hashlib.sha256(repr((RENDER_VERSION, FRAMES, SIZE_WH, FPS, sc, cv2.__version__)).encode()).hexdigest()
    return render_once(cache / f"motion-bench-{seed}-{key[:12]}", f"quiet street of seed {seed}",
                       lambda: quiet_frames(sc))


def decoded(video: Path) -> Iterator[np.ndarray]:
    """The video's frames one at a time (3000 frames of 960x540 would not fit in memory at once)."""
    cap = cv2.VideoCapture(str(video), cv2.CAP_FFMPEG)
    try:
        while True:
            ok, image = cap.read()
            if not ok:
                return
            yield image
    finally:
        cap.release()


def play(video: Path, models: Mapping[str, LoadedModel], motion: MotionOptions | None) -> dict[str, Any]:
    """The tracked plate chain over the video, gated by `motion` (None: every frame): calls, seconds, tracks."""
    pipeline = build_pipeline(chain_spec("plate", FPS), models)
    detector = MotionDetector(motion) if motion is not None else None
    gated: list[Result] = []
    gate = MotionGate(gated.append, Stats())
    seen: list[Seen] = []
    events: list[Any] = []
    frames = calls = 0
    t0 = time.perf_counter()
    for seq, image in enumerate(decoded(video)):
        t = seq / FPS
        mark = detector.check(image, t) if detector is not None else None
        frame = Frame("street", seq, as_image(image), 1.7e9 + t, t, t, mark)
        frames += 1
        if not gate.select([frame], pipeline):
            continue
        calls += 1
        run = pipeline.run([frame.image], [FrameInfo(seq=seq, t_wall=frame.t_wall, t_mono=t, pts=t, source="street")])
        seen += observed(seq, run.detections[0])
        events += [event for _index, event in run.events]
    seconds = time.perf_counter() - t0
    events += pipeline.finish("street")
    published = [Published(e.type, e.track_id, _consensus(e.payload["stages"].get(STAGE))) for e in events]
    return {
        "frames": frames,
        "calls": calls,
        "gated": len(gated),
        "seconds": seconds,
        "seen": seen,
        "published": published,
        "outcomes": dict(gate.counts.get("street", {})),  # why each frame was inferred or gated
    }


def _consensus(value: Any) -> Mapping[str, Any] | None:
    return value if isinstance(value, Mapping) and "reads" in value else None


def score(truth: list[list[CarTruth]], sc: Scene, played: Mapping[str, Any]) -> dict[str, Any]:
    """The plates read exactly (every plate published for the car is its own) and the false plates."""
    result = score_video(truth, played["seen"], played["published"])
    figures = result.figures(car.text for car in sc.cars)
    return {"read": sorted(c.text for c in result.cars if c.exact), "false_plates": figures["false_plates"]}


def run(seed: int = 0, rounds: int = 3, cache: str | None = None, threads: int = 2) -> dict[str, Any]:
    """Gating off and on over the quiet street, `rounds` times interleaved; counts, cars read, median seconds."""
    models_dir = SHARED / "models"
    if not (models_dir / "plate_det_y5fu_640.onnx").is_file():
        raise FileNotFoundError(
            f"bench motion: {models_dir / 'plate_det_y5fu_640.onnx'} does not exist (set EDGEWATCH_SHARED)"
        )
    folder = Path(cache) if cache else cache_dir()
    video, truth = rendered_quiet(seed, folder)
    sc = quiet_scene(seed)
    models = load_models(models_dir, threads)
    options = MotionOptions(masks=[CLOCK_BOX])
    runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    for _ in range(rounds):
        for name, motion in (("off", None), ("on", options)):
            played = play(video, models, motion)
            runs[name].append(
                {
                    **{k: played[k] for k in ("frames", "calls", "gated", "seconds", "outcomes")},
                    **score(truth, sc, played),
                }
            )
            log.info("bench motion %s: %s", name, runs[name][-1])
    figures: dict[str, Any] = {
        "video": str(video),
        "frames": runs["off"][0]["frames"],
        "cars": len(sc.cars),
        "rounds": rounds,
        "threads": threads,
        "motion": options.model_dump(exclude={"masks"}),
    }
    for name, rows in runs.items():
        last = rows[-1]  # counts and reads are the same every round (deterministic); seconds vary
        figures[f"{name}_detector_calls"] = last["calls"]
        figures[f"{name}_calls_per_frame"] = last["calls"] / last["frames"]
        figures[f"{name}_cars_read"] = last["read"]
        figures[f"{name}_false_plates"] = last["false_plates"]
        figures[f"{name}_outcomes"] = last["outcomes"]
        figures[f"{name}_seconds_median"] = statistics.median(r["seconds"] for r in rows)
    figures["same_cars_read"] = figures["on_cars_read"] == figures["off_cars_read"]
    figures["seconds_on_vs_off"] = figures["on_seconds_median"] / figures["off_seconds_median"]
    figures["note"] = "seconds move with whatever else the machine runs; counts are exact"
    return figures
