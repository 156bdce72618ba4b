"""What every detector family shares: Options, class names, preprocessing, candidate selection, NMS, output."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import numpy.typing as npt
import supervision as sv
from pydantic import BaseModel, ConfigDict, Field

from pipelines.detect.tiles import TileOptions, cut, merge, tile_letterbox
from pipelines.models import Model, ModelOptions
from pipelines.preprocess import ChannelOrder, Floats, Image, Letterbox, Normalizer, Placement, letterbox_batch
from pipelines.runtime.base import ModelLoadError, RuntimeLike, TensorInfo, model_label
from pipelines.runtime.inputs import check_input
from pipelines.runtime.open import open_runtime
from pipelines.runtime.parallel import map_parts

# fmt: off
COCO_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)
# fmt: on


class PostOptions(BaseModel):
    """Post-processing settings, named as Roboflow's InferenceConfiguration names them; per-call overridable."""

    model_config = ConfigDict(extra="forbid")

    confidence_threshold: float = Field(default=0.4, ge=0.0, le=1.0, description="Minimum detection confidence.")
    iou_threshold: float = Field(default=0.45, ge=0.0, le=1.0, description="IoU above which NMS drops the weaker box.")
    class_filter: list[str] | None = Field(
        default=None, description="Keep only these class names (None keeps all). Unknown names are an error."
    )
    class_agnostic_nms: bool = Field(default=False, description="Suppress overlapping boxes across classes too.")
    max_detections: int = Field(default=300, ge=1, description="Most detections returned per image, best first.")
    max_candidates: int = Field(default=3000, ge=1, description="Most candidates (best first) that enter NMS.")


