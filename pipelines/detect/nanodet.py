"""NanoDet: per-stride class scores and box-side distributions (cls_pred_stride_S / dis_pred_stride_S).

Also reads NanoDet-Plus style single-output exports [N, anchors, classes + 4*(reg_max+1)], strides
concatenated in order. A side's distance is the expected value of the softmax over its bins, x stride.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
import supervision as sv
from pydantic import Field

from pipelines.detect.base import COCO_CLASSES, Detector, DetectorOptions, PostOptions, candidates, output_index
from pipelines.detect.yolox import grid_points
from pipelines.preprocess import ChannelOrder, Floats, Letterbox, Placement
from pipelines.runtime.base import InferenceError, ModelLoadError
from pipelines.runtime.inputs import format_shape


class NanoDetOptions(DetectorOptions):
    """NanoDet defaults: BGR, centred letterbox (aspect kept, black padding), NanoDet's mean/std."""

    type: Literal["nanodet"] = Field(default="nanodet", description="Model type.")
    # Centred letterbox scores nanodet_m_320 buses 0.81/0.79/0.77 where a plain resize gives 0.76/0.62/0.55.
    letterbox: Placement = Field(default="center", description="Where the resized image sits in the input.")
    pad_value: int = Field(default=0, ge=0, le=255, description="Grey level of the letterbox padding.")
    channel_order: ChannelOrder = Field(default="bgr", description="Channel order the model expects.")
    scale: float = Field(default=1.0, gt=0, description="Pixel values are multiplied by this first.")
    mean: tuple[float, float, float] = Field(default=(103.53, 116.28, 123.675), description="Per-channel mean (BGR).")
    std: tuple[float, float, float] = Field(default=(57.375, 57.12, 58.395), description="Per-channel std (BGR).")
    confidence_threshold: float = Field(default=0.35, ge=0.0, le=1.0, description="Minimum class score.")
    iou_threshold: float = Field(default=0.6, ge=0.0, le=1.0, description="IoU above which NMS drops the weaker box.")
    strides: list[int] = Field(default=[8, 16, 32], min_length=1, description="Feature-map strides, in output order.")
    reg_max: int = Field(default=7, ge=1, description="Distribution bins per box side minus one (NanoDet: 7).")
    center_offset: float = Field(
        default=0.5, ge=0.0, le=1.0, description="Anchor point inside its cell, in cells: 0.5 for NanoDet-m (GFL "
        "head, cell centres), 0 for NanoDet-Plus.",
    )


class NanoDet(Detector):
    """NanoDet family; class scores are already sigmoid in the exported graph."""

    family = "nanodet"
    Options: ClassVar[type[NanoDetOptions]] = NanoDetOptions
    default_class_names = COCO_CLASSES
    default_side = 320

    options: NanoDetOptions

    def setup(self) -> int | None:
        strides = self.options.strides
        cls_idx = [output_index(self.runtime, f"cls_pred_stride_{s}") for s in strides]
        dis_idx = [output_index(self.runtime, f"dis_pred_stride_{s}") for s in strides]
        self.bins = self.options.reg_max + 1
        self.grid, self.stride = grid_points(self.input_wh, strides, offset=self.options.center_offset)
        if None not in cls_idx and None not in dis_idx:
            self.cls_idx = [int(i) for i in cls_idx if i is not None]
            self.dis_idx = [int(i) for i in dis_idx if i is not None]
            count = self.runtime.outputs[self.cls_idx[0]].shape[-1]
        elif len(self.runtime.outputs) == 1:
            self.cls_idx = self.dis_idx = []
            columns = self.runtime.outputs[0].shape[-1]
            count = columns - 4 * self.bins if isinstance(columns, int) else None
        else:
            names = [o.name for o in self.runtime.outputs]
            raise ModelLoadError(f"{self.label}: outputs {names}; the nanodet stage needs cls_pred_stride_S and "
                                 f"dis_pred_stride_S for strides {strides}, or one concatenated output")
        if not isinstance(count, int) or count < 1:
            shapes = [format_shape(o.shape) for o in self.runtime.outputs]
            raise ModelLoadError(f"{self.label}: cannot read the class count from outputs {shapes} "
                                 f"with reg_max={self.options.reg_max}")
        anchors = [self.runtime.outputs[i].shape[-2] for i in (self.cls_idx or [0])]
        if all(isinstance(a, int) for a in anchors) and sum(int(a or 0) for a in anchors) != len(self.grid):
            raise ModelLoadError(f"{self.label}: outputs hold {sum(int(a or 0) for a in anchors)} anchors but "
                                 f"strides {strides} at {self.input_wh[0]}x{self.input_wh[1]} give {len(self.grid)}")
        return count

    def split(self, outputs: list[Floats], batch: int) -> tuple[Floats, Floats]:
        """(class scores [B, A, C], distributions [B, A, 4*bins]) over all strides."""
        if self.cls_idx:
            cls = np.concatenate([outputs[i].reshape(batch, -1, outputs[i].shape[-1]) for i in self.cls_idx], 1)
            dis = np.concatenate([outputs[i].reshape(batch, -1, 4 * self.bins) for i in self.dis_idx], 1)
        else:
            out = outputs[0].reshape(batch, -1, outputs[0].shape[-1])
            cls, dis = out[..., : -4 * self.bins], out[..., -4 * self.bins :]
        if cls.shape[1] != len(self.grid):
            raise InferenceError(f"{self.label}: outputs hold {cls.shape[1]} anchors, expected {len(self.grid)}")
        return cls, dis

    def decode(self, outputs: list[Floats], boxes: list[Letterbox], post: PostOptions) -> list[sv.Detections]:
        cls, dis = self.split(outputs, len(boxes))
        project = np.arange(self.bins, dtype=np.float32)
        results = []
        for scores, dist, box in zip(cls, dis, boxes, strict=True):
            rows = np.flatnonzero(scores.max(axis=1) >= post.confidence_threshold)
            confidence, class_id = self.best_class(scores[rows], post)
            pick = candidates(confidence, post)
            rows = rows[pick]
            logits = dist[rows].reshape(-1, 4, self.bins)
            weights = np.exp(logits - logits.max(axis=-1, keepdims=True))
            sides = (weights @ project) / weights.sum(axis=-1) * self.stride[rows, None]  # left, top, right, bottom
            centre = self.grid[rows] * self.stride[rows, None]
            xyxy = np.concatenate([centre - sides[:, :2], centre + sides[:, 2:]], axis=1)
            results.append(self.finish(xyxy, confidence[pick], class_id[pick], box, post))
        return results
