"""The Roboflow blocks edgewatch runs: each block's step fields (as Roboflow's manifests define them) and outputs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipelines.vlm import check_task
from pipelines.workflows.spec import WorkflowError, explain

Role = Literal["detect", "classify", "ocr", "crop", "vlm", "filter"]

# Roboflow's kinds of the outputs a step can feed to another
IMAGE = "image"
DETECTIONS = "object_detection_prediction"
CLASSIFICATION = "classification_prediction"

IMAGE_FIELD = Field(validation_alias=AliasChoices("images", "image"), description="The picture the step runs on.")


class Step(BaseModel):
    """Fields every step has. Unknown keys are ignored, as Roboflow's block manifests ignore them."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    type: str
    name: str


class ObjectDetection(Step):
    images: str = IMAGE_FIELD
    model_id: str
    confidence: float = Field(default=0.4, ge=0.0, le=1.0)
    class_filter: list[str] | None = None
    iou_threshold: float = Field(default=0.3, ge=0.0, le=1.0)
    max_detections: int = Field(default=300, gt=0)
    class_agnostic_nms: bool | None = False
    max_candidates: int = Field(default=3000, gt=0)
    disable_active_learning: bool = True  # accepted; edgewatch does no active learning
    active_learning_target_dataset: str | None = None

    def post_overrides(self) -> dict[str, Any]:
        """The detector's post-processing for this step (pipelines.detect.base.PostOptions names).

        Unset class_filter / class_agnostic_nms keep the model's own setting (its YAML options).
        """
        overrides: dict[str, Any] = {
            "confidence_threshold": self.confidence, "iou_threshold": self.iou_threshold,
            "max_detections": self.max_detections, "max_candidates": self.max_candidates,
        }
        if self.class_filter is not None:
            overrides["class_filter"] = list(self.class_filter)
        if self.class_agnostic_nms is not None:
            overrides["class_agnostic_nms"] = self.class_agnostic_nms
        return overrides


class Classification(Step):
    images: str = IMAGE_FIELD
    model_id: str
    confidence: float = Field(default=0.4, ge=0.0, le=1.0)  # single-label results list every class anyway
    disable_active_learning: bool = True
    active_learning_target_dataset: str | None = None


class Ocr(Step):
    images: str = IMAGE_FIELD


class DynamicCrop(Step):
    images: str = IMAGE_FIELD
    predictions: str = Field(validation_alias=AliasChoices("predictions", "detections"))
    mask_opacity: float = Field(default=0.0, ge=0.0, le=1.0)  # masks only: edgewatch detectors give none
    background_color: str | tuple[int, int, int] = (0, 0, 0)


class VlmAsDetector(Step):
    image: str
    vlm_output: Any = Field(description="The VLM's answer (bound from a $inputs parameter).")
    classes: list[str] | None = Field(description="Class names, in class id order; required but for florence-2.")
    model_type: Literal["openai", "google-gemini", "anthropic-claude", "florence-2"]
    task_type: Literal[
        "object-detection", "open-vocabulary-object-detection", "object-detection-and-caption",
        "phrase-grounded-object-detection", "region-proposal", "ocr-with-text-detection",
    ]

    @model_validator(mode="after")
    def _parser_exists(self) -> VlmAsDetector:
        check_task(self.model_type, self.task_type, self.classes)
        return self


class DetectionsFilter(Step):
    predictions: str
    operations: list[dict[str, Any]]
    operations_parameters: dict[str, Any] = Field(default_factory=dict)


@dataclass(frozen=True)
class Block:
    """One block type: its step model, its role in the compiled pipeline, its outputs, its selector fields."""

    model: type[Step]
    role: Role
    outputs: Mapping[str, str]  # output name -> Roboflow kind
    refs: Mapping[str, tuple[str, ...]]  # field -> the keys it may be given as (selectors kept as they are)
    parameter_only: frozenset[str] = frozenset()  # fields that must be a $inputs parameter (kept even when None)

    @property
    def ref_keys(self) -> frozenset[str]:
        return frozenset(key for keys in self.refs.values() for key in keys)