class DetectorOptions(PostOptions, ModelOptions):
    """Options every detector family has; each family's Options sets its own defaults."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    input_size: tuple[int, int] | None = Field(
        default=None, description="Model input (width, height). Read from the model when fixed; required or "
        "defaulted (multiple of 32) when the model's input size is dynamic.",
    )
    letterbox: Placement = Field(
        default="center", description="Where the resized image sits in the input: top_left or center (aspect "
        "kept, rest padded), or stretch (plain resize to the input size, aspect not kept).",
    )
    pad_value: int = Field(default=114, ge=0, le=255, description="Grey level of the letterbox padding.")
    channel_order: ChannelOrder = Field(default="rgb", description="Channel order the model expects: bgr or rgb.")
    scale: float = Field(default=1 / 255, gt=0, description="Pixel values are multiplied by this first (1/255 or 1).")
    mean: tuple[float, float, float] = Field(
        default=(0.0, 0.0, 0.0), description="Per-channel mean subtracted after scaling, in the model's channel order."
    )
    std: tuple[float, float, float] = Field(
        default=(1.0, 1.0, 1.0), description="Per-channel divisor applied after the mean, in the model's channel order."
    )
    class_names: list[str] | Path | None = Field(
        default=None, description="Class names: a list, or a labels file (one name per line, or 'index,name'). "
        "Default: the family's built-in names (COCO-80 where the model has 80 classes), else class_<i>.",
    )
    tiles: TileOptions | None = Field(
        default=None, description="Cut each frame into overlapping tiles, all run in one batch, for objects too "
        "small at the model's input size (distant plates); unset: the whole frame only.",
    )


def read_labels(path: Path) -> list[str]:
    """Names from a labels file: one per line, optionally 'index,name' (as imagenet_labels.txt is)."""
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except OSError as exc:
        raise ModelLoadError(f"labels file {path}: {exc.strerror or exc}") from exc
    names = []
    for line in filter(None, lines):
        head, sep, tail = line.partition(",")
        names.append(tail.strip() if sep and head.strip().isdigit() else line)
    return names


def resolve_class_names(
    spec: Sequence[str] | Path | None, count: int | None, default: Sequence[str] | None, label: str
) -> list[str]:
    """The class names for a model with `count` classes (None when the output does not say)."""
    if isinstance(spec, Path):
        names = read_labels(spec)
    elif spec is not None:
        names = [str(n) for n in spec]
    elif default is not None and (count is None or len(default) == count):
        names = list(default)
    else:
        names = [f"class_{i}" for i in range(count or 0)]
    if count is not None and len(names) != count:
        raise ModelLoadError(f"{label}: class_names has {len(names)} names but the model outputs {count} classes")
    return names


class Detector(Model):
    """A detector: preprocess a batch, run it once, and decode it into sv.Detections in source pixels.

    Families implement `decode()` and may override `setup()` (check outputs, return the class count).
    """

    kind: ClassVar[Literal["detect"]] = "detect"
    family: ClassVar[str] = "detect"
    Options: ClassVar[type[DetectorOptions]] = DetectorOptions
    Post: ClassVar[type[PostOptions]] = PostOptions
    default_class_names: ClassVar[Sequence[str] | None] = None
    default_side: ClassVar[int] = 640

    options: DetectorOptions

    def __init__(self, options: ModelOptions, name: str = "") -> None:
        if not isinstance(options, self.Options):
            raise TypeError(f"{type(self).__name__} needs {self.Options.__name__}, got {type(options).__name__}")
        super().__init__(options, name)
        self.runtime: RuntimeLike = open_runtime(options.path, options.runtime, stage=self.name)
        self.label = model_label(self.name, Path(options.path))
        self.input: TensorInfo = check_input(self.runtime, self.family)
        self.input_wh = self.input_size()
        self.normalize = Normalizer(options.channel_order, options.scale, options.mean, options.std, self.input.dtype)
        self.post: PostOptions = self.Post.model_validate(options.model_dump(include=set(self.Post.model_fields)))
        count = self.setup()
        self.class_names = resolve_class_names(options.class_names, count, self.default_names(count), self.label)
        self._names_array = np.array(self.class_names, dtype=str)
        self._allowed: dict[tuple[str, ...], npt.NDArray[np.bool_]] = {}
        self.allowed_classes(self.post)

    def setup(self) -> int | None:
        """Check the model's outputs against the family's layout; return the number of classes if known."""
        return None

    def default_names(self, count: int | None) -> Sequence[str] | None:
        if self.default_class_names is not None:
            return self.default_class_names
        return COCO_CLASSES if count == len(COCO_CLASSES) else None

    def input_size(self) -> tuple[int, int]:
        """(width, height) of the model input: the model's own when fixed, else input_size or the default."""
        h, w = self.input.shape[2], self.input.shape[3]
        wanted = self.options.input_size
        if isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0:
            if wanted is not None and tuple(wanted) != (w, h):
                raise ModelLoadError(f"{self.label}: input_size {list(wanted)} but the model's input is fixed at "
                                     f"{w}x{h}; remove input_size or export the model at that size")
            return (w, h)
        size = tuple(wanted) if wanted is not None else self.fallback_size()
        if size[0] % 32 or size[1] % 32 or min(size) <= 0:
            raise ModelLoadError(f"{self.label}: input_size {list(size)} must be positive multiples of 32")
        return (int(size[0]), int(size[1]))

    def fallback_size(self) -> tuple[int, int]:
        """(width, height) for a model with a dynamic input size and no input_size option."""
        return (self.default_side, self.default_side)

    def post_options(self, overrides: Mapping[str, object]) -> PostOptions:
        """The post-processing options with per-call overrides applied (validated: unknown keys are errors)."""
        if not overrides:
            return self.post
        merged = self.Post.model_validate({**self.post.model_dump(), **overrides})
        self.allowed_classes(merged)
        return merged

    def allowed_classes(self, post: PostOptions) -> npt.NDArray[np.bool_] | None:
        """Boolean mask over classes that class_filter keeps, or None when nothing is filtered."""
        if not post.class_filter:
            return None
        key = tuple(post.class_filter)
        if key not in self._allowed:
            unknown = sorted(set(key) - set(self.class_names))
            if unknown:
                raise ValueError(f"{self.label}: class_filter names unknown classes {unknown}; the model knows "
                                 f"{self.class_names[:20]}{' ...' if len(self.class_names) > 20 else ''}")
            self._allowed[key] = np.isin(self._names_array, key)
        return self._allowed[key]

    def detect(self, images: Sequence[Image], **overrides: object) -> list[sv.Detections]:
        """Detections per image, in source-image pixels; `overrides` replace post-processing options."""
        post = self.post_options(overrides)
        if len(images) == 0:
            return []
        tiles = self.options.tiles
        if tiles is None:
            return self._run(images, post)
        batch = cut(images, tiles)
        placed = [
            tile_letterbox(window, (images[owner].shape[1], images[owner].shape[0]), self.input_wh,
                           self.options.letterbox)
            for window, owner in zip(batch.windows, batch.owners, strict=True)
        ]
        per_tile = self._run(batch.crops, post, placed)
        return merge(per_tile, batch, images, post.iou_threshold, post.class_agnostic_nms, post.max_detections)

    def _run(self, images: Sequence[Image], post: PostOptions, placed: list[Letterbox] | None = None
             ) -> list[sv.Detections]:
        """One batch through the model, in parts side by side on a CPU box (letterbox, session and decoding all
        split: cutting only the session left a core idle while the other prepared and decoded)."""
        if self.runtime.parallel_runs < 2 or len(images) < 2:
            return self._run_part(images, post, placed)

        def part(rows: Sequence[int]) -> list[sv.Detections]:
            return self._run_part([images[i] for i in rows], post, [placed[i] for i in rows] if placed else None)

        return map_parts(part, range(len(images)), self.runtime.parallel_runs)

    def _run_part(self, images: Sequence[Image], post: PostOptions, placed: list[Letterbox] | None
                  ) -> list[sv.Detections]:
        """`placed` maps the outputs to source pixels when the images are tiles."""
        batch, boxes = letterbox_batch(images, self.input_wh, self.options.letterbox, self.options.pad_value)
        outputs = self.runtime.run({self.input.name: self.normalize(batch)})
        return self.decode([np.asarray(o, dtype=np.float32) for o in outputs], placed or boxes, post)

    @abstractmethod
    def decode(self, outputs: list[Floats], boxes: list[Letterbox], post: PostOptions) -> list[sv.Detections]:
        """Raw outputs of one batch -> one sv.Detections per image."""

    def best_class(self, scores: Floats, post: PostOptions) -> tuple[Floats, npt.NDArray[np.intp]]:
        """(confidence, class_id) of the best allowed class per row of `scores` [A, classes]."""
        allowed = self.allowed_classes(post)
        if allowed is not None:
            scores = np.where(allowed, scores, 0.0)
        class_id = scores.argmax(axis=-1)
        return np.take_along_axis(scores, class_id[..., None], axis=-1)[..., 0], class_id

    def finish(
        self,
        xyxy: Floats,
        confidence: Floats,
        class_id: npt.NDArray[np.integer],
        box: Letterbox,
        post: PostOptions,
        *,
        nms: bool = True,
        points: Mapping[str, Floats] | None = None,
        extra: Mapping[str, Floats] | None = None,
    ) -> sv.Detections:
        """Candidates (sorted best first, model-input pixels) -> NMS -> max_detections -> source pixels.

        `points` arrays ([M, K, 2], model-input pixels) are mapped to source pixels like the boxes;
        `extra` arrays ([M, ...]) are carried as they are.
        """
        keep: npt.NDArray[np.intp] = np.arange(len(xyxy))
        if nms and len(xyxy) > 1:
            labels = np.zeros_like(confidence) if post.class_agnostic_nms else class_id
            preds = np.column_stack([xyxy, confidence, labels]).astype(np.float32)
            keep = np.flatnonzero(sv.box_non_max_suppression(preds, post.iou_threshold))
        source_xyxy = box.boxes_to_source(xyxy[keep])
        visible = (source_xyxy[:, 2] > source_xyxy[:, 0]) & (source_xyxy[:, 3] > source_xyxy[:, 1])
        keep = keep[visible][: post.max_detections]
        # supervision's type for Detections.data (dict is invariant, so it is spelled out here)
        data: dict[str, npt.NDArray[np.generic] | list[object]] = {
            "class_name": self._names_array[class_id[keep].astype(np.intp)]
        }
        for key, value in (points or {}).items():
            data[key] = box.points_to_source(value[keep]).astype(np.float32)
        for key, value in (extra or {}).items():
            data[key] = np.asarray(value[keep])
        return sv.Detections(
            xyxy=source_xyxy[visible][: post.max_detections].astype(np.float32),
            confidence=confidence[keep].astype(np.float32),
            class_id=class_id[keep].astype(int),
            data=data,
        )


def candidates(confidence: Floats, post: PostOptions) -> npt.NDArray[np.intp]:
    """Indices of rows at or above the confidence threshold, best first, at most max_candidates."""
    index = np.flatnonzero(confidence >= post.confidence_threshold)
    if len(index) > post.max_candidates:
        index = index[np.argpartition(-confidence[index], post.max_candidates - 1)[: post.max_candidates]]
    return index[np.argsort(-confidence[index], kind="stable")]


def cxcywh_to_xyxy(boxes: Floats) -> Floats:
    half = boxes[:, 2:4] / 2
    return np.concatenate([boxes[:, 0:2] - half, boxes[:, 0:2] + half], axis=1)


def output_index(runtime: RuntimeLike, name: str) -> int | None:
    for index, info in enumerate(runtime.outputs):
        if info.name == name:
            return index
    return None
