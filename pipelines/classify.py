"""Image classifiers on crops: preprocessing read from the model input, label files, softmax/sigmoid, top-k."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar, Literal

import cv2
import numpy as np
import numpy.typing as npt
from pydantic import Field, model_validator

from pipelines.models import Model, ModelOptions
from pipelines.preprocess import Floats, Image, as_image, hwc_to_tensor
from pipelines.runtime.base import ModelLoadError, model_label
from pipelines.runtime.open import open_runtime

log = logging.getLogger(__name__)

_INDEXED_LINE = re.compile(r"^\s*(\d+)\s*[,:\t ]\s*(.+?)\s*$")


class ClassifierOptions(ModelOptions):
    type: str = Field(default="classify", description="Model type: classify.")
    labels: list[str] | None = Field(default=None, description="Class names in output order.")
    labels_file: Path | None = Field(
        default=None, description="Class names file: one name per line, or 'index,name' per line (ImageNet style)."
    )
    activation: Literal["auto", "softmax", "sigmoid", "none"] = Field(
        default="auto",
        description="Applied to the model output: none when it already gives probabilities; auto takes rows "
        "in [0,1] summing to 1 as probabilities and applies softmax otherwise.",
    )
    top_k: int = Field(default=5, ge=1, description="How many best classes each result lists under 'top'.")
    multi_label: bool = Field(default=False, description="Report every class at or above `threshold` under 'classes'.")
    threshold: float = Field(default=0.5, ge=0.0, le=1.0, description="Multi-label: the confidence a class needs.")
    layout: Literal["auto", "nchw", "nhwc"] = Field(
        default="auto", description="Input tensor layout; auto finds the axis of size 1 or 3 in the model input."
    )
    input_size: tuple[int, int] | None = Field(
        default=None, description="Input (width, height); read from the model when fixed there, needed when dynamic."
    )
    channel_order: Literal["bgr", "rgb"] = Field(default="bgr", description="Channel order the model expects.")
    scale: float = Field(default=1.0, gt=0.0, description="Pixel values 0..255 are multiplied by this first.")
    mean: tuple[float, float, float] | None = Field(
        default=None, description="Per-channel mean subtracted after scaling, in the model's channel order."
    )
    std: tuple[float, float, float] | None = Field(
        default=None, description="Per-channel standard deviation divided by after the mean, model channel order."
    )
    resize: Literal["stretch", "letterbox", "center_crop"] = Field(
        default="stretch",
        description="stretch to the input size; letterbox keeps proportions and pads with pad_value; "
        "center_crop scales the shorter side to fit and cuts the middle.",
    )
    pad_value: int = Field(default=0, ge=0, le=255, description="Letterbox padding grey level.")

    @model_validator(mode="after")
    def _one_label_source(self) -> ClassifierOptions:
        if self.labels is not None and self.labels_file is not None:
            raise ValueError("give labels or labels_file, not both")
        return self


def read_labels(path: Path) -> list[str]:
    """Class names from a file: plain one-per-line, or 'index,name' lines (any order, no gaps)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ModelLoadError(f"labels file {path}: {exc}") from exc
    while lines and not lines[-1].strip():
        lines.pop()
    matches = [_INDEXED_LINE.match(line) for line in lines]
    if not lines or not all(matches):
        return [line.strip() for line in lines]
    by_index = {int(m.group(1)): m.group(2) for m in matches if m}
    missing = sorted(set(range(max(by_index) + 1)) - set(by_index))
    if missing:
        raise ModelLoadError(f"labels file {path}: indices {missing[:5]} are missing")
    return [by_index[i] for i in range(len(by_index))]


