"""What a specification compiles to: the PipelineSpec's stages, their selection, bindings and parameters."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from pipelines.stages import StageSpec
from pipelines.workflows import compile_workflow
from pipelines.workflows.adapters import RegistryModel, VlmAnswer, WholeImage, WholeImageRoot
from pipelines.workflows.filters import float32_threshold
from tests.pipelines.workflows.specs import (
    OCR,
    VLM,
    class_filter,
    classify,
    crop,
    detect,
    registry,
    spec,
    statement,
)

IMAGE = {"type": "WorkflowImage", "name": "image"}
BLOCK_DEFAULTS = {"confidence_threshold": 0.4, "iou_threshold": 0.3, "max_detections": 300, "max_candidates": 3000,
                  "class_agnostic_nms": False}


def tree(stages: list[StageSpec]) -> list[Any]:
    """(name, on, min_parent_confidence, children) of each stage: the parts a compile decides."""
    return [(s.name, s.on, s.min_parent_confidence, tree(s.stages)) for s in stages]


def test_detection_crop_classification_is_a_detector_with_one_stage() -> None:
    compiled = compile_workflow(spec([detect(), crop(), classify()]), registry())
    assert compiled.spec.detector == "det"
    assert tree(compiled.spec.stages) == [("cls", None, 0.0, [])]
    assert compiled.spec.stages[0].min_crop_size == 1
    assert compiled.bindings == {"det": RegistryModel("coco", "detect", BLOCK_DEFAULTS),
                                 "cls": RegistryModel("squeeze", "classify")}
    assert compiled.model_ids == ["coco", "squeeze"]


def test_filters_between_detector_and_crop_select_the_stage_parents() -> None:
    steps = [detect(),
             class_filter("vehicles", "$steps.det.predictions",
                          statement("class_name", "in (Sequence)", ["car", "bus"])),
             class_filter("sure", "$steps.vehicles.predictions", statement("confidence", "(Number) >", 0.5),
                          statement("class_name", "==", "bus")),
             crop(predictions="$steps.sure.predictions"), classify()]
    compiled = compile_workflow(spec(steps), registry())
    assert tree(compiled.spec.stages) == [("cls", ["bus"], float32_threshold(0.5, strict=True), [])]


def test_filter_values_come_from_operations_parameters_bound_to_inputs() -> None:
    steps = [detect(), class_filter("f", "$steps.det.predictions",
                                    statement("class_name", "in (Sequence)", None, dynamic="wanted"),
                                    operations_parameters={"wanted": "$inputs.classes"}),
             crop(predictions="$steps.f.predictions"), classify()]
    inputs = [IMAGE, {"type": "WorkflowParameter", "name": "classes", "default_value": ["truck"]}]
    assert tree(compile_workflow(spec(steps, inputs=inputs), registry()).spec.stages) == [("cls", ["truck"], 0.0, [])]
    compiled = compile_workflow(spec(steps, inputs=inputs), registry(), {"classes": ["car", "bus"]})
    assert tree(compiled.spec.stages) == [("cls", ["bus", "car"], 0.0, [])]


def test_steps_on_the_input_image_that_are_not_one_detector_run_under_the_whole_picture() -> None:
    compiled = compile_workflow(spec([classify(images="$inputs.image"), detect(), crop(), classify("cls2")]),
                                registry())
    assert compiled.spec.detector == WholeImage.name
    assert compiled.bindings[WholeImage.name] == WholeImageRoot()
    assert tree(compiled.spec.stages) == [("cls", None, 0.0, []), ("det", None, 0.0, [("cls2", None, 0.0, [])])]
    assert compiled.layout.root is None


def test_crops_of_crops_nest_stages() -> None:
    steps = [detect(), crop(), detect("plates", images="$steps.crop.crops", confidence=0.3),
             crop("plate_crops", "$steps.plates.predictions", images="$steps.crop.crops"),
             {"type": OCR, "name": "text", "images": "$steps.plate_crops.crops"}]
    compiled = compile_workflow(spec(steps), registry())
    assert tree(compiled.spec.stages) == [("plates", None, 0.0, [("text", None, 0.0, [])])]
    assert compiled.bindings["plates"] == RegistryModel("coco", "detect",
                                                        {**BLOCK_DEFAULTS, "confidence_threshold": 0.3})
    assert compiled.bindings["text"] == RegistryModel("reader", "ocr")
    assert compiled.layout.paths == {"plates": "workflow/plates", "text": "workflow/plates/text"}


@pytest.mark.parametrize(("parameters", "expected"), [
    ({}, 0.25),  # the declared default
    ({"conf": 0.6}, 0.6),
    ({"conf": None}, 0.4),  # no value: the block's default, as a model call with None gets on Roboflow's server
], ids=["default", "given", "none"])
def test_parameters_feed_step_fields(parameters: dict[str, Any], expected: float) -> None:
    inputs = [IMAGE, {"type": "InferenceParameter", "name": "conf", "default_value": 0.25},
              {"type": "WorkflowParameter", "name": "model"}]
    compiled = compile_workflow(spec([detect(confidence="$inputs.conf", model_id="$inputs.model")], inputs=inputs),
                                registry(), {"model": "coco", **parameters})
    binding = compiled.bindings["det"]
    assert isinstance(binding, RegistryModel) and binding.model_id == "coco"
    assert binding.overrides["confidence_threshold"] == expected


def test_roboflow_aliases_and_unknown_keys_are_accepted_as_its_server_accepts_them() -> None:
    steps = [{"type": "ObjectDetectionModel", "name": "det", "image": "$inputs.image", "model_id": "coco",
              "class_filter": ["car"], "class_agnostic_nms": None, "disable_active_learning": False, "note": "x"},
             {"type": "Crop", "name": "crop", "image": "$inputs.image", "detections": "$steps.det.predictions",
              "mask_opacity": 0.0},
             {"type": "ClassificationModel", "name": "cls", "images": "$steps.crop.crops", "model_id": "squeeze"}]
    raw = {**spec(steps, [{"type": "JsonField", "name": "out", "selector": "$steps.cls.predictions", "extra": 1}]),
           "description": "ignored"}
    compiled = compile_workflow(raw, registry())
    assert tree(compiled.spec.stages) == [("cls", None, 0.0, [])]
    # an unset class_agnostic_nms keeps the model's own setting; class_filter goes to the detector
    assert compiled.bindings["det"] == RegistryModel(
        "coco", "detect", {**{k: v for k, v in BLOCK_DEFAULTS.items() if k != "class_agnostic_nms"},
                           "class_filter": ["car"]})


@pytest.mark.parametrize(("name", "stage"), [("det", "det"), ("1st", "step_1st"), ("keypoints", "step_keypoints")])
def test_stage_names_follow_step_names_where_a_stage_can_have_them(name: str, stage: str) -> None:
    compiled = compile_workflow(spec([classify(name, images="$inputs.image")]), registry())
    assert [s.name for s in compiled.spec.stages] == [stage]


def test_a_vlm_step_binds_its_answer_parameter() -> None:
    steps = [{"type": VLM, "name": "vlm", "image": "$inputs.image", "vlm_output": "$inputs.answer",
              "classes": ["car"], "model_type": "google-gemini", "task_type": "object-detection"}]
    inputs = [IMAGE, {"type": "WorkflowParameter", "name": "answer"}]
    compiled = compile_workflow(spec(steps, inputs=inputs), {}, {"answer": "[]"})
    assert compiled.spec.detector == "vlm" and compiled.model_ids == []
    assert compiled.bindings == {"vlm": VlmAnswer("[]", "google-gemini", "object-detection", ("car",))}
    # a parameter never given stays None: the step's error status, not a default
    assert compile_workflow(spec(steps, inputs=inputs), {}).bindings["vlm"] == VlmAnswer(
        None, "google-gemini", "object-detection", ("car",))


@pytest.mark.parametrize(("value", "strict", "expected"), [
    (0.5, False, 0.5),
    (0.5, True, float(np.nextafter(np.float32(0.5), np.float32(1)))),
    (0.1, False, float(np.float32(0.1))),  # float32(0.1) is above 0.1 already
    (0.1, True, float(np.float32(0.1))),
    (0.7, False, float(np.nextafter(np.float32(0.7), np.float32(1)))),  # float32(0.7) is below 0.7
])
def test_float32_thresholds_compare_like_roboflow(value: float, strict: bool, expected: float) -> None:
    threshold = float32_threshold(value, strict)
    assert threshold == expected
    below = np.float32(np.nextafter(np.float32(threshold), np.float32(0)))
    assert (float(np.float32(threshold)) > value if strict else float(np.float32(threshold)) >= value)
    assert not (float(below) > value if strict else float(below) >= value)
