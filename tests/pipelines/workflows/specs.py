"""Workflow specifications and registries shared by the workflow tests."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from pipelines.models import ModelOptions, model_class

DETECT = "roboflow_core/roboflow_object_detection_model@v2"
CROP = "roboflow_core/dynamic_crop@v1"
CLASSIFY = "roboflow_core/roboflow_classification_model@v2"
OCR = "roboflow_core/ocr_model@v1"
VLM = "roboflow_core/vlm_as_detector@v2"
FILTER = "roboflow_core/detections_filter@v1"


def spec(steps: list[dict[str, Any]], outputs: list[dict[str, Any]] | None = None,
         inputs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "version": "1.0",
        "inputs": inputs if inputs is not None else [{"type": "WorkflowImage", "name": "image"}],
        "steps": copy.deepcopy(steps),
        "outputs": outputs if outputs is not None else [
            {"type": "JsonField", "name": s["name"], "selector": f"$steps.{s['name']}.*"} for s in steps
        ],
    }


def detect(name: str = "det", images: str = "$inputs.image", model_id: str = "coco", **fields: Any) -> dict[str, Any]:
    return {"type": DETECT, "name": name, "images": images, "model_id": model_id, **fields}


def crop(name: str = "crop", predictions: str = "$steps.det.predictions",
         images: str = "$inputs.image") -> dict[str, Any]:
    return {"type": CROP, "name": name, "images": images, "predictions": predictions}


def classify(name: str = "cls", images: str = "$steps.crop.crops", model_id: str = "squeeze") -> dict[str, Any]:
    return {"type": CLASSIFY, "name": name, "images": images, "model_id": model_id}


def class_filter(name: str, predictions: str, *statements: dict[str, Any], operator: str = "and",
                 **fields: Any) -> dict[str, Any]:
    group = {"type": "StatementGroup", "operator": operator, "statements": list(statements)}
    return {"type": FILTER, "name": name, "predictions": predictions,
            "operations": [{"type": "DetectionsFilter", "filter_operation": group}], **fields}


def statement(prop: str, comparator: str, value: Any, dynamic: str | None = None) -> dict[str, Any]:
    right = ({"type": "DynamicOperand", "operand_name": dynamic} if dynamic
             else {"type": "StaticOperand", "value": value})
    return {"type": "BinaryStatement",
            "left_operand": {"type": "DynamicOperand",
                             "operations": [{"type": "ExtractDetectionProperty", "property_name": prop}]},
            "comparator": {"type": comparator}, "right_operand": right}


def options(type_name: str, path: Path | str, **fields: Any) -> ModelOptions:
    return model_class(type_name).Options.model_validate({"type": type_name, "path": str(path), **fields})


def registry(models: Path | str = "models") -> dict[str, ModelOptions]:
    """Options only (nothing loads): enough for every compile-time check."""
    models = Path(models)
    return {
        "coco": options("yolox", models / "yolox_nano.onnx"),
        "squeeze": options("classify", models / "squeezenet1.1_fp16.onnx"),
        "reader": options("ocr", models / "rec.onnx"),
    }


def xyxy(prediction: dict[str, Any]) -> list[float]:
    """A serialised prediction's box as x1, y1, x2, y2 (Roboflow gives the centre and size)."""
    x, y, w, h = prediction["x"], prediction["y"], prediction["width"], prediction["height"]
    return [x - w / 2, y - h / 2, x + w / 2, y + h / 2]
