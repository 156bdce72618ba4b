"""`edgewatch bench two-stage`: batched second stages versus one model call per crop, on frames with many objects.

Workloads, real models and pictures from shared/: people (rf_crowd, crosswalk_people) -> YOLOX-nano -> person
re-ID embedding per person; street (times_square, three_buses, London street frames) -> YOLOX-nano -> SqueezeNet
per object; synthetic plate scenes -> plate detector -> plate-colour classifier per plate, and -> PP-OCR per
plate. Each is timed batched and at max_batch_size 1 in the same run (pipelines.bench_two_stage, which asserts
equal results). The re-ID, SqueezeNet and colour models are fixed at batch 1 in their files: they are also timed
with the runtime's dynamic_batch off, where a batch is a loop of single calls inside the runtime, to show what
the in-memory rewrite (pipelines/runtime/batching.py) adds.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import supervision as sv

from daemon.bench.main import SHARED
from daemon.bench.scenes import PLATE_DETECTOR, bench_two_stage, plate_bench, plate_scene, random_plate_text
from pipelines.classify import Classifier
from pipelines.embed.encoders import ImageEmbedder
from pipelines.models import LoadedModel, load_model
from pipelines.runtime.base import ModelFile
from pipelines.stages import Pipeline, PipelineSpec

log = logging.getLogger(__name__)

THREADS = 2  # ONNX Runtime intra-op threads, as in MODELS.md's latencies
REPEATS = 7  # each mode is timed this many times, interleaved; medians are reported
TARGET = 2.0  # the target speedup on CPU
VIDEO = "london_street_TestV4.mp4"
VIDEO_FRAMES = (0, 30, 60, 90, 120, 150)  # spread over the clip's 152 frames: different traffic in each
# Crops per model call. On this 2-core CPU every second-stage model is compute-bound and gets slower per crop
# above ~8 a call (activations outgrow the caches; PP-OCR at 48 a call takes twice as long per crop as at 8),
# so 8 is the measured best; the stage default of 32 is reported beside it.
BATCH = 8
PLATE_FRAMES, PLATES_PER_FRAME = 4, 12
PLATE_COLOURS = ("yellow", "blue")  # the colours the HyperLPR colour classifier knows


@dataclass(frozen=True)
class Workload:
    """One detector -> second-stage chain and the frames it runs on."""

    name: str
    images: list[np.ndarray]
    detector: dict[str, Any]  # model options without runtime
    second: dict[str, Any]  # model options of the second stage, without runtime
    stage: dict[str, Any] = field(default_factory=dict)  # more StageSpec fields (on, crop)
    expected: list[str] | None = None  # per image, the class every crop should get (a sanity check)


def runtime_options(dynamic_batch: str = "auto") -> dict[str, Any]:
    return {"providers": ["cpu"], "intra_op_threads": THREADS, "dynamic_batch": dynamic_batch}


def read_picture(path: Path) -> np.ndarray:
    image = cv2.imread(str(path))
    if image is None:
        raise FileNotFoundError(f"bench two-stage: cannot read {path} (set EDGEWATCH_SHARED)")
    return image


def video_frames(path: Path, wanted: Sequence[int]) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    frames: list[np.ndarray] = []
    index = 0
    while len(frames) < len(wanted):
        ok, image = cap.read()
        if not ok:
            break
        if index in wanted:
            frames.append(image)
        index += 1
    cap.release()
    if len(frames) != len(wanted):
        raise FileNotFoundError(f"bench two-stage: {path} gave {len(frames)} of the frames {list(wanted)}")
    return frames


def workloads(models: Path, media: Path) -> list[Workload]:
    """People -> re-ID, street objects -> SqueezeNet, synthetic plates -> colour classifier."""
    yolox = {"type": "yolox", "path": str(models / "yolox_nano.onnx")}
    people = [read_picture(media / name) for name in ("rf_crowd.jpg", "crosswalk_people.jpg")]
    streets = [read_picture(media / name) for name in ("times_square_cars_people.jpg", "three_buses.jpg")]
    streets += video_frames(media / VIDEO, VIDEO_FRAMES)
    scenes = [plate_scene(texts, seed=i, colour=PLATE_COLOURS[i % 2])[0] for i, texts in enumerate(plate_texts())]
    return [
        Workload("people", people, yolox, {"type": "embed", "path": str(models / "person_reid_0288.onnx")},
                 {"on": ["person"]}),
        # the street frames hold few vehicles that YOLOX-nano finds (1-2 a frame), so every object is classified
        Workload("street", streets, yolox, {
            "type": "classify", "path": str(models / "squeezenet1.1_fp16.onnx"),
            "labels_file": str(models / "imagenet_labels.txt"),
        }),
        Workload("colour", scenes, {**PLATE_DETECTOR, "path": str(models / "plate_det_y5fu_640.onnx")}, {
            "type": "classify", "path": str(models / "plate_color_cls_96.onnx"), "scale": 1 / 255,
            "labels": ["blue", "green", "yellow"],
        }, {"crop": {"rectify_keypoints": True}}, [PLATE_COLOURS[i % 2] for i in range(len(scenes))]),
    ]


def plate_texts() -> list[list[str]]:
    rng = np.random.default_rng(11)
    return [[random_plate_text(rng) for _ in range(PLATES_PER_FRAME)] for _ in range(PLATE_FRAMES)]


def timed(pipeline: Pipeline, images: Sequence[np.ndarray]) -> tuple[dict[str, Any], list[sv.Detections]]:
    """bench_two_stage's figures, and the detections of an untimed first run (first calls allocate)."""
    detections = list(pipeline.run(images).detections)
    return bench_two_stage(pipeline, images, REPEATS), detections


