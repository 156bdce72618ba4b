"""A track's best views for snapshots people can use: the full frame of its best crop, and its best plate.

Pure helpers for EventGenerator (pipelines/tracking/events.py). "Best" is confidence x sqrt(area) there and
here: a sharp close-up beats a confident speck. The full frame is kept by reference (frames are never written
to after capture), so a live track costs at most one frame of memory, shared with every other track of it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import supervision as sv

from pipelines.models import Image

Box = tuple[float, float, float, float]  # xyxy in source-image pixels


@dataclass(frozen=True)
class BestViews:
    """What a snapshot needs: the best frame, the object's box in it, the plate there and the best plate crop."""

    image: Image  # the full frame of the track's best crop
    box: Box  # the object in `image`
    plate_box: Box | None  # its plate in `image`, when a detect stage found one on that frame
    plate: Image | None  # the best plate crop over all the track's frames (or the object's crop for a plate track)


@dataclass(frozen=True)
class Child:
    """The most telling child box of one detection (a plate in a vehicle) on one frame."""

    box: Box
    quality: float


def crop(image: Image, box: Box | list[float]) -> Image | None:
    """The box's pixels clipped to the image (a copy); None when nothing of it lies inside."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = (round(float(v)) for v in box)
    x1, y1, x2, y2 = max(0, x1), max(0, y1), min(w, x2), min(h, y2)
    return image[y1:y2, x1:x2].copy() if x2 > x1 and y2 > y1 else None


def best_child(detections: sv.Detections, row: int) -> Child | None:
    """The best box of the row's detect-stage children on this frame (children are in source-image pixels).

    Detect stages run on schedule, so most frames have none; stages that did not run here hold None.
    """
    stages: dict[str, str] = dict(detections.metadata.get("stages", {}))
    found: Child | None = None
    for name, kind in stages.items():
        column = detections.data.get(name)
        if kind != "detect" or column is None:
            continue
        children = column[row]
        if not isinstance(children, sv.Detections) or len(children) == 0:
            continue
        xyxy = children.xyxy.astype(np.float64).reshape(-1, 4)
        area = np.clip(xyxy[:, 2] - xyxy[:, 0], 0, None) * np.clip(xyxy[:, 3] - xyxy[:, 1], 0, None)
        score = children.confidence if children.confidence is not None else np.ones(len(children))
        quality = score.astype(np.float64) * np.sqrt(area)
        i = int(np.argmax(quality))
        if found is None or quality[i] > found.quality:
            x1, y1, x2, y2 = (round(float(v), 1) for v in xyxy[i])
            found = Child((x1, y1, x2, y2), float(quality[i]))
    return found


def detects_children(detections: sv.Detections) -> bool:
    """A detect stage looks for child boxes (plates) inside these detections."""
    return any(kind == "detect" for kind in dict(detections.metadata.get("stages", {})).values())


def quality(confidence: float, area: float) -> float:
    return confidence * math.sqrt(max(area, 0.0))
