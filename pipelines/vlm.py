"""VLM/LLM answers -> supervision.Detections, as Roboflow's vlm_as_detector block; never raises on the text.

Accepted answers: JSON, or JSON inside a Markdown ```json fence (only the first fence is read).
- openai / google-gemini / anthropic-claude, task object-detection:
  {"detections": [{"x_min", "y_min", "x_max", "y_max" (0-1), "class_name" | "label" | "class",
  "confidence"?}]} or the bare list; Gemini's native [{"box_2d": [ymin, xmin, ymax, xmax] (0-1000),
  "label"}] (parsed by supervision); OpenAI/Claude [{"box_2d": [x_min, y_min, x_max, y_max]}] in pixels
  of the picture that was uploaded (`input_wh`, default the image size).
- florence-2, every task: the task's post-processed payload ({"bboxes", "labels"}, {"quad_boxes", ...}),
  bare or under its task token ("<OD>": {...}), parsed by supervision's `Detections.from_vlm`.
Boxes are clipped to the image (boxes left with no area are dropped), confidences clamped to [0, 1] and
1.0 where the model gives none, class ids are indices in `classes` and -1 for names not in it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, cast, get_args

import numpy as np
import numpy.typing as npt
import supervision as sv

log = logging.getLogger(__name__)

ModelType = Literal["openai", "google-gemini", "anthropic-claude", "florence-2"]
TaskType = Literal[
    "object-detection",
    "open-vocabulary-object-detection",
    "object-detection-and-caption",
    "phrase-grounded-object-detection",
    "region-proposal",
    "ocr-with-text-detection",
]
LLM_TYPES = ("openai", "google-gemini", "anthropic-claude")
FLORENCE_TASKS: dict[str, str] = {
    "object-detection": "<OD>",
    "open-vocabulary-object-detection": "<OPEN_VOCABULARY_DETECTION>",
    "object-detection-and-caption": "<DENSE_REGION_CAPTION>",
    "phrase-grounded-object-detection": "<CAPTION_TO_PHRASE_GROUNDING>",
    "region-proposal": "<REGION_PROPOSAL>",
    "ocr-with-text-detection": "<OCR_WITH_REGION>",
}
SUPPORTED: frozenset[tuple[str, str]] = frozenset(
    {(m, "object-detection") for m in LLM_TYPES} | {("florence-2", t) for t in FLORENCE_TASKS}
)
JSON_FENCE = re.compile(r"```json([\s\S]*?)```", flags=re.IGNORECASE)
MAX_CHARS = 2_000_000  # far above any real answer; bounds the work an endless reply can cause
# Everything a malformed answer can make json/numpy/supervision raise; the answer is untrusted input.
PARSE_ERRORS = (ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError, OverflowError)


class VlmFormatError(ValueError):
    """A VLM answer that is not in the format its model and task produce."""


@dataclass(frozen=True)
class VlmResult:
    """As the Roboflow block's outputs: predictions (None on error), error_status, inference_id."""

    predictions: sv.Detections | None
    error_status: bool
    inference_id: str
    error: str = ""


def check_task(model_type: str, task_type: str, classes: Sequence[str] | None) -> None:
    """Raise ValueError for a model/task pair no parser handles, or missing classes where they are needed."""
    if model_type not in get_args(ModelType):
        raise ValueError(f"unknown VLM model type {model_type!r}; expected one of {get_args(ModelType)}")
    if (model_type, task_type) not in SUPPORTED:
        tasks = sorted(t for m, t in SUPPORTED if m == model_type)
        raise ValueError(f"model type {model_type!r} cannot do task {task_type!r}; it can do {tasks}")
    if model_type != "florence-2" and classes is None:
        raise ValueError(f"model type {model_type!r} needs the list of classes (names -> class ids)")


