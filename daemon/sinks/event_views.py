"""Snapshots people can use, for one event: the full frame with the boxes drawn (supervision's annotators,
labels with track id, class and plate text), the crop of the tracked object and the crop of its best plate.

Files are named from the event alone: <dir>/<camera>/<event_id>/{snapshot,crop,plate}.jpg.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import supervision as sv

from daemon.history.rows import EventFiles
from daemon.sinks.jpeg import write_jpeg
from pipelines.models import Image
from pipelines.tracking.best import BestViews

_SAFE = re.compile(r"^[A-Za-z0-9_.-]{1,200}$")


def event_folder(root: Path, camera: str, event_id: str) -> Path:
    """<root>/<camera>/<event_id>; ids that could leave the folder (/, .., empty) are refused."""
    for what, name in (("camera", camera), ("event_id", event_id)):
        if not _SAFE.match(name) or name in (".", ".."):
            raise ValueError(f"event {what} {name!r}: expected letters, digits, '_', '.', '-' (used as a folder)")
    return root / camera / event_id


def plate_text(payload: Mapping[str, object]) -> str | None:
    """The first stage consensus with a text (the plate), with its known-list name when it has one."""
    stages = payload.get("stages")
    if not isinstance(stages, Mapping):
        return None
    for consensus in stages.values():
        if isinstance(consensus, Mapping) and isinstance(consensus.get("text"), str):
            known = consensus.get("known")
            name = known.get("name") if isinstance(known, Mapping) else None
            return f"{consensus['text']} [{name}]" if name else str(consensus["text"])
    return None


def annotate(views: BestViews, payload: Mapping[str, object]) -> Image:
    """A copy of the best frame with the object's box (and its plate's) and their labels drawn."""
    boxes = [views.box] + ([views.plate_box] if views.plate_box is not None else [])
    detections = sv.Detections(xyxy=np.asarray(boxes, np.float32), class_id=np.arange(len(boxes)))
    text = plate_text(payload)
    labels = [" ".join(str(p) for p in (f"#{payload.get('track_id')}", payload.get("label"), text) if p)]
    if views.plate_box is not None:
        labels.append(text or "plate")
    scale = max(0.5, views.image.shape[1] / 1280)  # readable on a 4K frame, not huge on a small one
    boxed = sv.BoxAnnotator(thickness=max(2, round(2 * scale))).annotate(views.image.copy(), detections)
    # smart_position keeps a label on the picture when its box touches the top edge
    labelled = sv.LabelAnnotator(text_scale=0.6 * scale, text_thickness=max(1, round(scale)), smart_position=True)
    return np.asarray(labelled.annotate(boxed, detections, labels=labels), dtype=np.uint8)


def write_views(
    folder: Path, payload: Mapping[str, object], views: BestViews | None, best_crop: object, quality: int
) -> EventFiles:
    """Write what the event has of snapshot.jpg, crop.jpg and plate.jpg; the paths written."""
    snapshot = crop = plate = None
    if views is not None:
        snapshot = write_jpeg(folder / "snapshot.jpg", annotate(views, payload), quality)
        if views.plate is not None and views.plate.size:
            plate = write_jpeg(folder / "plate.jpg", views.plate, quality)
    if isinstance(best_crop, np.ndarray) and best_crop.size:
        crop = write_jpeg(folder / "crop.jpg", best_crop, quality)
    return EventFiles(snapshot=snapshot, crop=crop, plate=plate)
