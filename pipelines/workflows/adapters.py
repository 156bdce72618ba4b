"""The models a compiled workflow's stages call: registry models with a step's settings, VLM answers, the image."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

import numpy as np
import supervision as sv

from pipelines.detect.base import Detector
from pipelines.models import Image, LoadedModel, ModelKind, ModelOptions, model_class
from pipelines.vlm import ModelType, TaskType, parse_vlm_output
from pipelines.workflows.spec import WorkflowError

WHOLE_IMAGE_CLASS = "image"
VLM_KEY = "vlm"  # metadata key of a VLM stage's detections: error_status, inference_id, error


class WholeImage:
    """A detector that finds the whole picture: the parent of steps that run on the input image itself."""

    kind: Literal["detect"] = "detect"
    name = "workflow:image"

    def detect(self, images: Sequence[Image]) -> list[sv.Detections]:
        return [
            sv.Detections(
                xyxy=np.array([[0.0, 0.0, image.shape[1], image.shape[0]]], dtype=np.float32),
                confidence=np.ones(1, dtype=np.float32),
                class_id=np.zeros(1, dtype=int),
                data={"class_name": np.array([WHOLE_IMAGE_CLASS])},
            )
            for image in images
        ]


class TunedDetector:
    """A registry detector called with one step's post-processing (confidence, iou, class filter, ...)."""

    kind: Literal["detect"] = "detect"

    def __init__(self, detector: Detector, overrides: Mapping[str, Any], name: str) -> None:
        try:  # check now: a class_filter naming classes the model lacks fails here, naming the step
            detector.post_options(overrides)
        except ValueError as exc:
            raise WorkflowError(f"step {name!r}: {exc}") from None
        self.detector = detector
        self.overrides = dict(overrides)
        self.name = name

    def detect(self, images: Sequence[Image]) -> list[sv.Detections]:
        return self.detector.detect(images, **self.overrides)


class VlmAnswerDetector:
    """A VLM's answer (a workflow parameter) parsed as detections of each picture, as vlm_as_detector does.

    A malformed answer gives no detections and `metadata["vlm"]["error_status"]` True; it never raises.
    """

    kind: Literal["detect"] = "detect"

    def __init__(self, answer: Any, model_type: ModelType, task_type: TaskType, classes: Sequence[str] | None,
                 name: str) -> None:
        self.answer = answer
        self.model_type: ModelType = model_type
        self.task_type: TaskType = task_type
        self.classes = None if classes is None else list(classes)
        self.name = name

    def detect(self, images: Sequence[Image]) -> list[sv.Detections]:
        out = []
        for image in images:
            result = parse_vlm_output(self.answer, model_type=self.model_type, task_type=self.task_type,
                                      resolution_wh=(int(image.shape[1]), int(image.shape[0])), classes=self.classes)
            detections = result.predictions if result.predictions is not None else sv.Detections.empty()
            detections.metadata[VLM_KEY] = {"error_status": result.error_status,
                                            "inference_id": result.inference_id, "error": result.error}
            out.append(detections)
        return out


@dataclass(frozen=True)
class RegistryModel:
    """A stage served by a model of the registry; detectors get the step's post-processing overrides."""

    model_id: str
    kind: ModelKind
    overrides: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class VlmAnswer:
    answer: Any
    model_type: ModelType
    task_type: TaskType
    classes: tuple[str, ...] | None


@dataclass(frozen=True)
class WholeImageRoot:
    """The stand-in first stage when the input image's steps are not exactly one detector."""


Binding: TypeAlias = RegistryModel | VlmAnswer | WholeImageRoot


def registry_kind(entry: LoadedModel | ModelOptions) -> tuple[ModelKind, bool]:
    """(kind, takes per-call detector options) of a loaded model or of the options a model loads from."""
    if isinstance(entry, ModelOptions):
        cls = model_class(entry.type)
        return cls.kind, issubclass(cls, Detector)
    return entry.kind, isinstance(entry, Detector)


def bind(binding: Binding, name: str, loaded: Mapping[str, LoadedModel]) -> LoadedModel:
    """The model one stage calls, built from its binding and the loaded registry models."""
    if isinstance(binding, WholeImageRoot):
        return WholeImage()
    if isinstance(binding, VlmAnswer):
        return VlmAnswerDetector(binding.answer, binding.model_type, binding.task_type, binding.classes, name)
    if binding.model_id not in loaded:
        known = ", ".join(sorted(loaded)) or "none"
        raise KeyError(f"stage {name!r} needs model {binding.model_id!r}, which is not loaded (loaded: {known})")
    model = loaded[binding.model_id]
    if model.kind != binding.kind:
        raise ValueError(f"stage {name!r}: model {binding.model_id!r} has kind {model.kind!r}; "
                         f"the workflow was compiled for a {binding.kind} model")
    if binding.kind != "detect":
        return model
    if not isinstance(model, Detector):
        raise ValueError(f"stage {name!r}: model {binding.model_id!r} ({type(model).__name__}) takes no "
                         "per-call detection settings; object detection steps need an edgewatch detector")
    return TunedDetector(model, binding.overrides, name)
