"""A Result drawn for a person: boxes, labels with track ids, plate texts and known-list badges (supervision).

Runs only for a live viewer (daemon/web/ui/live.py), on a copy of the frame, never on the frame path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np
import supervision as sv

from daemon.frames import Result
from daemon.payload import detection_records
from pipelines.preprocess import Image

_BOXES = sv.BoxAnnotator(thickness=2)
_LABELS = sv.LabelAnnotator(text_scale=0.5, text_thickness=1, text_padding=4)
_CHILD_BOXES = sv.BoxAnnotator(thickness=1, color=sv.Color.YELLOW, color_lookup=sv.ColorLookup.INDEX)


def text_and_known(record: Mapping[str, Any]) -> tuple[str | None, Mapping[str, Any] | None]:
    """The first text read for a detection (its own OCR or a child's) and its known-list match, if any."""
    stages = record.get("stages", {})
    for value in stages.values():
        if isinstance(value, Mapping) and value.get("text"):
            known = value.get("known")
            return str(value["text"]), known if isinstance(known, Mapping) else None
    for value in stages.values():
        if isinstance(value, list):
            for child in value:
                text, known = text_and_known(child)
                if text:
                    return text, known
    return None, None


def badge(known: Mapping[str, Any] | None) -> str:
    """[name] for an allowed known plate, [DENY name] for a deny-listed one."""
    if known is None:
        return ""
    name = str(known.get("name", "known"))
    return f" [DENY {name}]" if known.get("list") == "deny" else f" [{name}]"


def label(record: Mapping[str, Any]) -> str:
    parts = [str(record.get("class", "?"))]
    if "tracker_id" in record:
        parts.append(f"#{record['tracker_id']}")
    text, known = text_and_known(record)
    if text:
        parts.append(text + badge(known))
    return " ".join(parts)


def child_boxes(detections: sv.Detections) -> sv.Detections:
    """Every second-stage detect result (e.g. plates inside vehicles), merged; in source-image pixels already."""
    stages: Mapping[str, str] = detections.metadata.get("stages", {})
    children: list[sv.Detections] = []
    for name, kind in stages.items():
        if kind == "detect" and name in detections.data:
            children.extend(c for c in detections.data[name] if isinstance(c, sv.Detections) and len(c))
    if not children:
        return sv.Detections.empty()
    return sv.Detections(xyxy=np.concatenate([c.xyxy for c in children]).astype(np.float32))


def draw(result: Result, max_width: int) -> Image:
    """The frame scaled to at most max_width, with the result drawn on it (a new array)."""
    image = result.frame.image
    scale = min(1.0, max_width / max(1, image.shape[1]))
    scaled = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR) if scale < 1.0 else image
    canvas: Image = np.array(scaled, dtype=np.uint8, copy=True)  # a copy even unscaled: the frame stays as is
    detections = result.detections
    if len(detections) == 0:
        return canvas
    boxes = sv.Detections(xyxy=detections.xyxy.astype(np.float32) * scale)
    # a track keeps its colour from frame to frame; untracked boxes are coloured by row
    colours = detections.tracker_id if detections.tracker_id is not None else np.arange(len(detections))
    lookup = np.asarray(colours, dtype=np.int64)
    labels: Sequence[str] = [label(record) for record in detection_records(detections)]
    canvas = _BOXES.annotate(canvas, boxes, custom_color_lookup=lookup)
    children = child_boxes(detections)
    if len(children):
        canvas = _CHILD_BOXES.annotate(canvas, sv.Detections(xyxy=children.xyxy * scale))
    return _LABELS.annotate(canvas, boxes, labels=list(labels), custom_color_lookup=lookup)
