"""Two-stage benchmark: the second stage batched versus one call per crop, on frames with many objects.

Also renders the synthetic plate scenes it (and the tests) use: plates with known strings, slightly rotated
and in perspective, on a textured background.
"""

from __future__ import annotations

import logging
import math
import statistics
import string
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import supervision as sv

from pipelines.models import load_model
from pipelines.stages import Pipeline, PipelineSpec, StageSpec

log = logging.getLogger(__name__)

PLATE_CHARS = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"  # rendered plates avoid I, O, Q (read as 1, 0)
ALNUM = string.ascii_uppercase + string.digits


PLATE_COLOURS: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    # name: (plate BGR, text BGR); blue and yellow are what the HyperLPR plate models were trained on
    "yellow": ((0, 200, 255), (0, 0, 0)),
    "blue": ((150, 60, 10), (255, 255, 255)),
    "white": ((255, 255, 255), (0, 0, 0)),
}


def render_plate(text: str, size_wh: tuple[int, int] = (160, 46), colour: str = "yellow") -> np.ndarray:
    """A plate of `colour` (yellow, blue, white) with a border and `text` centred (BGR)."""
    w, h = size_wh
    background, ink = PLATE_COLOURS[colour]
    plate = np.full((h, w, 3), background, dtype=np.uint8)
    cv2.rectangle(plate, (1, 1), (w - 2, h - 2), ink, max(2, h // 20))
    font, thickness = cv2.FONT_HERSHEY_DUPLEX, max(2, h // 16)
    (tw, th), _ = cv2.getTextSize(text, font, 1.0, thickness)
    scale = min((w * 0.86) / tw, (h * 0.62) / th)
    (tw, th), _ = cv2.getTextSize(text, font, scale, thickness)
    cv2.putText(plate, text, ((w - tw) // 2, (h + th) // 2), font, scale, ink, thickness, cv2.LINE_AA)
    return plate


def plate_corners(
    centre: tuple[float, float], size_wh: tuple[int, int], angle_deg: float = 0.0, skew: float = 0.0
) -> np.ndarray:
    """Corners (tl, tr, br, bl) of a plate rotated by `angle_deg`; `skew` narrows the right side (perspective)."""
    w, h = size_wh
    local = np.array(
        [[-w / 2, -h / 2], [w / 2, -h / 2 * (1 - skew)], [w / 2, h / 2 * (1 - skew)], [-w / 2, h / 2]]
    )
    a = math.radians(angle_deg)
    rotation = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return (local @ rotation.T + np.asarray(centre)).astype(np.float32)


def place_plate(scene: np.ndarray, plate: np.ndarray, corners: np.ndarray) -> None:
    """Warp `plate` onto `scene` (in place) so that its corners land on `corners` (tl, tr, br, bl)."""
    h, w = plate.shape[:2]
    src = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], dtype=np.float32)
    matrix = cv2.getPerspectiveTransform(src, np.asarray(corners, dtype=np.float32))
    size = (scene.shape[1], scene.shape[0])
    warped = cv2.warpPerspective(plate, matrix, size, flags=cv2.INTER_LINEAR)
    mask = cv2.warpPerspective(np.full((h, w), 255, np.uint8), matrix, size, flags=cv2.INTER_LINEAR)
    alpha = (mask.astype(np.float32) / 255.0)[..., None]
    scene[:] = (warped * alpha + scene * (1.0 - alpha)).astype(np.uint8)


def random_plate_text(rng: np.random.Generator) -> str:
    letters, digits = PLATE_CHARS[:23], PLATE_CHARS[23:]
    return "".join(rng.choice(list(letters), 2)) + "".join(rng.choice(list(digits), 3)) + "".join(
        rng.choice(list(letters), 2)
    )


def plate_scene(
    texts: Sequence[str],
    size_wh: tuple[int, int] = (1280, 720),
    plate_wh: tuple[int, int] = (160, 46),
    seed: int = 0,
    colour: str = "yellow",
) -> tuple[np.ndarray, np.ndarray]:
    """A grey picture with one plate per text, each on a car-coloured panel, on a jittered grid.

    Plates are rotated by up to 6 degrees and narrowed on one side (perspective). Returns the picture and
    the true plate corners [N,4,2] (tl, tr, br, bl).
    """
    rng = np.random.default_rng(seed)
    w, h = size_wh
    gradient = np.linspace(90, 170, w, dtype=np.float32)[None, :, None]
    scene = np.clip(gradient + rng.normal(0, 6, (h, w, 3)), 0, 255).astype(np.uint8)
    cols = max(1, math.ceil(math.sqrt(len(texts) * w / h)))
    rows = max(1, math.ceil(len(texts) / cols))
    cell_w, cell_h = w / cols, h / rows
    pw, ph = plate_wh
    if cell_w < pw * 1.3 or cell_h < ph * 3.0:
        raise ValueError(f"{len(texts)} plates of {plate_wh} do not fit a {size_wh} picture")
    corners = []
    for i, text in enumerate(texts):
        cx = (i % cols + 0.5) * cell_w + rng.uniform(-0.05, 0.05) * cell_w
        cy = (i // cols + 0.5) * cell_h + rng.uniform(-0.05, 0.05) * cell_h
        body = tuple(int(c) for c in rng.integers(20, 120, 3))
        cv2.rectangle(scene, (int(cx - pw * 0.65), int(cy - ph * 1.6)), (int(cx + pw * 0.65), int(cy + ph * 1.2)),
                      body, -1)
        quad = plate_corners((cx, cy), plate_wh, float(rng.uniform(-6, 6)), float(rng.uniform(0.0, 0.12)))
        place_plate(scene, render_plate(text, plate_wh, colour), quad)
        corners.append(quad)
    return scene, np.asarray(corners, dtype=np.float32).reshape(-1, 4, 2)


def per_crop_spec(spec: PipelineSpec) -> PipelineSpec:
    """The same pipeline with every stage at max_batch_size 1 (one model call per crop)."""

    def single(stages: Sequence[StageSpec]) -> list[StageSpec]:
        return [s.model_copy(update={"max_batch_size": 1, "stages": single(s.stages)}) for s in stages]

    return spec.model_copy(update={"stages": single(spec.stages)})


def stage_results(detections: Sequence[sv.Detections], stages: Sequence[StageSpec]) -> list[Any]:
    """Comparable second-stage outcomes: texts, class ids and child counts, nested, per detection."""
    out: list[Any] = []
    for dets in detections:
        for stage in stages:
            for value in dets.data.get(stage.name, []):
                if value is None:
                    out.append(None)
                elif isinstance(value, sv.Detections):
                    out.append((len(value), stage_results([value], stage.stages)))
                elif isinstance(value, dict):
                    out.append(value.get("text", value.get("class_id")))
                else:
                    out.append(np.asarray(value, dtype=np.float32))
    return out


def same_results(a: Any, b: Any) -> bool:
    """Equal outcomes; embeddings may differ by float noise between batch sizes."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return bool(np.shape(a) == np.shape(b) and np.allclose(a, b, atol=1e-3))
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same_results(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def bench_two_stage(pipeline: Pipeline, images: Sequence[np.ndarray], repeats: int = 3) -> dict[str, Any]:
    """Time the pipeline with batched second stages versus one call per crop; results must be identical.

    Returns {"frames", "crops", "batched_ms", "per_crop_ms", "speedup", "second_stage_ms": {...}}
    (medians over `repeats`, the first-stage detector included in both).
    """
    per_crop = Pipeline(per_crop_spec(pipeline.spec), pipeline.models)
    timings: dict[str, list[float]] = {"batched": [], "per_crop": []}
    second: dict[str, list[float]] = {"batched": [], "per_crop": []}
    outcomes: dict[str, list[Any]] = {}
    for _ in range(max(1, repeats)):
        for label, runner in (("batched", pipeline), ("per_crop", per_crop)):
            t0 = time.perf_counter()
            run = runner.run(images)
            timings[label].append((time.perf_counter() - t0) * 1000.0)
            second[label].append(sum(v for k, v in run.timings_ms.items() if "/" in k))
            outcomes[label] = stage_results(run.detections, pipeline.spec.stages)
    if not same_results(outcomes["batched"], outcomes["per_crop"]):
        raise AssertionError("batched and per-crop second stages gave different results")
    crops = sum(1 for v in _flatten(outcomes["batched"]) if v is not None)
    batched, single = statistics.median(timings["batched"]), statistics.median(timings["per_crop"])
    return {
        "frames": len(images),
        "crops": crops,
        "batched_ms": round(batched, 2),
        "per_crop_ms": round(single, 2),
        "speedup": round(single / batched, 2) if batched > 0 else None,
        "second_stage_ms": {k: round(statistics.median(v), 2) for k, v in second.items()},
    }


def _flatten(values: Sequence[Any]) -> list[Any]:
    flat: list[Any] = []
    for v in values:
        if isinstance(v, tuple):
            flat.append(v)
            flat.extend(_flatten(v[1]))
        else:
            flat.append(v)
    return flat


PLATE_DETECTOR = {
    "type": "yolov5",
    "num_keypoints": 4,
    "pad_value": 0,
    "class_names": ["single", "double"],
    "class_agnostic_nms": True,
}


def plate_bench(
    models_dir: str | Path,
    frames: int = 4,
    plates_per_frame: int = 12,
    repeats: int = 3,
    runtime: Mapping[str, Any] | None = None,
    max_batch_size: int = 32,
) -> dict[str, Any]:
    """The plate benchmark: yolov5 plate detector -> rectified crops -> PP-OCR, on synthetic plate scenes.

    Adds "plates_rendered" and "plates_read" (rendered strings read exactly) to bench_two_stage's dict.
    """
    rng = np.random.default_rng(7)
    texts = [[random_plate_text(rng) for _ in range(plates_per_frame)] for _ in range(frames)]
    images = [plate_scene(frame_texts, seed=i)[0] for i, frame_texts in enumerate(texts)]
    extra = {"runtime": dict(runtime)} if runtime else {}
    models = {
        "plates": load_model(
            {**PLATE_DETECTOR, "path": str(Path(models_dir) / "plate_det_y5fu_640.onnx"), **extra}, name="plates"
        ),
        "ocr": load_model({"type": "ocr", "uppercase": True, "allowed_characters": ALNUM, **extra}, name="ocr"),
    }
    spec = PipelineSpec.model_validate({
        "name": "plates", "detector": "plates",
        "stages": [{"name": "text", "model": "ocr", "crop": {"rectify_keypoints": True},
                    "max_batch_size": max_batch_size}],
    })
    pipeline = Pipeline(spec, models)
    result = bench_two_stage(pipeline, images, repeats)
    read = [{r["text"] for r in dets.data["text"] if r is not None} for dets in pipeline.run(images).detections]
    result["plates_rendered"] = frames * plates_per_frame
    result["plates_read"] = sum(len(set(frame_texts) & found) for frame_texts, found in zip(texts, read, strict=True))
    return result
