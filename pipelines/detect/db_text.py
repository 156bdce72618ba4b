"""DB text detector (PP-OCR det): probability map -> text quadrilaterals (unclipped with pyclipper) and boxes.

Each detection's data["polygon"] is its rotated text quadrilateral [N, 4, 2] in source pixels, corners
top-left, top-right, bottom-right, bottom-left; xyxy is the quadrilateral's bounding box; class "text".
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import ClassVar, Literal, cast

import cv2
import numpy as np
import numpy.typing as npt
import pyclipper
import supervision as sv
from pydantic import Field
from shapely.geometry import Polygon

from pipelines.detect.base import Detector, DetectorOptions, PostOptions
from pipelines.preprocess import ChannelOrder, Floats, Image, Letterbox, Placement, letterbox_batch, multiple_of
from pipelines.runtime.base import InferenceError, ModelLoadError


class DbPostOptions(PostOptions):
    """DB post-processing (PaddleOCR names in brackets); confidence_threshold is the box score threshold."""

    confidence_threshold: float = Field(
        default=0.6, ge=0.0, le=1.0, description="Minimum mean probability inside a text box [box_thresh]."
    )
    max_candidates: int = Field(default=1000, ge=1, description="Most contours examined per image [max_candidates].")
    mask_threshold: float = Field(default=0.3, ge=0.0, le=1.0, description="Probability that counts as text [thresh].")
    unclip_ratio: float = Field(default=1.5, gt=0.0, description="How far a shrunk text region is grown back.")
    min_size: int = Field(default=3, ge=1, description="Shorter side, in map pixels, below which a box is dropped.")
    use_dilation: bool = Field(default=False, description="Dilate the text mask 2x2 first (joins broken strokes).")


class DbTextOptions(DbPostOptions, DetectorOptions):
    """PP-OCR detector defaults: BGR/255 with ImageNet mean/std, sides resized to multiples of 32."""

    type: Literal["db_text"] = Field(default="db_text", description="Model type.")
    letterbox: Placement = Field(default="stretch", description="How a picture is fitted to the input size.")
    pad_value: int = Field(default=0, ge=0, le=255, description="Grey level of any padding.")
    channel_order: ChannelOrder = Field(default="bgr", description="Channel order the model expects.")
    mean: tuple[float, float, float] = Field(default=(0.485, 0.456, 0.406), description="Per-channel mean after scale.")
    std: tuple[float, float, float] = Field(default=(0.229, 0.224, 0.225), description="Per-channel std after scale.")
    limit_side_len: int = Field(default=960, ge=32, description="Side length the picture is scaled towards.")
    limit_type: Literal["max", "min"] = Field(
        default="max", description="max: shrink so the longer side is at most limit_side_len; min: grow so the "
        "shorter side is at least limit_side_len (PP-OCRv4 in rapidocr uses min 736).",
    )


class DbText(Detector):
    """PP-OCR DB text detection; pictures of equal working size are batched together."""

    family = "db_text"
    Options: ClassVar[type[DbTextOptions]] = DbTextOptions
    Post: ClassVar[type[PostOptions]] = DbPostOptions
    default_class_names = ("text",)

    options: DbTextOptions

    def setup(self) -> int | None:
        if self.options.tiles is not None:
            raise ModelLoadError(f"{self.label}: `tiles` is not for db_text, which already sizes its input to the "
                                 "picture (raise limit_side_len for small text)")
        h, w = self.input.shape[2], self.input.shape[3]
        self.fixed_wh = (w, h) if isinstance(w, int) and isinstance(h, int) else None
        return 1

    def fallback_size(self) -> tuple[int, int]:
        side = multiple_of(self.options.limit_side_len)
        return (side, side)

    def working_size(self, image: Image) -> tuple[int, int]:
        """(width, height) the picture is resized to: scaled by the limit, sides multiples of 32."""
        if self.fixed_wh is not None:
            return self.fixed_wh
        h, w = image.shape[:2]
        limit = self.options.limit_side_len
        ratio = min(1.0, limit / max(h, w)) if self.options.limit_type == "max" else max(1.0, limit / min(h, w))
        return multiple_of(w * ratio), multiple_of(h * ratio)

    def detect(self, images: Sequence[Image], **overrides: object) -> list[sv.Detections]:
        post = self.post_options(overrides)
        post = cast(DbPostOptions, post)
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for index, image in enumerate(images):
            groups[self.working_size(image)].append(index)
        results: list[sv.Detections | None] = [None] * len(images)
        for size, members in groups.items():
            batch, boxes = letterbox_batch([images[i] for i in members], size, self.options.letterbox,
                                           self.options.pad_value)
            out = self.runtime.run({self.input.name: self.normalize(batch)})[0]
            if out.size != len(members) * size[0] * size[1]:
                raise InferenceError(f"{self.label}: output {out.shape} is not one {size[1]}x{size[0]} map per image")
            maps = np.asarray(out, dtype=np.float32).reshape(len(members), size[1], size[0])
            for index, prob, box in zip(members, maps, boxes, strict=True):
                results[index] = self.decode_map(prob, box, post)
        return [r for r in results if r is not None]

    def decode(self, outputs: list[Floats], boxes: list[Letterbox], post: PostOptions) -> list[sv.Detections]:
        post = cast(DbPostOptions, post)
        maps = outputs[0].reshape(len(boxes), *outputs[0].shape[-2:])
        return [self.decode_map(prob, box, post) for prob, box in zip(maps, boxes, strict=True)]

    def decode_map(self, prob: Floats, box: Letterbox, post: DbPostOptions) -> sv.Detections:
        quads, scores = text_quads(prob, post)
        order = np.argsort(-scores, kind="stable")[: post.max_detections]
        quads, scores = quads[order], scores[order]
        w, h = box.source_wh
        polygon = box.points_to_source(quads)
        np.clip(polygon[..., 0], 0, w, out=polygon[..., 0])
        np.clip(polygon[..., 1], 0, h, out=polygon[..., 1])
        xyxy = np.concatenate([polygon.min(axis=1), polygon.max(axis=1)], axis=1).reshape(-1, 4)
        return sv.Detections(
            xyxy=xyxy.astype(np.float32),
            confidence=scores.astype(np.float32),
            class_id=np.zeros(len(scores), dtype=int),
            data={"class_name": np.full(len(scores), self.class_names[0]), "polygon": polygon.astype(np.float32)},
        )


def text_quads(prob: Floats, post: DbPostOptions) -> tuple[Floats, Floats]:
    """DB post-processing of one probability map: quadrilaterals [M, 4, 2] (map pixels) and scores [M]."""
    binary = (prob > post.mask_threshold).astype(np.uint8)
    mask = cv2.dilate(binary, np.ones((2, 2), np.uint8)) if post.use_dilation else binary
    contours, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    quads, scores = [], []
    for contour in contours[: post.max_candidates]:
        quad, short_side = min_area_quad(contour.reshape(-1, 2))
        if short_side < post.min_size:
            continue
        score = mean_inside(prob, quad)
        if score < post.confidence_threshold:
            continue
        grown = unclip(quad, post.unclip_ratio)
        if grown is None:
            continue
        quad, short_side = min_area_quad(grown)
        if short_side < post.min_size + 2:
            continue
        quads.append(quad)
        scores.append(score)
    if not quads:
        return np.zeros((0, 4, 2), np.float32), np.zeros(0, np.float32)
    return np.stack(quads).astype(np.float32), np.asarray(scores, np.float32)


def min_area_quad(points: npt.NDArray[np.generic]) -> tuple[Floats, float]:
    """The minimum-area rectangle around `points` as corners tl, tr, br, bl, and its shorter side."""
    rect = cv2.minAreaRect(points.astype(np.float32))
    corners = cv2.boxPoints(rect)
    corners = corners[np.argsort(corners[:, 0], kind="stable")]
    left = corners[:2][np.argsort(corners[:2, 1], kind="stable")]
    right = corners[2:][np.argsort(corners[2:, 1], kind="stable")]
    return np.stack([left[0], right[0], right[1], left[1]]), float(min(rect[1]))


def mean_inside(prob: Floats, quad: Floats) -> float:
    """Mean probability inside the quadrilateral (PaddleOCR's "fast" box score)."""
    h, w = prob.shape
    limit = np.array([w - 1, h - 1])
    x0, y0 = np.clip(np.floor(quad.min(axis=0)).astype(int), 0, limit)
    x1, y1 = np.clip(np.ceil(quad.max(axis=0)).astype(int), 0, limit)
    mask = np.zeros((y1 - y0 + 1, x1 - x0 + 1), dtype=np.uint8)
    cv2.fillPoly(mask, [(quad - [x0, y0]).astype(np.int32)], 1)
    return float(np.asarray(cv2.mean(prob[y0 : y1 + 1, x0 : x1 + 1], mask)).flat[0])


def unclip(quad: Floats, ratio: float) -> Floats | None:
    """The quadrilateral grown outwards by area * ratio / perimeter (DB's shrink undone), or None."""
    poly = Polygon(quad)
    if poly.length == 0:
        return None
    offset = pyclipper.PyclipperOffset()
    offset.AddPath(quad.round().astype(np.int64).tolist(), pyclipper.JT_ROUND, pyclipper.ET_CLOSEDPOLYGON)
    paths = offset.Execute(poly.area * ratio / poly.length)
    if not paths:
        return None
    return np.asarray(max(paths, key=len), dtype=np.float32)
