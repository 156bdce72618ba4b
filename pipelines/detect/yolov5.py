"""YOLOv5 family: [N, anchors, 5 + classes] in input pixels, optionally with key points (yolov5-face style).

Row layout: cx, cy, w, h, objectness, then class scores and K key points (x, y[, confidence]) in the order
`keypoints_after_classes` says. The HyperLPR plate detector (plate_det_y5fu_*.onnx) is this family with
num_keypoints=4 (the plate corners), key points before the 2 class scores (single-row, double-row plate).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
import supervision as sv
from pydantic import Field

from pipelines.detect.base import Detector, DetectorOptions, PostOptions, candidates, cxcywh_to_xyxy
from pipelines.preprocess import Floats, Letterbox
from pipelines.runtime.base import ModelLoadError
from pipelines.runtime.inputs import format_shape


class YoloV5Options(DetectorOptions):
    """YOLOv5 defaults: RGB/255, centred letterbox padded with 114 (HyperLPR plates: pad_value 0)."""

    type: Literal["yolov5"] = Field(default="yolov5", description="Model type.")
    confidence_threshold: float = Field(default=0.4, ge=0.0, le=1.0, description="Minimum objectness x class score.")
    iou_threshold: float = Field(default=0.45, ge=0.0, le=1.0, description="IoU above which NMS drops the weaker box.")
    num_keypoints: int = Field(
        default=0, ge=0, description="Key points per detection (4 for plate corners, 5 for faces)."
    )
    keypoint_confidence: bool = Field(
        default=False, description="Each key point is (x, y, confidence) rather than (x, y)."
    )
    keypoints_after_classes: bool = Field(
        default=False, description="Key points follow the class scores (yolov7-pose) instead of preceding them "
        "(yolov5-face, HyperLPR plates).",
    )


class YoloV5(Detector):
    """YOLOv5 family: score = objectness x class score; key points go to data["keypoints"] [N, K, 2]."""

    family = "yolov5"
    Options: ClassVar[type[YoloV5Options]] = YoloV5Options

    options: YoloV5Options

    def setup(self) -> int | None:
        out = self.runtime.outputs[0]
        k, dims = self.options.num_keypoints, 3 if self.options.keypoint_confidence else 2
        columns = out.shape[2] if len(out.shape) == 3 else None
        if not isinstance(columns, int) or columns - 5 - k * dims < 1:
            raise ModelLoadError(
                f"{self.label}: output {out.name} is {format_shape(out.shape)}; the yolov5 stage with "
                f"num_keypoints={k} needs [N,anchors,5+{k}x{dims}+classes] with at least one class"
            )
        count = columns - 5 - k * dims
        first = 5 + (k * dims if not self.options.keypoints_after_classes else 0)
        self.class_columns = slice(first, first + count)
        start = 5 + (count if self.options.keypoints_after_classes else 0)
        self.keypoint_columns = slice(start, start + k * dims)
        return count

    def decode(self, outputs: list[Floats], boxes: list[Letterbox], post: PostOptions) -> list[sv.Detections]:
        k, dims = self.options.num_keypoints, 3 if self.options.keypoint_confidence else 2
        results = []
        for image, box in zip(outputs[0], boxes, strict=True):
            rows = np.flatnonzero(image[:, 4] >= post.confidence_threshold)
            confidence, class_id = self.best_class(image[rows, self.class_columns] * image[rows, 4:5], post)
            pick = candidates(confidence, post)
            rows = rows[pick]
            points: dict[str, Floats] = {}
            extra: dict[str, Floats] = {}
            if k:
                kp = image[rows, self.keypoint_columns].reshape(-1, k, dims)
                points["keypoints"] = kp[..., :2]
                if dims == 3:
                    extra["keypoint_confidence"] = kp[..., 2].astype(np.float32)
            xyxy = cxcywh_to_xyxy(image[rows, :4])
            results.append(
                self.finish(xyxy, confidence[pick], class_id[pick], box, post, points=points, extra=extra)
            )
        return results
