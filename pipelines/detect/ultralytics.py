"""Ultralytics YOLOv8/YOLO11 exports: raw [N, 4+classes(+key points), anchors] or end-to-end [N, dets, 6(+kp)].

The layout is read from the output shape; class names, input size and key-point shape from the metadata
Ultralytics writes into its ONNX exports (names, imgsz, kpt_shape) unless the options say otherwise.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from typing import ClassVar, Literal

import numpy as np
import supervision as sv
from pydantic import Field

from pipelines.detect.base import COCO_CLASSES, Detector, DetectorOptions, PostOptions, candidates, cxcywh_to_xyxy
from pipelines.preprocess import Floats, Letterbox
from pipelines.runtime.base import InferenceError, ModelLoadError
from pipelines.runtime.inputs import format_shape

Layout = Literal["raw", "end2end"]


class UltralyticsOptions(DetectorOptions):
    """Ultralytics defaults: RGB/255, centred letterbox padded with 114."""

    type: Literal["ultralytics"] = Field(default="ultralytics", description="Model type.")
    confidence_threshold: float = Field(default=0.25, ge=0.0, le=1.0, description="Minimum class score.")
    iou_threshold: float = Field(default=0.45, ge=0.0, le=1.0, description="IoU above which NMS drops the weaker box.")
    layout: Literal["auto", "raw", "end2end"] = Field(
        default="auto",
        description="Output layout: raw [N,4+classes,anchors] (NMS here), end2end [N,dets,6] (NMS "
        "inside the model: YOLOv10/YOLO26 or export nms=True), or auto (from the output shape).",
    )
    kpt_shape: tuple[int, int] | None = Field(
        default=None,
        description="Key points per detection and numbers per point (pose models: [17, 3]); default "
        "from the model's kpt_shape metadata, else none.",
    )


def parse_metadata_value(text: str | None) -> object:
    """A Python literal from Ultralytics metadata ("{0: 'person'}", "[640, 640]"), or None."""
    if not text:
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return None


def names_from_metadata(text: str | None) -> list[str] | None:
    value = parse_metadata_value(text)
    if isinstance(value, dict) and value:
        return [str(value[k]) for k in sorted(value)]
    if isinstance(value, list) and value:
        return [str(v) for v in value]
    return None


def layout_of(shape: Sequence[int | str | None], classes: int | None, kp_values: int) -> Layout | None:
    """raw or end2end from an output shape [N, a, b]; None when symbolic dimensions leave it open."""
    a, b = shape[1], shape[2]
    if classes is not None and a == 4 + classes + kp_values:
        return "raw"
    if b == 6 + kp_values:
        return "end2end"
    if isinstance(a, int) and (not isinstance(b, int) or a < b):
        return "raw"
    return None


class Ultralytics(Detector):
    """YOLOv8/YOLO11 (and end-to-end) detectors and pose models; pose key points go to data["keypoints"]."""

    family = "ultralytics"
    Options: ClassVar[type[UltralyticsOptions]] = UltralyticsOptions

    options: UltralyticsOptions

    def fallback_size(self) -> tuple[int, int]:
        imgsz = parse_metadata_value(self.runtime.metadata.get("imgsz"))
        if isinstance(imgsz, list) and len(imgsz) == 2:
            return (int(imgsz[1]), int(imgsz[0]))  # Ultralytics writes [height, width]
        return super().fallback_size()

    def setup(self) -> int | None:
        out = self.runtime.outputs[0]
        if len(out.shape) != 3:
            raise ModelLoadError(
                f"{self.label}: output {out.name} is {format_shape(out.shape)}; the ultralytics "
                "stage needs [N,4+classes,anchors] or [N,detections,6]"
            )
        self.meta_names = names_from_metadata(self.runtime.metadata.get("names"))
        kpt = self.options.kpt_shape or parse_metadata_value(self.runtime.metadata.get("kpt_shape"))
        self.kpt: tuple[int, int] | None = (int(kpt[0]), int(kpt[1])) if isinstance(kpt, (list, tuple)) else None
        self.kp_values = self.kpt[0] * self.kpt[1] if self.kpt else 0
        named = self.options.class_names if isinstance(self.options.class_names, list) else self.meta_names
        count = len(named) if named else None
        layout = self.options.layout
        self.layout = layout_of(out.shape, count, self.kp_values) if layout == "auto" else layout
        if self.layout == "raw" and isinstance(out.shape[1], int):
            if count is None:
                count = out.shape[1] - 4 - self.kp_values
            if out.shape[1] != 4 + count + self.kp_values or count < 1:
                raise ModelLoadError(
                    f"{self.label}: output {format_shape(out.shape)} does not hold 4 box values, "
                    f"{count} classes and {self.kp_values} key-point values per anchor"
                )
        self.count = count
        return count

    def default_names(self, count: int | None) -> Sequence[str] | None:
        if self.meta_names is not None:
            return self.meta_names
        # End-to-end exports without metadata do not reveal the class count; Ultralytics' default is COCO.
        return COCO_CLASSES if count in (None, len(COCO_CLASSES)) else None

    def decode(self, outputs: list[Floats], boxes: list[Letterbox], post: PostOptions) -> list[sv.Detections]:
        out = outputs[0]
        layout = self.layout or layout_of(out.shape, self.count, self.kp_values)
        if layout is None:
            raise InferenceError(f"{self.label}: cannot tell the layout of output {out.shape}; set layout")
        decode_one = self._decode_raw if layout == "raw" else self._decode_end2end
        return [decode_one(image, box, post) for image, box in zip(out, boxes, strict=True)]

    def _decode_raw(self, image: Floats, box: Letterbox, post: PostOptions) -> sv.Detections:
        count = len(self.class_names)
        scores = image[4 : 4 + count]
        rows = np.flatnonzero(scores.max(axis=0) >= post.confidence_threshold)
        confidence, class_id = self.best_class(scores[:, rows].T, post)
        pick = candidates(confidence, post)
        rows = rows[pick]
        points, extra = self._keypoints(image[4 + count :, rows].T)
        xyxy = cxcywh_to_xyxy(image[:4, rows].T)
        return self.finish(xyxy, confidence[pick], class_id[pick], box, post, points=points, extra=extra)

    def _decode_end2end(self, image: Floats, box: Letterbox, post: PostOptions) -> sv.Detections:
        class_id = image[:, 5].astype(np.intp)
        confidence = image[:, 4].copy()
        unknown = (class_id < 0) | (class_id >= len(self.class_names))
        if np.any(unknown & (confidence >= post.confidence_threshold)):
            raise InferenceError(
                f"{self.label}: detections of class id {int(class_id[unknown].max())} but only "
                f"{len(self.class_names)} class names; set class_names"
            )
        class_id[unknown], confidence[unknown] = 0, 0.0
        allowed = self.allowed_classes(post)
        if allowed is not None:
            confidence[~allowed[class_id]] = 0.0
        rows = candidates(confidence, post)
        points, extra = self._keypoints(image[rows, 6:])
        return self.finish(
            image[rows, :4], confidence[rows], class_id[rows], box, post, nms=False, points=points, extra=extra
        )

    def _keypoints(self, values: Floats) -> tuple[dict[str, Floats], dict[str, Floats]]:
        """Per-detection key-point values [M, K*D] -> points [M, K, 2] (+ confidences when D == 3)."""
        if not self.kpt:
            return {}, {}
        k, dims = self.kpt
        kp = values.reshape(-1, k, dims)
        extra = {"keypoint_confidence": kp[..., 2].astype(np.float32)} if dims == 3 else {}
        return {"keypoints": kp[..., :2]}, extra