class Classifier(Model):
    """A softmax (or sigmoid) classifier run on a batch of crops in one call."""

    kind: ClassVar[Literal["classify"]] = "classify"
    Options: ClassVar[type[ModelOptions]] = ClassifierOptions

    def __init__(self, options: ModelOptions, name: str = "") -> None:
        if not isinstance(options, ClassifierOptions):
            options = ClassifierOptions.model_validate(options.model_dump())
        super().__init__(options, name)
        self.opts = options
        self.runtime = open_runtime(options.path, options.runtime, stage=self.name)
        self.input = self.runtime.inputs[0]
        self.layout, self.channels, self.size_wh = self._check_input()
        self.labels = self._load_labels()

    def _fail(self, message: str) -> ModelLoadError:
        return ModelLoadError(f"{model_label(self.name, Path(self.opts.path))}: {message}")

    def _check_input(self) -> tuple[str, int, tuple[int, int]]:
        shape = self.input.shape
        if len(shape) != 4:
            raise self._fail(f"classifier input {self.input.name!r} has shape {shape}; expected rank 4")
        layout: str = self.opts.layout
        if layout == "auto":
            layout = "nchw" if shape[1] in (1, 3) else "nhwc" if shape[3] in (1, 3) else ""
        channels = shape[1] if layout == "nchw" else shape[3] if layout == "nhwc" else None
        if not isinstance(channels, int) or channels not in (1, 3):
            raise self._fail(
                f"input {self.input.name!r} shape {shape} has no channel axis of size 1 or 3 "
                f"for layout {self.opts.layout}"
            )
        hw = [v for v in (shape[2:4] if layout == "nchw" else shape[1:3]) if isinstance(v, int) and v > 0]
        model_wh = (hw[1], hw[0]) if len(hw) == 2 else None
        wanted = self.opts.input_size
        if model_wh and wanted and tuple(wanted) != model_wh:
            raise self._fail(f"input_size {wanted} differs from the model's fixed input {model_wh}")
        size = model_wh or wanted
        if size is None:
            raise self._fail(f"input {self.input.name!r} {shape} has a dynamic size: set input_size")
        return layout, channels, (int(size[0]), int(size[1]))

    def _load_labels(self) -> list[str] | None:
        labels = self.opts.labels
        if self.opts.labels_file is not None:
            labels = read_labels(Path(self.opts.labels_file))
        output = self.runtime.outputs[0]
        dims = output.shape[1:]
        if len([d for d in dims if isinstance(d, int) and d > 1]) > 1:
            raise self._fail(
                f"classifier output {output.name!r} has shape {output.shape}; expected [N, classes] "
                "(extra axes of size 1 allowed)"
            )
        fixed = [d for d in dims if isinstance(d, int) and d > 0]
        if labels is not None and len(fixed) == len(dims) and len(labels) != math.prod(fixed):
            raise self._fail(f"{len(labels)} labels for an output of {math.prod(fixed)} classes {output.shape}")
        return labels

    def preprocess(self, crops: Sequence[Image]) -> npt.NDArray[np.generic]:
        """The input tensor for a batch of BGR crops, in the model's layout and dtype.

        Only the resize is per crop; channel order, scaling, layout and dtype are done once on the batch.
        """
        w, h = self.size_wh
        pictures = []
        for i, crop in enumerate(crops):
            if crop.size == 0:
                raise ValueError(f"stage {self.name!r}: crop {i} is empty ({crop.shape})")
            pictures.append(_fit(self._colour(crop), (w, h), self.opts.resize, self.opts.pad_value))
        batch = np.stack(pictures)
        if self.channels == 1:
            batch = batch[..., None]
        mean, std = self.opts.mean, self.opts.std
        return hwc_to_tensor(
            batch,
            "nchw" if self.layout == "nchw" else "nhwc",
            self.input.dtype,
            scale=self.opts.scale,
            mean=None if mean is None else mean[: self.channels],
            std=None if std is None else std[: self.channels],
            rgb=self.channels == 3 and self.opts.channel_order == "rgb",
        )

    def _colour(self, crop: Image) -> Image:
        """The crop as 3-channel BGR, or grey for a 1-channel model (RGB order is applied on the batch)."""
        if crop.ndim == 2:
            crop = as_image(cv2.cvtColor(crop, cv2.COLOR_GRAY2BGR))
        if self.channels == 1:
            return as_image(cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY))
        return crop

    def probabilities(self, crops: Sequence[Image]) -> Floats:
        """Class probabilities [N, classes] for all crops, one runtime call."""
        outputs = self.runtime.run({self.input.name: self.preprocess(crops)})
        scores = np.asarray(outputs[0], dtype=np.float32).reshape(len(crops), -1)
        return activate(scores, self.opts.activation)

    def classify(self, crops: Sequence[Image]) -> list[dict[str, object]]:
        """One result per crop: {"class", "class_id", "confidence", "top"} (+ "classes" when multi-label)."""
        if len(crops) == 0:
            return []
        probs = self.probabilities(crops)
        k = min(self.opts.top_k, probs.shape[1])
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        results = []
        for row, best in zip(probs, order, strict=True):
            top = [self._entry(int(i), float(row[i])) for i in best]
            result: dict[str, object] = {**top[0], "top": top}
            if self.opts.multi_label:
                hits = np.flatnonzero(row >= self.opts.threshold)
                hits = hits[np.argsort(-row[hits], kind="stable")]
                result["classes"] = [self._entry(int(i), float(row[i])) for i in hits]
            results.append(result)
        return results

    def _entry(self, class_id: int, confidence: float) -> dict[str, object]:
        name = self.labels[class_id] if self.labels and class_id < len(self.labels) else str(class_id)
        return {"class": name, "class_id": class_id, "confidence": confidence}


def activate(scores: Floats, activation: str) -> Floats:
    """Scores [N, C] to probabilities by the named activation."""
    if activation == "auto":
        looks_like_probs = (
            scores.min() >= 0.0 and scores.max() <= 1.0 and np.allclose(scores.sum(axis=1), 1.0, atol=1e-2)
        )
        activation = "none" if looks_like_probs else "softmax"
    if activation == "softmax":
        shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
        return np.asarray(shifted / shifted.sum(axis=1, keepdims=True), dtype=np.float32)
    if activation == "sigmoid":
        return np.asarray(1.0 / (1.0 + np.exp(-scores)), dtype=np.float32)
    return scores


def _fit(image: Image, size_wh: tuple[int, int], mode: str, pad_value: int) -> Image:
    w, h = size_wh
    ih, iw = image.shape[:2]
    if mode == "stretch":
        return as_image(cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR))
    fit = min if mode == "letterbox" else max
    scale = fit(w / iw, h / ih)
    nw, nh = max(round(iw * scale), 1), max(round(ih * scale), 1)
    resized = as_image(cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR))
    if mode == "center_crop":
        top, left = (nh - h) // 2, (nw - w) // 2
        return resized[top : top + h, left : left + w]
    canvas = np.full((h, w, *image.shape[2:]), pad_value, dtype=image.dtype)
    top, left = (h - nh) // 2, (w - nw) // 2
    canvas[top : top + nh, left : left + nw] = resized
    return canvas