def speedups(result: Mapping[str, Any]) -> tuple[float, float]:
    """(whole frame, second stage alone): per-crop time over batched time."""
    stage = result["second_stage_ms"]
    return float(result["speedup"]), stage["per_crop"] / stage["batched"] if stage["batched"] > 0 else float("nan")


def figures_of(name: str, result: Mapping[str, Any]) -> dict[str, Any]:
    """bench_two_stage's dict as flat per-frame figures: whole frame and second stage, batched vs per crop."""
    frames = int(result["frames"])
    frame_speedup, stage_speedup = speedups(result)
    return {
        f"{name}_frames": frames,
        f"{name}_crops_per_frame": result["crops"] / frames,
        f"{name}_frame_ms_batched": result["batched_ms"] / frames,
        f"{name}_frame_ms_per_crop": result["per_crop_ms"] / frames,
        f"{name}_frame_speedup": frame_speedup,
        f"{name}_stage_ms_batched": result["second_stage_ms"]["batched"] / frames,
        f"{name}_stage_ms_per_crop": result["second_stage_ms"]["per_crop"] / frames,
        f"{name}_stage_speedup": stage_speedup,
        f"{name}_results_equal": "yes",  # bench_two_stage raises when they differ
    }


def onnx_stage_model(spec: Mapping[str, Any], name: str) -> tuple[LoadedModel, ModelFile]:
    """A workload's second-stage model and the runtime that runs its file (whose batch axis is reported)."""
    model = load_model(spec, name)
    runtime = model.runtime if isinstance(model, Classifier | ImageEmbedder) else None
    if not isinstance(runtime, ModelFile):
        raise TypeError(f"{name}: the stage benchmark needs a classify or embed model on a model file, "
                        f"got {type(model).__name__}")
    return model, runtime


def measure(workload: Workload) -> dict[str, Any]:
    """The workload batched (BATCH and 32 a call) vs per crop; for a file fixed at batch 1, also without the rewrite."""
    name = workload.name
    detector = load_model({**workload.detector, "runtime": runtime_options()}, name="det")
    second, second_runtime = onnx_stage_model({**workload.second, "runtime": runtime_options("auto")}, name)
    looped, looped_runtime = onnx_stage_model({**workload.second, "runtime": runtime_options("off")}, name)

    def bench(model: LoadedModel, batch: int) -> tuple[dict[str, Any], list[sv.Detections]]:
        stage = {"name": "second", "model": "second", "max_batch_size": batch, **workload.stage}
        spec = PipelineSpec.model_validate({"name": name, "detector": "det", "stages": [stage]})
        return timed(Pipeline(spec, {"det": detector, "second": model}), workload.images)

    result, detections = bench(second, BATCH)
    figures: dict[str, Any] = {f"{name}_model": f"{Path(workload.second['path']).name} ({second.kind})"}
    figures.update(figures_of(name, result))
    if workload.expected is not None:
        figures[f"{name}_expected_class"] = expected_class(detections, workload.expected)
    fixed = looped_runtime.max_batch == 1
    figures[f"{name}_batch_axis"] = ("fixed 1 in file, " if fixed else "dynamic in file, ") + (
        "dynamic at run" if second_runtime.batch_dynamic else "loop at run (rewrite refused)"
    )
    figures[f"{name}_stage_speedup_batch32"] = speedups(bench(second, 32)[0])[1]
    if fixed and second_runtime.batch_dynamic:
        figures[f"{name}_stage_speedup_no_rewrite"] = speedups(bench(looped, BATCH)[0])[1]
    figures[f"{name}_meets_{TARGET:g}x"] = _verdict(figures, name)
    return figures


def expected_class(detections: Sequence[sv.Detections], expected: Sequence[str]) -> str:
    """"k of n": second-stage classes equal to their image's expected class."""
    found = [(r["class"], want) for dets, want in zip(detections, expected, strict=True)
             for r in dets.data.get("second", []) if r is not None]
    return f"{sum(got == want for got, want in found)} of {len(found)}"


def _verdict(figures: Mapping[str, Any], name: str) -> str:
    frame, stage = figures[f"{name}_frame_speedup"], figures[f"{name}_stage_speedup"]
    return "yes" if frame >= TARGET else "second stage only" if stage >= TARGET else "no"


def plates(models: Path) -> dict[str, Any]:
    """Synthetic plate scenes -> plate detector -> PP-OCR, BATCH and 32 crops a call versus one."""
    def bench(batch: int) -> dict[str, Any]:
        return plate_bench(models, PLATE_FRAMES, PLATES_PER_FRAME, REPEATS, runtime_options(), batch)

    best = bench(BATCH)
    figures: dict[str, Any] = {"plates_model": f"ch_PP-OCRv4_rec_infer.onnx (ocr), max_batch_size {BATCH}"}
    figures.update(figures_of("plates", best))
    figures["plates_read"] = f"{best['plates_read']} of {best['plates_rendered']}"
    figures["plates_stage_speedup_batch32"] = speedups(bench(32))[1]
    figures[f"plates_meets_{TARGET:g}x"] = _verdict(figures, "plates")
    return figures


def run(shared: Path | None = None) -> dict[str, Any]:
    """Every workload, batched vs per crop, as one flat dict of figures (numbers and short strings)."""
    root = shared or SHARED
    models, media = root / "models", root / "media"
    for path in (models / "yolox_nano.onnx", models / "plate_det_y5fu_640.onnx", media / VIDEO):
        if not path.is_file():
            raise FileNotFoundError(f"bench two-stage: {path} does not exist (set EDGEWATCH_SHARED)")
    figures: dict[str, Any] = {
        "threads": THREADS, "repeats": REPEATS, "max_batch_size": BATCH, "target_speedup": TARGET,
    }
    for workload in workloads(models, media):
        figures.update(measure(workload))
    figures.update(plates(models))
    return figures
