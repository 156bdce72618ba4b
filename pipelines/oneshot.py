"""Roboflow-style one-shot helpers: two_stage, two_stage_ocr, infer and infer_on_stream over images, folders, videos."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeAlias, cast

import cv2
import numpy as np
import supervision as sv

from pipelines.build import build_pipeline
from pipelines.crops import CropOptions
from pipelines.detect.base import Detector
from pipelines.labels import class_names
from pipelines.models import MODEL_TYPES, LoadedModel, load_model
from pipelines.preprocess import Image, ImageArg, as_image, read_image
from pipelines.stages import PipelineLike, PipelineSpec, StageSpec

log = logging.getLogger(__name__)

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

# a loaded model, a dict for load_model, or a path (with its type given beside it)
ModelArg: TypeAlias = LoadedModel | Mapping[str, object] | str | Path
Record: TypeAlias = dict[str, object]  # one detection of two_stage / two_stage_ocr, JSON-ready


def resolve_model(model: ModelArg, type_name: str | None = None, name: str = "") -> LoadedModel:
    """A loaded model from a loaded model, a load_model dict, or a model file path plus its type."""
    if hasattr(model, "kind"):
        return cast(LoadedModel, model)
    if isinstance(model, Mapping):
        return load_model(dict(model), name)
    if isinstance(model, str | Path):
        if type_name is None:
            raise ValueError(
                f"{name or 'model'}: a model path ({Path(model).name}) needs its type: one of {', '.join(MODEL_TYPES)}"
            )
        return load_model({"type": type_name, "path": str(model)}, name)
    raise TypeError(f"{name or 'model'}: expected a loaded model, a dict or a path, got {type(model).__name__}")



def two_stage(
    image: ImageArg,
    first: ModelArg,
    second: ModelArg,
    *,
    first_type: str | None = None,
    second_type: str = "classify",
    on: Sequence[str] | None = None,
    min_parent_confidence: float = 0.0,
    crop: CropOptions | Mapping[str, object] | None = None,
    max_batch_size: int = 32,
) -> list[Record]:
    """Detect, then classify every detection's crop: [{"bbox", "class", "class_id", "confidence", "classification"}].

    "classification" is the classifier's dict ({"class", "class_id", "confidence", "top"}), None for
    detections filtered out by `on` / `min_parent_confidence`.
    """
    detector = resolve_model(first, first_type, "first")
    classifier = resolve_model(second, second_type, "second")
    stage = _stage("classification", crop, on, min_parent_confidence, max_batch_size)
    detections = _run_two(read_image(image), detector, classifier, stage)
    records = []
    for i, record in enumerate(_base_records(detections)):
        record["classification"] = detections.data["classification"][i]
        records.append(record)
    return records


def two_stage_ocr(
    image: ImageArg,
    detector: ModelArg,
    ocr: ModelArg | None = None,
    *,
    detector_type: str | None = None,
    ocr_type: str = "ocr",
    on: Sequence[str] | None = None,
    min_parent_confidence: float = 0.0,
    crop: CropOptions | Mapping[str, object] | None = None,
    max_batch_size: int = 32,
) -> list[Record]:
    """Detect, then read each detection's text.

    Returns [{"bbox", "class", "class_id", "confidence", "text", "text_confidence"}] per detection.

    `ocr` None loads the default PP-OCR recogniser. Crops are rectified from corner key points when the
    detector gives them (plates), unless `crop` says otherwise. Filtered-out detections get text None.
    """
    found = resolve_model(detector, detector_type, "detector")
    reader = resolve_model(ocr if ocr is not None else {"type": "ocr"}, ocr_type, "ocr")
    stage = _stage("ocr", crop if crop is not None else {"rectify_keypoints": True}, on, min_parent_confidence,
                   max_batch_size)
    detections = _run_two(read_image(image), found, reader, stage)
    records = []
    for i, record in enumerate(_base_records(detections)):
        reading = detections.data["ocr"][i]
        record["text"] = None if reading is None else reading["text"]
        record["text_confidence"] = None if reading is None else reading["confidence"]
        records.append(record)
    return records


def _stage(
    name: str, crop: CropOptions | Mapping[str, object] | None, on: Sequence[str] | None, min_conf: float, batch: int
) -> StageSpec:
    options = crop if isinstance(crop, CropOptions) else CropOptions.model_validate(dict(crop or {}))
    return StageSpec.model_validate({
        "name": name, "model": "second", "on": list(on) if on is not None else None,
        "min_parent_confidence": min_conf, "crop": options, "max_batch_size": batch,
    })


def _run_two(image: Image, first: LoadedModel, second: LoadedModel, stage: StageSpec) -> sv.Detections:
    spec = PipelineSpec.model_validate({"name": "two_stage", "detector": "first", "stages": [stage]})
    return build_pipeline(spec, {"first": first, "second": second}).run([image]).detections[0]


def _base_records(detections: sv.Detections) -> list[Record]:
    names = class_names(detections)
    records: list[Record] = []
    for i in range(len(detections)):
        records.append({
            "bbox": [round(float(v), 1) for v in detections.xyxy[i]],
            "class": str(names[i]),
            "class_id": None if detections.class_id is None else int(detections.class_id[i]),
            "confidence": None if detections.confidence is None else float(detections.confidence[i]),
        })
    return records


def _runner(
    model: LoadedModel | PipelineLike, overrides: Mapping[str, object]
) -> Callable[[list[Image]], list[sv.Detections]]:
    """Batch call: a Pipeline's run, or a detector's detect with per-call overrides."""
    if getattr(model, "kind", None) == "detect":
        detector = cast(Detector, model)  # every detect type is a Detector, the class that takes overrides
        return lambda images: list(detector.detect(images, **overrides))
    if hasattr(model, "run") and not overrides:
        return lambda images: list(model.run(images).detections)
    raise TypeError(
        f"expected a detector or a Pipeline (overrides only apply to detectors), got {type(model).__name__}"
    )


def _model_or_pipeline(model: ModelArg | PipelineLike, model_type: str | None) -> LoadedModel | PipelineLike:
    """A pipeline (it has run) as it is; a loaded model, dict or path through resolve_model."""
    if hasattr(model, "run"):
        return cast(PipelineLike, model)
    return resolve_model(model, model_type, "model")


def infer(
    model: ModelArg | PipelineLike,
    source: ImageArg | Sequence[ImageArg],
    *,
    model_type: str | None = None,
    batch_size: int = 8,
    **overrides: Any,  # post-processing options, or infer_on_stream's keywords for a folder or video
) -> list[sv.Detections]:
    """Detections for an image array, an image path, a list of either, a folder of images, or a video."""
    if isinstance(source, np.ndarray) or (isinstance(source, str | Path) and Path(source).is_file()
                                          and Path(source).suffix.lower() in IMAGE_EXTS):
        source = [source]
    if isinstance(source, str | Path):
        stream = infer_on_stream(model, source, model_type=model_type, batch_size=batch_size, **overrides)
        return [detections for _, _, detections in stream]
    run = _runner(_model_or_pipeline(model, model_type), overrides)
    out: list[sv.Detections] = []
    items = list(source)
    for start in range(0, len(items), batch_size):
        out.extend(run([read_image(x) for x in items[start : start + batch_size]]))
    return out


def infer_on_stream(
    model: ModelArg | PipelineLike,
    path: str | Path,
    *,
    model_type: str | None = None,
    image_ext: Sequence[str] = IMAGE_EXTS,
    batch_size: int = 1,
    **overrides: object,
) -> Iterator[tuple[int | str, Image, sv.Detections]]:
    """Yield (file path or frame index, image, detections) over a folder (sorted by name) or a video."""
    run = _runner(_model_or_pipeline(model, model_type), overrides)
    pending: list[tuple[int | str, Image]] = []
    for reference, image in iter_source(path, image_ext):
        pending.append((reference, image))
        if len(pending) >= batch_size:
            yield from _flush(run, pending)
            pending = []
    yield from _flush(run, pending)


def _flush(
    run: Callable[[list[Image]], list[sv.Detections]], pending: list[tuple[int | str, Image]]
) -> Iterator[tuple[int | str, Image, sv.Detections]]:
    if not pending:
        return
    results = run([image for _, image in pending])
    for (reference, image), detections in zip(pending, results, strict=True):
        yield reference, image, detections


def list_images(folder: str | Path, image_ext: Sequence[str] = IMAGE_EXTS) -> list[Path]:
    exts = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in image_ext}
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in exts)


def iter_source(path: str | Path, image_ext: Sequence[str] = IMAGE_EXTS) -> Iterator[tuple[int | str, Image]]:
    """(file path, image) over a folder's images, or (frame index, frame) over a video file."""
    path = Path(path)
    if path.is_dir():
        for file in list_images(path, image_ext):
            yield str(file), read_image(file)
        return
    if not path.is_file():
        raise FileNotFoundError(f"{path} is neither a folder nor a file")
    if path.suffix.lower() in IMAGE_EXTS:
        yield str(path), read_image(path)
        return
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ValueError(f"cannot open {path} as a video")
    try:
        index = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            yield index, as_image(frame)
            index += 1
    finally:
        capture.release()


def count_frames(path: str | Path, image_ext: Sequence[str] = IMAGE_EXTS) -> int | None:
    """How many items iter_source will give (for progress bars); None when a video does not say."""
    path = Path(path)
    if path.is_dir():
        return len(list_images(path, image_ext))
    if path.suffix.lower() in IMAGE_EXTS:
        return 1
    capture = cv2.VideoCapture(str(path))
    try:
        frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        capture.release()
    return frames if frames > 0 else None
