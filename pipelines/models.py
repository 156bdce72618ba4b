"""Model types: the common Options, the Model base class, a typed protocol per kind, and the type-name registry.

The registry lives here rather than in daemon/ so that pipelines/ stays usable as a library on its own
(two_stage(), infer()); daemon/registry.py exposes this same table next to sources and sinks.
A loaded model is a `LoadedModel`: one protocol per kind, told apart by its `kind` (mypy narrows on it).
"""

from __future__ import annotations

import importlib
from abc import ABC
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, TypeAlias, cast

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from pipelines.runtime.base import RuntimeOptions

if TYPE_CHECKING:  # for the protocols' annotations only: importing supervision costs most of a second
    import supervision as sv

MODEL_TYPES: dict[str, str] = {
    "yolox": "pipelines.detect.yolox:YoloX",
    "yolov5": "pipelines.detect.yolov5:YoloV5",
    "ultralytics": "pipelines.detect.ultralytics:Ultralytics",
    "nanodet": "pipelines.detect.nanodet:NanoDet",
    "db_text": "pipelines.detect.db_text:DbText",
    "classify": "pipelines.classify:Classifier",
    "ocr": "pipelines.ocr:CtcOcr",
    "tesseract": "pipelines.ocr:TesseractOcr",
    "embed": "pipelines.embed.encoders:ImageEmbedder",
    "clip": "pipelines.embed.encoders:ClipModel",
}

ModelKind = Literal["detect", "classify", "ocr", "embed"]

Image: TypeAlias = npt.NDArray[np.uint8]  # a BGR picture or crop, height x width x 3


class UnknownTypeError(LookupError):
    """A type name that no registry table knows, or whose module fails to import."""


def import_string(target: str) -> Any:
    """The attribute that "module:attr" names; a module that fails to import is named in the error, never skipped."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise UnknownTypeError(f"import string {target!r} must be in the form 'module:attribute'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UnknownTypeError(f"cannot import {module_name}: {exc}") from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        raise UnknownTypeError(f"module {module_name} has no attribute {attr!r}") from None


def import_entry(table: Mapping[str, str], kind: str, name: str) -> Any:
    """Import the class that `table[name]` ("module:Class") names, with errors that say what was expected."""
    if name not in table:
        raise UnknownTypeError(f"unknown {kind} type {name!r}; expected one of: {', '.join(sorted(table))}")
    try:
        return import_string(table[name])
    except UnknownTypeError as exc:
        raise UnknownTypeError(f"{kind} type {name!r}: {exc}") from exc.__cause__


class ModelOptions(BaseModel):
    """Fields every model has; each model type's Options subclasses this with its own defaults."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    type: str = Field(..., description="Model type: " + ", ".join(MODEL_TYPES) + ".")
    path: Path = Field(..., description="Model file: .onnx, or a TensorRT .engine/.plan.")
    runtime: RuntimeOptions = Field(
        default_factory=RuntimeOptions, description="Execution providers, threads and warm-up."
    )


class Model(ABC):
    """A loaded model. Subclasses set `kind` and `Options` and add one batch call:

    detect:   detect(images: Sequence[ndarray]) -> list[sv.Detections]   (source-image pixels)
    classify: classify(crops: Sequence[ndarray]) -> list[dict]            ({"class","class_id","confidence","top"})
    ocr:      read(crops: Sequence[ndarray]) -> list[dict]                ({"text","confidence","char_confidences"})
    embed:    embed(crops: Sequence[ndarray]) -> ndarray [N, D], L2-normalised
    """

    kind: ClassVar[ModelKind]
    Options: ClassVar[type[ModelOptions]] = ModelOptions

    def __init__(self, options: ModelOptions, name: str = "") -> None:
        self.options = options
        self.name = name or Path(options.path).stem


class DetectModel(Protocol):
    """A first-stage or nested detector: one sv.Detections per image, in that image's pixels."""

    @property
    def kind(self) -> Literal["detect"]: ...

    @property
    def name(self) -> str: ...

    def detect(self, images: Sequence[Image]) -> list[sv.Detections]: ...


class ClassifyModel(Protocol):
    """One {"class", "class_id", "confidence", "top"} per crop."""

    @property
    def kind(self) -> Literal["classify"]: ...

    @property
    def name(self) -> str: ...

    def classify(self, crops: Sequence[Image]) -> list[dict[str, Any]]: ...


class OcrModel(Protocol):
    """One {"text", "confidence", "char_confidences"} per crop."""

    @property
    def kind(self) -> Literal["ocr"]: ...

    @property
    def name(self) -> str: ...

    def read(self, crops: Sequence[Image]) -> list[dict[str, Any]]: ...


class EmbedModel(Protocol):
    """One L2-normalised row per crop; `identity` keys the embedding cache (pipelines/embed/cache.py)."""

    @property
    def kind(self) -> Literal["embed"]: ...

    @property
    def name(self) -> str: ...

    @property
    def identity(self) -> str: ...

    def embed(self, crops: Sequence[Image]) -> npt.NDArray[np.float32]: ...


LoadedModel: TypeAlias = DetectModel | ClassifyModel | OcrModel | EmbedModel


def model_class(type_name: str) -> type[Model]:
    """The Model subclass a type name stands for (UnknownTypeError for unknown names and other classes)."""
    cls = import_entry(MODEL_TYPES, "model", type_name)
    if not (isinstance(cls, type) and issubclass(cls, Model)):
        raise UnknownTypeError(f"model type {type_name!r}: {MODEL_TYPES[type_name]} is not a Model subclass")
    return cls


def load_model(spec: ModelOptions | Mapping[str, Any], name: str = "") -> LoadedModel:
    """Build a model from its Options (or a plain dict with at least `type` and `path`)."""
    type_name = spec.type if isinstance(spec, ModelOptions) else str(spec.get("type", ""))
    cls = model_class(type_name)
    options = spec if isinstance(spec, cls.Options) else cls.Options.model_validate(
        spec.model_dump() if isinstance(spec, ModelOptions) else dict(spec)
    )
    # Model subclasses add the batch call of their `kind` (the Model docstring): the one place that trusts it
    return cast(LoadedModel, cls(options, name=name))
