"""Tiled detection for small objects: a frame cut into overlapping tiles, each run at the model's input size.

A plate 80 pixels wide in a 1920-pixel frame is 27 pixels in a 640 input, below what a plate detector finds.
Running the detector on overlapping tiles (and on the whole frame) in one batch keeps small objects at a size
the model was trained on. Tile results come back in frame pixels (each tile's Letterbox carries its offset, so
boxes and key points map like any other), a box that touches a tile's inner edge is dropped (the overlapping
neighbour sees that object whole), and the rest are merged with NMS. supervision's InferenceSlicer does the
cutting too, but it calls the model once per tile and shifts only boxes, not the key points a plate detector
returns; this runs every tile of every frame in one batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import supervision as sv
from pydantic import BaseModel, ConfigDict, Field

from pipelines.preprocess import Image, Letterbox, Placement, placement

Window = tuple[int, int, int, int]  # x0, y0, x1, y1 in frame pixels
EDGE_PX = 2.0  # a box side this close to a tile's inner edge counts as cut by it


class TileOptions(BaseModel):
    """How a frame is cut into tiles before detection."""

    model_config = ConfigDict(extra="forbid")

    grid: tuple[int, int] = Field(
        default=(2, 2), description="Tiles across and down, e.g. [2, 1] for two side by side (each 1..8)."
    )
    overlap: float = Field(
        default=0.25, ge=0.0, le=0.5,
        description="Share of a tile's width (height) that it overlaps its neighbour; it must exceed the largest "
        "object's share of a tile, or that object is cut in every tile that holds it.",
    )
    full_frame: bool = Field(
        default=True, description="Also run the whole frame (large objects that no tile holds whole)."
    )

    def model_post_init(self, _context: object) -> None:
        if not all(1 <= n <= 8 for n in self.grid):
            raise ValueError(f"tiles.grid {list(self.grid)}: expected [across, down], each 1..8")


def _spans(length: int, count: int, overlap: float) -> list[tuple[int, int]]:
    """`count` spans of equal size covering 0..length, each overlapping the next by `overlap` of its size."""
    if count == 1:
        return [(0, length)]
    size = length / (count - overlap * (count - 1))
    step = size * (1.0 - overlap)
    return [(round(i * step), min(length, round(i * step + size))) for i in range(count)]


def windows(source_wh: tuple[int, int], options: TileOptions) -> list[Window]:
    """The tiles of a frame (row by row), then the whole frame when `full_frame` is set."""
    (w, h), (across, down) = source_wh, options.grid
    tiles = [(x0, y0, x1, y1) for y0, y1 in _spans(h, down, options.overlap)
             for x0, x1 in _spans(w, across, options.overlap)]
    if options.full_frame and tiles != [(0, 0, w, h)]:
        tiles.append((0, 0, w, h))
    return tiles


def tile_letterbox(window: Window, source_wh: tuple[int, int], input_wh: tuple[int, int], mode: Placement) -> Letterbox:
    """Where a tile lands in the model input, expressed against the whole frame (input = frame * s + o)."""
    x0, y0, x1, y1 = window
    inner = placement((x1 - x0, y1 - y0), input_wh, mode)
    (sx, sy), (ox, oy) = inner.scale_xy, inner.offset_xy
    return Letterbox((sx, sy), (ox - x0 * sx, oy - y0 * sy), source_wh)


@dataclass(frozen=True)
class TiledBatch:
    """Every tile of every frame, in one list, and which frame and window each came from."""

    crops: list[Image]
    owners: list[int]
    windows: list[Window]


def cut(images: Sequence[Image], options: TileOptions) -> TiledBatch:
    """The tiles of each image as views (no copies)."""
    crops: list[Image] = []
    owners: list[int] = []
    spans: list[Window] = []
    for index, image in enumerate(images):
        for window in windows((image.shape[1], image.shape[0]), options):
            x0, y0, x1, y1 = window
            crops.append(image[y0:y1, x0:x1])
            owners.append(index)
            spans.append(window)
    return TiledBatch(crops, owners, spans)


def _uncut(detections: sv.Detections, window: Window, source_wh: tuple[int, int]) -> sv.Detections:
    """Drop boxes that touch an edge of the tile that is not an edge of the frame."""
    if len(detections) == 0:
        return detections
    x0, y0, x1, y1 = window
    w, h = source_wh
    xyxy = detections.xyxy
    cut_box = np.zeros(len(detections), dtype=bool)
    if x0 > 0:
        cut_box |= xyxy[:, 0] <= x0 + EDGE_PX
    if y0 > 0:
        cut_box |= xyxy[:, 1] <= y0 + EDGE_PX
    if x1 < w:
        cut_box |= xyxy[:, 2] >= x1 - EDGE_PX
    if y1 < h:
        cut_box |= xyxy[:, 3] >= y1 - EDGE_PX
    return _rows(detections, np.flatnonzero(~cut_box))


def _rows(detections: sv.Detections, index: npt.NDArray[np.intp]) -> sv.Detections:
    """Detections[index], typed (supervision's __getitem__ is typed as a union of what a key can pick)."""
    picked = detections[index]
    if not isinstance(picked, sv.Detections):
        raise TypeError(f"indexing Detections by rows gave {type(picked).__name__}")
    return picked


def merge(
    per_tile: Sequence[sv.Detections], batch: TiledBatch, images: Sequence[Image],
    iou_threshold: float, class_agnostic: bool, max_detections: int,
) -> list[sv.Detections]:
    """Per frame: its tiles' detections without cut boxes, merged, NMS, best `max_detections` first."""
    out: list[sv.Detections] = []
    for index, image in enumerate(images):
        wh = (image.shape[1], image.shape[0])
        parts = [_uncut(d, batch.windows[i], wh) for i, d in enumerate(per_tile) if batch.owners[i] == index]
        merged = sv.Detections.merge(parts)
        if len(merged) > 1:
            merged = merged.with_nms(threshold=iou_threshold, class_agnostic=class_agnostic)
        if merged.confidence is not None and len(merged) > max_detections:
            merged = _rows(merged, np.argsort(-merged.confidence, kind="stable")[:max_detections])
        out.append(merged)
    return out