_IMAGES = {"images": ("images", "image")}
_DETECT_V1 = Block(ObjectDetection, "detect", {"inference_id": "string", "predictions": DETECTIONS}, _IMAGES)
_DETECT_V2 = Block(ObjectDetection, "detect", {**_DETECT_V1.outputs, "model_id": "roboflow_model_id"}, _IMAGES)
_CLASSIFY_V1 = Block(Classification, "classify", {"predictions": CLASSIFICATION, "inference_id": "string"}, _IMAGES)
_CLASSIFY_V2 = Block(Classification, "classify", {**_CLASSIFY_V1.outputs, "model_id": "roboflow_model_id"}, _IMAGES)
_OCR = Block(Ocr, "ocr", {"result": "string", "predictions": DETECTIONS, "parent_id": "parent_id",
                          "root_parent_id": "parent_id", "prediction_type": "prediction_type"}, _IMAGES)
_CROP = Block(DynamicCrop, "crop", {"crops": IMAGE, "predictions": DETECTIONS},
              {**_IMAGES, "predictions": ("predictions", "detections")})
_VLM = Block(VlmAsDetector, "vlm", {"error_status": "boolean", "predictions": DETECTIONS, "inference_id": "string"},
             {"image": ("image",)}, frozenset({"vlm_output"}))
_FILTER = Block(DetectionsFilter, "filter", {"predictions": DETECTIONS}, {"predictions": ("predictions",)})

# type name (with Roboflow's older aliases) -> block
BLOCKS: dict[str, Block] = {
    "roboflow_core/roboflow_object_detection_model@v1": _DETECT_V1,
    "RoboflowObjectDetectionModel": _DETECT_V1,
    "ObjectDetectionModel": _DETECT_V1,
    "roboflow_core/roboflow_object_detection_model@v2": _DETECT_V2,
    "roboflow_core/roboflow_classification_model@v1": _CLASSIFY_V1,
    "RoboflowClassificationModel": _CLASSIFY_V1,
    "ClassificationModel": _CLASSIFY_V1,
    "roboflow_core/roboflow_classification_model@v2": _CLASSIFY_V2,
    "roboflow_core/ocr_model@v1": _OCR,
    "OCRModel": _OCR,
    "roboflow_core/dynamic_crop@v1": _CROP,
    "DynamicCrop": _CROP,
    "Crop": _CROP,
    "roboflow_core/vlm_as_detector@v1": _VLM,
    "roboflow_core/vlm_as_detector@v2": _VLM,
    "roboflow_core/detections_filter@v1": _FILTER,
    "DetectionsFilter": _FILTER,
}
SUPPORTED = ", ".join(name for name in BLOCKS if name.startswith("roboflow_core/"))
# blocks people reach for first that edgewatch does elsewhere
NOT_HERE = {
    "roboflow_core/byte_tracker": "tracking runs in the daemon (pipeline `tracking:`: ByteTrack ids, per-track "
                                  "second stages, events), not as a workflow step",
}


def block_of(step: Mapping[str, Any], index: int) -> tuple[str, Block]:
    """The step's name and block; WorkflowError for a step without a name or of a type edgewatch does not run."""
    name, type_name = step.get("name"), step.get("type")
    if not isinstance(name, str) or not name:
        raise WorkflowError(f"steps[{index}]: a step needs a name")
    if not isinstance(type_name, str) or type_name not in BLOCKS:
        hint = next((f" ({why})" for prefix, why in NOT_HERE.items()
                     if isinstance(type_name, str) and type_name.startswith(prefix)), "")
        raise WorkflowError(f"step {name!r}: block type {type_name!r} is not supported{hint}; supported: {SUPPORTED}")
    return name, BLOCKS[type_name]


def validate_step(block: Block, step: Mapping[str, Any]) -> Step:
    """The step's fields checked by its block's model (after parameters were bound)."""
    try:
        return block.model.model_validate(dict(step))
    except ValidationError as exc:
        raise WorkflowError(f"step {step.get('name')!r} ({step.get('type')}): {explain(exc)}") from None