def extract_json(text: str) -> object:
    """The JSON of the first ```json fence, or of the whole text when there is no fence."""
    fenced = JSON_FENCE.search(text)
    try:
        return json.loads(fenced.group(1) if fenced else text)
    except json.JSONDecodeError as exc:
        raise VlmFormatError(f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from exc


def parse_vlm_output(
    vlm_output: object,
    *,
    model_type: ModelType,
    task_type: TaskType,
    resolution_wh: tuple[int, int],
    classes: Sequence[str] | None = None,
    input_wh: tuple[int, int] | None = None,
    max_chars: int = MAX_CHARS,
) -> VlmResult:
    """Parse one answer into detections in pixels of the `resolution_wh` (width, height) image.

    Raises ValueError only for a bad call (unsupported model/task, classes missing, bad size); anything
    wrong with the answer itself gives error_status True with predictions None.
    """
    check_task(model_type, task_type, classes)
    width, height = _size(resolution_wh, "resolution_wh")
    sent_wh = _size(input_wh, "input_wh") if input_wh is not None else (width, height)
    inference_id = str(uuid.uuid4())
    try:
        if not isinstance(vlm_output, str):
            raise VlmFormatError(f"expected the answer as text, got {type(vlm_output).__name__}")
        if len(vlm_output) > max_chars:
            raise VlmFormatError(f"answer of {len(vlm_output)} characters exceeds the limit of {max_chars}")
        data = extract_json(vlm_output)
        if model_type == "florence-2":
            detections = _florence(data, task_type, classes, (width, height))
        else:
            detections = _llm(data, model_type, list(classes or []), (width, height), sent_wh)
        detections = _clip_to_image(detections, (width, height))
    except PARSE_ERRORS as exc:
        log.warning(
            "cannot parse %s %s answer (%d chars): %s",
            model_type,
            task_type,
            len(vlm_output) if isinstance(vlm_output, str) else -1,
            exc,
        )
        return VlmResult(None, True, inference_id, f"{type(exc).__name__}: {exc}")
    detections.metadata["inference_id"] = inference_id
    return VlmResult(detections, False, inference_id)


def _size(wh: tuple[int, int], name: str) -> tuple[int, int]:
    if len(wh) != 2 or not all(isinstance(v, int | np.integer) and v > 0 for v in wh):
        raise ValueError(f"{name} must be (width, height) in positive pixels, got {wh!r}")
    return int(wh[0]), int(wh[1])


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise VlmFormatError(f"{what} must be a number, got {value!r:.40}")
    number = float(value)
    if not math.isfinite(number):
        raise VlmFormatError(f"{what} must be finite, got {value!r}")
    return number


def _label(entry: dict[str, object]) -> str:
    for key in ("class_name", "label", "class"):
        if entry.get(key) is not None:
            return str(entry[key])
    return "unknown"


def _confidence(entry: dict[str, object]) -> float:
    value = entry.get("confidence")
    return 1.0 if value is None else min(max(_number(value, "confidence"), 0.0), 1.0)


def _box(entry: dict[str, object], key: str) -> list[float]:
    box = entry[key]
    if not isinstance(box, list) or len(box) != 4:
        raise VlmFormatError(f"{key} must be a list of 4 numbers, got {box!r:.60}")
    return [_number(v, key) for v in box]


def _entries(data: object) -> list[dict[str, object]]:
    entries = data.get("detections") if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise VlmFormatError('expected {"detections": [...]} or a list of detections')
    for entry in entries:
        if not isinstance(entry, dict):
            raise VlmFormatError(f"each detection must be an object, got {entry!r:.60}")
    return entries


def _llm(
    data: object, model_type: str, classes: list[str], wh: tuple[int, int], sent_wh: tuple[int, int]
) -> sv.Detections:
    entries = _entries(data)
    labels = [_label(e) for e in entries]
    confidence = np.array([_confidence(e) for e in entries], dtype=np.float32)
    if model_type == "google-gemini" and any("box_2d" in e for e in entries):
        detections = _gemini_native(entries, labels, wh)
    else:
        detections = sv.Detections(xyxy=_llm_xyxy(entries, wh, sent_wh).reshape(-1, 4))
    index = {name: i for i, name in enumerate(classes)}
    detections.class_id = np.array([index.get(name, -1) for name in labels], dtype=int)
    detections.confidence = confidence
    detections.data["class_name"] = np.array(labels, dtype=str)
    return detections


def _llm_xyxy(
    entries: list[dict[str, object]], wh: tuple[int, int], sent_wh: tuple[int, int]
) -> npt.NDArray[np.float64]:
    """Normalised x_min.. keys scale by the image size; pixel box_2d by image size / uploaded size."""
    width, height = wh
    rows = []
    for entry in entries:
        if "box_2d" in entry:
            x1, y1, x2, y2 = _box(entry, "box_2d")
            sx, sy = width / sent_wh[0], height / sent_wh[1]
            rows.append([x1 * sx, y1 * sy, x2 * sx, y2 * sy])
        else:
            x1, y1, x2, y2 = (_number(entry[k], k) for k in ("x_min", "y_min", "x_max", "y_max"))
            rows.append([x1 * width, y1 * height, x2 * width, y2 * height])
    return np.array(rows, dtype=np.float64)


def _gemini_native(entries: list[dict[str, object]], labels: list[str], wh: tuple[int, int]) -> sv.Detections:
    """Gemini's [ymin, xmin, ymax, xmax] in 0-1000 (and optional PNG masks), read by supervision."""
    items = []
    for entry, label in zip(entries, labels, strict=True):
        item: dict[str, object] = {"box_2d": _box(entry, "box_2d"), "label": label}
        if "mask" in entry:
            item["mask"] = entry["mask"]
        items.append(item)
    detections = sv.Detections.from_vlm(sv.VLM.GOOGLE_GEMINI_2_5, json.dumps(items), resolution_wh=wh)
    if len(detections) != len(items):
        raise VlmFormatError(f"supervision kept {len(detections)} of {len(items)} Gemini boxes")
    return detections


def _florence(data: object, task_type: str, classes: Sequence[str] | None, wh: tuple[int, int]) -> sv.Detections:
    token = FLORENCE_TASKS[task_type]
    if not isinstance(data, dict):
        raise VlmFormatError(f"Florence-2 {token} answer must be an object, got {type(data).__name__}")
    if len(data) == 1 and next(iter(data)).startswith("<"):
        if token not in data:
            raise VlmFormatError(f"expected a Florence-2 {token} answer, got {next(iter(data))}")
        data = data[token]
    detections = sv.Detections.from_vlm(sv.VLM.FLORENCE_2, {token: data}, resolution_wh=wh)
    n = len(detections)
    names = detections.data.get("class_name")
    labels = [str(v) for v in names] if names is not None and len(names) == n else [""] * n
    if task_type == "region-proposal":
        labels = ["roi"] * n
    detections.data["class_name"] = np.array(labels, dtype=str)
    detections.class_id = np.array(_florence_ids(labels, task_type, classes), dtype=int).reshape(n)
    detections.confidence = np.ones(n, dtype=np.float32)
    return detections


def _florence_ids(labels: list[str], task_type: str, classes: Sequence[str] | None) -> list[int]:
    """Indices in `classes` when given; else Roboflow's ids: md5-derived for open labels, 0 otherwise."""
    if classes is not None:
        index = {name: i for i, name in enumerate(classes)}
        return [index.get(name, -1) for name in labels]
    if task_type in ("object-detection", "phrase-grounded-object-detection"):
        return [int(hashlib.md5(name.encode()).hexdigest()[:9], 16) % 10000 for name in labels]
    if task_type == "open-vocabulary-object-detection":
        return [-1] * len(labels)
    return [0] * len(labels)


def _clip_to_image(detections: sv.Detections, wh: tuple[int, int]) -> sv.Detections:
    if len(detections) == 0:
        return detections
    xyxy = np.asarray(detections.xyxy, dtype=np.float64)
    if not np.all(np.isfinite(xyxy)):
        raise VlmFormatError("box coordinates must be finite")
    xyxy = np.concatenate([np.minimum(xyxy[:, :2], xyxy[:, 2:]), np.maximum(xyxy[:, :2], xyxy[:, 2:])], axis=1)
    detections.xyxy = sv.clip_boxes(xyxy, resolution_wh=wh).astype(np.float32)
    keep = (detections.xyxy[:, 2] > detections.xyxy[:, 0]) & (detections.xyxy[:, 3] > detections.xyxy[:, 1])
    if not np.all(keep):
        log.debug("dropped %d VLM boxes with no area inside the image", int(np.sum(~keep)))
    return cast(sv.Detections, detections[keep])


def default_prompt(classes: Sequence[str]) -> str:
    """A prompt that makes OpenAI/Gemini/Claude-style models answer in the normalised JSON format above."""
    return (
        "Detect every object of these classes in the image: " + ", ".join(classes) + ". "
        'Answer with JSON only: {"detections": [{"x_min": number, "y_min": number, "x_max": number, '
        '"y_max": number, "class_name": string, "confidence": number}]} with coordinates as fractions '
        "(0 to 1) of the image width and height, class_name exactly one of the classes above, and an "
        "empty list when there is none."
    )
