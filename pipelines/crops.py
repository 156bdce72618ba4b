"""Crops for second stages: padding, aspect, key-point rectification, batching, and the way back to source pixels."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

import cv2
import numpy as np
import numpy.typing as npt
import supervision as sv
from pydantic import BaseModel, ConfigDict, Field

from pipelines.preprocess import Floats, Image, as_image

log = logging.getLogger(__name__)

T = TypeVar("T")
Matrix = npt.NDArray[np.floating]  # a 3x3 float64 homography, crop pixels -> source pixels


class CropOptions(BaseModel):
    """How a parent detection becomes the picture a second-stage model sees."""

    model_config = ConfigDict(extra="forbid")

    padding: float = Field(
        default=0.0, ge=0.0, le=2.0, description="Extra context on each side, as a fraction of the box width/height."
    )
    padding_px: int = Field(
        default=0, ge=0, description="Extra context on each side, in source pixels (added to padding)."
    )
    aspect: Literal["keep", "square_pad", "square_expand"] = Field(
        default="keep",
        description="keep: the padded box as is; square_pad: pad the crop with pad_value to a centred square; "
        "square_expand: grow the shorter side of the box in the source picture to make it square.",
    )
    rectify_keypoints: bool = Field(
        default=False,
        description="When the parent carries data['keypoints'] [N,4,2] (plate corners), warp the quadrilateral "
        "to an upright rectangle instead of cutting the axis-aligned box.",
    )
    rectify_aspect: float | None = Field(
        default=None, gt=0.0, description="Width/height of the rectified crop; None keeps the corners' own proportions."
    )
    pad_value: int = Field(
        default=0, ge=0, le=255, description="Grey level used where a crop reaches outside the picture."
    )


@dataclass(frozen=True)
class Crop:
    """One crop and where it came from: `transform` maps crop pixels to source-image pixels (3x3)."""

    image: Image
    parent: int
    index: int
    transform: Matrix

    def to_source(self, points: npt.ArrayLike) -> Floats:
        """Map points [..., 2] in crop pixels to source-image pixels."""
        pts = np.asarray(points, dtype=np.float64)
        flat = pts.reshape(-1, 2)
        homo = np.hstack([flat, np.ones((len(flat), 1))]) @ self.transform.T
        mapped = homo[:, :2] / homo[:, 2:3]
        return mapped.reshape(pts.shape).astype(np.float32)

    def boxes_to_source(self, xyxy: npt.ArrayLike) -> Floats:
        """Map boxes [N,4] in crop pixels to the source-image boxes that enclose their four mapped corners."""
        boxes = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
        corners = np.stack([boxes[:, [0, 1]], boxes[:, [2, 1]], boxes[:, [2, 3]], boxes[:, [0, 3]]], axis=1)  # [N,4,2]
        mapped = self.to_source(corners)
        boxes_out: Floats = np.concatenate([mapped.min(axis=1), mapped.max(axis=1)], axis=1).astype(np.float32)
        return boxes_out


def translation(dx: float, dy: float) -> Matrix:
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])


def pad_box(xyxy: npt.NDArray[np.generic], options: CropOptions) -> npt.NDArray[np.float64]:
    """The box grown by the padding fraction and pixels, and made square when aspect is square_expand."""
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    w, h = x2 - x1, y2 - y1
    px = options.padding * w + options.padding_px
    py = options.padding * h + options.padding_px
    x1, y1, x2, y2 = x1 - px, y1 - py, x2 + px, y2 + py
    if options.aspect == "square_expand":
        cx, cy, half = (x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, y2 - y1) / 2
        x1, y1, x2, y2 = cx - half, cy - half, cx + half, cy + half
    return np.array([x1, y1, x2, y2])


def crop_box(image: Image, xyxy: npt.NDArray[np.generic], options: CropOptions) -> tuple[Image, Matrix]:
    """Cut the padded box out of `image`; returns (crop, crop-to-source 3x3 transform).

    Parts of the box outside the picture are filled with pad_value so the crop keeps the box's proportions.
    """
    h_img, w_img = image.shape[:2]
    x1, y1, x2, y2 = np.round(pad_box(xyxy, options)).astype(int)
    x2, y2 = max(x2, x1 + 1), max(y2, y1 + 1)
    cx1, cy1, cx2, cy2 = max(x1, 0), max(y1, 0), min(x2, w_img), min(y2, h_img)
    if cx2 <= cx1 or cy2 <= cy1:
        raise ValueError(f"crop box {xyxy.tolist()} lies outside the {w_img}x{h_img} picture")
    crop = image[cy1:cy2, cx1:cx2]
    border = (cy1 - y1, y2 - cy2, cx1 - x1, x2 - cx2)  # top, bottom, left, right
    if any(border):
        crop = as_image(cv2.copyMakeBorder(crop, *border, cv2.BORDER_CONSTANT, value=_fill(image, options.pad_value)))
    if options.aspect == "square_pad":
        return square_pad(crop, translation(x1, y1), options.pad_value)
    return crop, translation(x1, y1)


def square_pad(crop: Image, transform: Matrix, pad_value: int) -> tuple[Image, Matrix]:
    h, w = crop.shape[:2]
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    if side == h and side == w:
        return crop, transform
    padded = as_image(cv2.copyMakeBorder(
        crop, top, side - h - top, left, side - w - left, cv2.BORDER_CONSTANT, value=_fill(crop, pad_value)
    ))
    return padded, transform @ translation(-left, -top)


def order_corners(points: npt.ArrayLike) -> Floats:
    """Order 4 points as top-left, top-right, bottom-right, bottom-left, whatever order they come in.

    Sorting by angle around the centroid gives a clockwise cycle on screen (y points down); the cycle then
    starts at the corner nearest the top-left (smallest x+y), which survives rotations below 45 degrees.
    """
    pts = np.asarray(points, dtype=np.float32).reshape(4, 2)
    centre = pts.mean(axis=0)
    angles = np.arctan2(pts[:, 1] - centre[1], pts[:, 0] - centre[0])
    cycle = pts[np.argsort(angles)]
    start = int(np.argmin(cycle.sum(axis=1)))
    return np.roll(cycle, -start, axis=0)


def rectify(image: Image, corners: npt.ArrayLike, options: CropOptions) -> tuple[Image, Matrix]:
    """Warp the quadrilateral `corners` (any order) to an upright rectangle; returns (crop, crop-to-source)."""
    tl, tr, br, bl = quad = order_corners(corners)
    width = max(np.linalg.norm(tr - tl), np.linalg.norm(br - bl))
    height = max(np.linalg.norm(bl - tl), np.linalg.norm(br - tr))
    if options.rectify_aspect is not None:
        width = height * options.rectify_aspect
    w, h = max(round(float(width)), 1), max(round(float(height)), 1)
    px = options.padding * w + options.padding_px
    py = options.padding * h + options.padding_px
    dst = np.array([[px, py], [px + w, py], [px + w, py + h], [px, py + h]], dtype=np.float32)
    matrix = cv2.getPerspectiveTransform(quad, dst)
    size = (max(round(w + 2 * px), 1), max(round(h + 2 * py), 1))
    crop = as_image(cv2.warpPerspective(
        image,
        matrix,
        size,
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=_fill(image, options.pad_value),
    ))
    transform = np.linalg.inv(matrix.astype(np.float64))
    if options.aspect == "square_pad":
        return square_pad(crop, transform, options.pad_value)
    return crop, transform


def keypoint_corners(detections: sv.Detections) -> npt.NDArray[np.generic] | None:
    """The [N,4,2] corner key points of `detections`, or None when they carry none."""
    points = detections.data.get("keypoints")
    if points is None:
        return None
    points = np.asarray(points)
    if points.ndim != 3 or points.shape[1:] != (4, 2):
        return None
    return points


def usable_quad(corners: npt.NDArray[np.generic]) -> bool:
    """Finite corners enclosing at least one square pixel (a collapsed quad has no perspective transform)."""
    if not np.all(np.isfinite(corners)):
        return False
    return bool(abs(cv2.contourArea(order_corners(corners))) >= 1.0)


def crop_detection(image: Image, detections: sv.Detections, index: int, parent: int, options: CropOptions) -> Crop:
    """The crop of detection `index`: rectified from its corners when asked and available, else its box."""
    corners = keypoint_corners(detections) if options.rectify_keypoints else None
    if corners is not None and usable_quad(corners[index]):
        pixels, transform = rectify(image, corners[index], options)
    else:
        pixels, transform = crop_box(image, detections.xyxy[index], options)
    return Crop(image=pixels, parent=parent, index=index, transform=transform)


def detections_to_source(detections: sv.Detections, crop: Crop) -> sv.Detections:
    """Child detections found in `crop` (crop pixels) mapped to source-image pixels, key points included."""
    if len(detections) == 0:
        return detections
    data = dict(detections.data)
    corners = keypoint_corners(detections)
    if corners is not None:
        data["keypoints"] = crop.to_source(corners)
    return sv.Detections(
        xyxy=crop.boxes_to_source(detections.xyxy),
        confidence=detections.confidence,
        class_id=detections.class_id,
        tracker_id=detections.tracker_id,
        data=data,
        metadata=dict(detections.metadata),
    )


def batches(items: Sequence[T], max_batch_size: int) -> Iterator[Sequence[T]]:
    """Consecutive slices of at most `max_batch_size` items."""
    if max_batch_size < 1:
        raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
    for start in range(0, len(items), max_batch_size):
        yield items[start : start + max_batch_size]


def _fill(image: Image, value: int) -> tuple[int, ...]:
    channels = 1 if image.ndim == 2 else image.shape[2]
    return (value,) * channels


def large_enough(xyxy: npt.ArrayLike, min_size: int) -> npt.NDArray[np.bool_]:
    """Mask of boxes [N,4] whose shorter side is at least `min_size` pixels."""
    boxes = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    sides = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    return np.asarray(sides >= min_size)
