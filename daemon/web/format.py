"""Roboflow's response shapes for the inference API: detections, classifications, OCR text, CLIP vectors."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from typing import Any, TypeAlias

import cv2
import numpy as np
import numpy.typing as npt
import supervision as sv

from pipelines.labels import class_names
from pipelines.preprocess import Image

Vectors: TypeAlias = npt.NDArray[np.float32]  # one embedding per row


def image_info(image: Image) -> dict[str, int]:
    return {"width": int(image.shape[1]), "height": int(image.shape[0])}


def _base(image: Image, seconds: float) -> dict[str, Any]:
    return {
        "inference_id": str(uuid.uuid4()),
        "frame_id": None,
        "time": round(seconds, 6),
        "image": image_info(image),
    }


def predictions(detections: sv.Detections) -> list[dict[str, Any]]:
    """Roboflow ObjectDetectionPrediction dicts: centre x, y, width, height in source pixels."""
    names = class_names(detections).tolist()
    keypoints = detections.data.get("keypoints")
    out = []
    for i in range(len(detections)):
        x1, y1, x2, y2 = (float(v) for v in detections.xyxy[i])
        item: dict[str, Any] = {
            "x": round((x1 + x2) / 2, 2),
            "y": round((y1 + y2) / 2, 2),
            "width": round(x2 - x1, 2),
            "height": round(y2 - y1, 2),
            "confidence": round(float(detections.confidence[i]), 5) if detections.confidence is not None else 1.0,
            "class": names[i],
            "class_confidence": None,
            "class_id": int(detections.class_id[i]) if detections.class_id is not None else 0,
            "tracker_id": int(detections.tracker_id[i]) if detections.tracker_id is not None else None,
            "detection_id": str(uuid.uuid4()),
            "parent_id": None,
        }
        if keypoints is not None:
            item["keypoints"] = [
                {"x": round(float(px), 2), "y": round(float(py), 2), "confidence": 1.0, "class_id": k, "class": str(k)}
                for k, (px, py) in enumerate(np.asarray(keypoints[i]).reshape(-1, 2))
            ]
        out.append(item)
    return out


def detection_response(
    image: Image, detections: sv.Detections, seconds: float, visualization: str | None = None
) -> dict[str, Any]:
    return {**_base(image, seconds), "visualization": visualization, "predictions": predictions(detections)}


def visualize(image: Image, detections: sv.Detections, labels: bool, stroke: int) -> str:
    """The picture with its boxes (and class labels) drawn, as base64 JPEG (Roboflow's `visualization`)."""
    canvas = sv.BoxAnnotator(thickness=stroke).annotate(image.copy(), detections)
    if labels and len(detections):
        names = class_names(detections).tolist()
        canvas = sv.LabelAnnotator().annotate(canvas, detections, labels=names)
    ok, encoded = cv2.imencode(".jpg", canvas)
    if not ok:
        raise ValueError("cannot encode the visualization as JPEG")
    return base64.b64encode(encoded.tobytes()).decode("ascii")


def classification_response(
    image: Image, result: dict[str, Any], seconds: float, confidence: float | None
) -> dict[str, Any]:
    """Single-label: predictions best first plus top/confidence. Multi-label: the dict form Roboflow uses."""
    top = result.get("top") or [{k: result[k] for k in ("class", "class_id", "confidence")}]
    entries: list[dict[str, Any]] = [
        {"class": str(t["class"]), "class_id": int(t["class_id"]), "confidence": round(float(t["confidence"]), 5)}
        for t in top
    ]
    base = {**_base(image, seconds), "visualization": None, "parent_id": None}
    if "classes" not in result:
        return {**base, "predictions": entries, "top": str(result["class"]),
                "confidence": round(float(result["confidence"]), 5)}
    hits = result["classes"]
    if confidence is not None:
        hits = [e for e in entries if e["confidence"] >= confidence]
    return {
        **base,
        "predictions": {e["class"]: {"confidence": e["confidence"], "class_id": e["class_id"]} for e in entries},
        "predicted_classes": [str(h["class"]) for h in hits],
    }


def reading_order(detections: sv.Detections) -> list[int]:
    """Indices of text boxes in reading order: rows (by centre line, row height tolerance), then left to right."""
    if len(detections) == 0:
        return []
    xyxy = detections.xyxy
    heights = np.maximum(xyxy[:, 3] - xyxy[:, 1], 1.0)
    row_height = float(np.median(heights))
    centre_y = (xyxy[:, 1] + xyxy[:, 3]) / 2
    rows = np.floor(centre_y / (row_height * 0.75))
    return [int(i) for i in np.lexsort((xyxy[:, 0], rows))]


def ocr_response(
    image: Image, texts: Sequence[dict[str, Any]], boxes: sv.Detections | None, seconds: float,
    with_boxes: bool,
) -> dict[str, Any]:
    """Roboflow's OCR response: `result` is the text; `predictions` the word boxes when asked for."""
    order = reading_order(boxes) if boxes is not None else list(range(len(texts)))
    words = [str(texts[i].get("text") or "") for i in order]
    response: dict[str, Any] = {
        "result": " ".join(w for w in words if w),
        "time": round(seconds, 6),
        "image": image_info(image),
        "parent_id": None,
    }
    if with_boxes:
        response["predictions"] = []
        if boxes is not None:
            preds = predictions(boxes)
            for i in order:
                preds[i]["class"] = str(texts[i].get("text") or "")
                preds[i]["text_confidence"] = round(float(texts[i].get("confidence", 0.0)), 5)
                response["predictions"].append(preds[i])
    return response


def embedding_response(vectors: Vectors, seconds: float) -> dict[str, Any]:
    return {
        "inference_id": str(uuid.uuid4()),
        "frame_id": None,
        "time": round(seconds, 6),
        "embeddings": [[float(v) for v in row] for row in np.asarray(vectors, dtype=np.float32)],
    }


def cosine(subject: Vectors, prompts: Vectors) -> list[float]:
    a = np.asarray(subject, dtype=np.float64).reshape(-1)
    b = np.asarray(prompts, dtype=np.float64).reshape(len(prompts), -1)
    denom = np.linalg.norm(a) * np.linalg.norm(b, axis=1)
    sims = (b @ a) / np.where(denom == 0, 1.0, denom)
    return [float(s) for s in sims]
