"""YOLOX: [N, anchors, 5 + classes] outputs (x, y, w, h, objectness, class scores) on a stride-8/16/32 grid."""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
import supervision as sv
from pydantic import Field

from pipelines.detect.base import COCO_CLASSES, Detector, DetectorOptions, PostOptions, candidates, cxcywh_to_xyxy
from pipelines.preprocess import ChannelOrder, Floats, Letterbox, Placement
from pipelines.runtime.base import ModelLoadError
from pipelines.runtime.inputs import format_shape


class YoloXOptions(DetectorOptions):
    """YOLOX defaults: BGR 0..255 without normalisation, top-left letterbox padded with 114."""

    type: Literal["yolox"] = Field(default="yolox", description="Model type.")
    letterbox: Placement = Field(default="top_left", description="Where the resized image sits in the input.")
    pad_value: int = Field(default=114, ge=0, le=255, description="Grey level of the letterbox padding.")
    channel_order: ChannelOrder = Field(default="bgr", description="Channel order the model expects.")
    scale: float = Field(default=1.0, gt=0, description="Pixel values are multiplied by this first.")
    confidence_threshold: float = Field(default=0.3, ge=0.0, le=1.0, description="Minimum objectness x class score.")
    iou_threshold: float = Field(default=0.45, ge=0.0, le=1.0, description="IoU above which NMS drops the weaker box.")
    strides: list[int] = Field(default=[8, 16, 32], min_length=1, description="Feature-map strides, in output order.")
    grid_decode: bool = Field(
        default=True, description="Outputs are grid offsets and log sizes (the usual export); false for exports made "
        "with decode_in_inference, whose boxes are already input pixels.",
    )


class YoloX(Detector):
    """YOLOX family; score = objectness x class score (both already sigmoid in the exported graph)."""

    family = "yolox"
    Options: ClassVar[type[YoloXOptions]] = YoloXOptions
    default_class_names = COCO_CLASSES
    default_side = 416

    options: YoloXOptions

    def setup(self) -> int | None:
        out = self.runtime.outputs[0]
        if len(out.shape) != 3 or not isinstance(out.shape[2], int) or out.shape[2] < 6:
            raise ModelLoadError(f"{self.label}: output {out.name} is {format_shape(out.shape)}; the yolox stage "
                                 "needs [N,anchors,5+classes]")
        self.grid, self.stride = grid_points(self.input_wh, self.options.strides, offset=0.0)
        anchors = out.shape[1]
        if isinstance(anchors, int) and anchors != len(self.grid):
            raise ModelLoadError(f"{self.label}: output has {anchors} anchors but strides {self.options.strides} "
                                 f"at {self.input_wh[0]}x{self.input_wh[1]} give {len(self.grid)}")
        return out.shape[2] - 5

    def decode(self, outputs: list[Floats], boxes: list[Letterbox], post: PostOptions) -> list[sv.Detections]:
        out = outputs[0]
        results = []
        for image, box in zip(out, boxes, strict=True):
            # score = obj * cls <= obj, so rows under the threshold on objectness alone can be skipped.
            rows = np.flatnonzero(image[:, 4] >= post.confidence_threshold)
            confidence, class_id = self.best_class(image[rows, 5:] * image[rows, 4:5], post)
            pick = candidates(confidence, post)
            rows = rows[pick]
            raw = image[rows, :4]
            if self.options.grid_decode:
                xy = (raw[:, :2] + self.grid[rows]) * self.stride[rows, None]
                wh = np.exp(raw[:, 2:4]) * self.stride[rows, None]
                raw = np.concatenate([xy, wh], axis=1)
            results.append(self.finish(cxcywh_to_xyxy(raw), confidence[pick], class_id[pick], box, post))
        return results


def grid_points(input_wh: tuple[int, int], strides: list[int], offset: float) -> tuple[Floats, Floats]:
    """Cell coordinates [A, 2] (x, y; plus `offset`) and their strides [A], level by level, row-major."""
    cells, cell_strides = [], []
    for stride in strides:
        gw, gh = -(-input_wh[0] // stride), -(-input_wh[1] // stride)
        ys, xs = np.mgrid[0:gh, 0:gw]
        cells.append(np.stack([xs.ravel(), ys.ravel()], axis=1) + offset)
        cell_strides.append(np.full(gw * gh, stride))
    return np.concatenate(cells).astype(np.float32), np.concatenate(cell_strides).astype(np.float32)
