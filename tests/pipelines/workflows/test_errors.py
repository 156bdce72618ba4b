"""Specifications edgewatch cannot run: each gives a WorkflowError naming the step and field, with this message."""

from __future__ import annotations

from typing import Any

import pytest

from pipelines.workflows import WorkflowError, compile_workflow
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

SUPPORTED = (
    "roboflow_core/roboflow_object_detection_model@v1, roboflow_core/roboflow_object_detection_model@v2, "
    "roboflow_core/roboflow_classification_model@v1, roboflow_core/roboflow_classification_model@v2, "
    "roboflow_core/ocr_model@v1, roboflow_core/dynamic_crop@v1, roboflow_core/vlm_as_detector@v1, "
    "roboflow_core/vlm_as_detector@v2, roboflow_core/detections_filter@v1"
)
FILTERS = (
    "edgewatch supports DetectionsFilter operations whose StatementGroup ('and', or a single statement) holds "
    "BinaryStatements on ExtractDetectionProperty class_name ('in (Sequence)', '==') or confidence ('(Number) >=', "
    "'(Number) >') against a StaticOperand or an operations_parameters value"
)
DET = "step 'det' (roboflow_core/roboflow_object_detection_model@v2)"
IMAGE = {"type": "WorkflowImage", "name": "image"}
ANSWER = {"type": "WorkflowParameter", "name": "answer"}
CONF = {"type": "WorkflowParameter", "name": "conf"}


def vlm(**fields: Any) -> dict[str, Any]:
    return {"type": VLM, "name": "vlm", "image": "$inputs.image", "vlm_output": "$inputs.answer", "classes": ["a"],
            "model_type": "openai", "task_type": "object-detection", **fields}


def out(selector: str, name: str = "x", **fields: Any) -> dict[str, Any]:
    return {"type": "JsonField", "name": name, "selector": selector, **fields}


# fmt: off
CASES: list[tuple[str, Any, str]] = [
    ("not-an-object", [], "a workflow specification is a JSON object, got list"),
    ("missing-sections", {"version": "1.0"},
     "specification: missing inputs, steps, outputs (needs version, inputs, steps, outputs)"),
    ("steps-not-a-list", {**spec([detect()]), "steps": {}}, "specification: steps must be a list, got dict"),
    ("two-image-inputs", spec([detect()], inputs=[IMAGE, {"type": "InferenceImage", "name": "image2"}]),
     "inputs: edgewatch runs a workflow on one image input (WorkflowImage); this specification declares 2: "
     "image, image2"),
    ("video-input", spec([detect()], inputs=[IMAGE, {"type": "WorkflowVideoMetadata", "name": "video"}]),
     "inputs[1]: input type 'WorkflowVideoMetadata' is not supported; supported: WorkflowImage, InferenceImage, "
     "WorkflowParameter, InferenceParameter"),
    ("output-type", spec([detect()], [{"type": "Other", "name": "x", "selector": "$steps.det.predictions"}]),
     "outputs[0]: output type 'Other' is not supported; supported: JsonField"),
    ("duplicate-outputs", spec([detect()], [out("$steps.det.*"), out("$steps.det.predictions")]),
     "outputs[1]: two outputs are named 'x'"),
    ("unknown-block", spec([detect(), {"type": "roboflow_core/line_counter@v2", "name": "count"}], []),
     f"step 'count': block type 'roboflow_core/line_counter@v2' is not supported; supported: {SUPPORTED}"),
    ("byte-tracker", spec([detect(), {"type": "roboflow_core/byte_tracker@v3", "name": "track"}], []),
     "step 'track': block type 'roboflow_core/byte_tracker@v3' is not supported (tracking runs in the daemon "
     "(pipeline `tracking:`: ByteTrack ids, per-track second stages, events), not as a workflow step); "
     f"supported: {SUPPORTED}"),
    ("duplicate-steps", spec([detect(), detect()], []), "steps[1]: two steps are named 'det'"),
    ("selector-to-missing-step", spec([detect(), crop(predictions="$steps.nope.predictions")]),
     "step 'crop' (roboflow_core/dynamic_crop@v1) field predictions: $steps.nope.predictions names no step "
     "(steps: det, crop)"),
    ("not-a-selector", spec([detect(images="image")]),
     f"{DET} field images: expected a selector ($inputs.<name> or $steps.<step>.<output>), got 'image'"),
    ("cycle", spec([class_filter("a", "$steps.b.predictions", statement("confidence", "(Number) >=", 0.5)),
                    class_filter("b", "$steps.a.predictions", statement("confidence", "(Number) >=", 0.5))]),
     "steps form a cycle: a -> b -> a"),
    ("classification-fed-to-crop", spec([classify(images="$inputs.image"), crop(predictions="$steps.cls.predictions")]),
     "step 'crop' (roboflow_core/dynamic_crop@v1) field predictions: kind mismatch: $steps.cls.predictions is "
     "classification_prediction; expected object_detection_prediction"),
    ("detections-as-images", spec([detect(), classify(images="$steps.det.predictions")]),
     "step 'cls' (roboflow_core/roboflow_classification_model@v2) field images: kind mismatch: "
     "$steps.det.predictions is object_detection_prediction; expected image ($inputs.image or "
     "$steps.<dynamic_crop>.crops)"),
    ("parameter-as-images", spec([detect(images="$inputs.conf")], inputs=[IMAGE, CONF]),
     f"{DET} field images: $inputs.conf is a parameter; expected an image ($inputs.image or "
     "$steps.<dynamic_crop>.crops)"),
    ("unknown-step-output", spec([detect(), classify(images="$steps.det.crops")]),
     "step 'cls' (roboflow_core/roboflow_classification_model@v2) field images: $steps.det.crops: step 'det' has "
     "no output 'crops' (outputs: inference_id, predictions, model_id)"),
    ("ocr-boxes-cropped", spec([{"type": OCR, "name": "text", "images": "$inputs.image"},
                                crop(predictions="$steps.text.predictions")]),
     "step 'crop' (roboflow_core/dynamic_crop@v1) field predictions: edgewatch crops and filters the predictions "
     "of object detection, vlm_as_detector and detections_filter steps; $steps.text.predictions comes from a "
     "roboflow_core/ocr_model@v1 step"),
    ("crop-of-other-pictures", spec([detect(), crop(), detect("plates", images="$steps.crop.crops"),
                                     crop("crop2", "$steps.plates.predictions")]),
     "step 'crop2' (roboflow_core/dynamic_crop@v1): images $inputs.image and predictions "
     "$steps.plates.predictions are of different pictures (the input image vs crops of step 'crop')"),
    ("model-not-in-registry", spec([detect(model_id="yolo")]),
     f"{DET} field model_id: model 'yolo' is not in the model registry (models: coco, reader, squeeze)"),
    ("model-of-wrong-kind", spec([classify(images="$inputs.image", model_id="coco")]),
     "step 'cls' (roboflow_core/roboflow_classification_model@v2) field model_id: model 'coco' has kind 'detect'; "
     "this block needs a model of kind 'classify'"),
    ("value-out-of-range", spec([detect(confidence=1.5)]),
     f"{DET}: confidence: Input should be less than or equal to 1"),
    ("missing-field", spec([{"type": "roboflow_core/roboflow_object_detection_model@v2", "name": "det",
                             "images": "$inputs.image"}]),
     f"{DET}: model_id: Field required"),
    ("undeclared-parameter", spec([detect(confidence="$inputs.conf")]),
     f"{DET} field confidence: $inputs.conf names no declared input (declared: image)"),
    ("step-output-as-value", spec([detect(model_id="$steps.x.model_id")]),
     f"{DET} field model_id: $steps.x.model_id is a step output; in edgewatch this field takes a value or a "
     "$inputs parameter (step outputs feed only images and predictions fields)"),
    ("vlm-output-literal", spec([vlm(vlm_output="some text")], inputs=[IMAGE, ANSWER]),
     "step 'vlm' (roboflow_core/vlm_as_detector@v2) field vlm_output: expected a $inputs parameter holding the "
     "answer (edgewatch runs no language model as a step), got 'some text'"),
    ("vlm-without-classes", spec([vlm(classes=None, model_type="google-gemini")], inputs=[IMAGE, ANSWER]),
     "step 'vlm' (roboflow_core/vlm_as_detector@v2): model type 'google-gemini' needs the list of classes "
     "(names -> class ids)"),
    ("vlm-task-without-parser", spec([vlm(task_type="region-proposal")], inputs=[IMAGE, ANSWER]),
     "step 'vlm' (roboflow_core/vlm_as_detector@v2): model type 'openai' cannot do task 'region-proposal'; "
     "it can do ['object-detection']"),
    ("vlm-on-crops", spec([detect(), crop(), vlm(image="$steps.crop.crops")], inputs=[IMAGE, ANSWER]),
     "step 'vlm' (roboflow_core/vlm_as_detector@v2) field image: vlm_as_detector runs on the input image in "
     "edgewatch (its answer is one parameter), got $steps.crop.crops"),
    ("filter-lower-than", spec([detect(), class_filter("f", "$steps.det.predictions",
                                                       statement("confidence", "(Number) <", 0.5))]),
     "step 'f' (roboflow_core/detections_filter@v1) field operations[0].filter_operation.statements[0]: "
     f"confidence '(Number) <' is not supported; {FILTERS}"),
    ("filter-or", spec([detect(), class_filter("f", "$steps.det.predictions",
                                               statement("confidence", "(Number) >=", 0.5),
                                               statement("class_name", "==", "car"), operator="or")]),
     "step 'f' (roboflow_core/detections_filter@v1) field operations[0].filter_operation: operator 'or' over "
     f"several statements is not supported; {FILTERS}"),
    ("filter-unknown-parameter", spec([detect(), class_filter("f", "$steps.det.predictions",
                                                              statement("class_name", "in (Sequence)", None, "cls"))]),
     "step 'f' (roboflow_core/detections_filter@v1) field operations[0].filter_operation.statements[0]: right "
     "operand 'cls' is not in operations_parameters (none)"),
    ("output-of-missing-step", spec([detect()], [out("$steps.nope.predictions")]),
     "outputs[0] ('x'): $steps.nope.predictions names no step (steps: det)"),
    ("output-unknown-field", spec([detect()], [out("$steps.det.crops")]),
     "outputs[0] ('x'): $steps.det.crops: step 'det' has no output 'crops' (outputs: inference_id, predictions, "
     "model_id, *)"),
    ("output-of-image", spec([detect()], [out("$inputs.image")]),
     "outputs[0] ('x'): $inputs.image is the image input; image outputs are not supported"),
]
# fmt: on


@pytest.mark.parametrize(("spec_", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_invalid_specification(spec_: Any, message: str) -> None:
    with pytest.raises(WorkflowError) as caught:
        compile_workflow(spec_, registry())
    assert str(caught.value) == message


@pytest.mark.parametrize(("models", "message"), [
    ({}, "it has 0 (none)"),
    ({"r2": "reader"}, "it has 2 (r2, reader); choose one with ocr_model"),
], ids=["no-ocr-model", "two-ocr-models"])
def test_ocr_needs_one_ocr_model(models: dict[str, str], message: str) -> None:
    known = registry()
    chosen = {"coco": known["coco"], **({"reader": known["reader"]} if models else {}),
              **{name: known[source] for name, source in models.items()}}
    with pytest.raises(WorkflowError) as caught:
        compile_workflow(spec([{"type": OCR, "name": "text", "images": "$inputs.image"}]), chosen)
    assert str(caught.value) == ("step 'text' (roboflow_core/ocr_model@v1): OCR steps run on the registry's OCR model "
                                 f"(type ocr or tesseract); {message}")


def test_a_parameter_value_is_checked_as_the_field_it_feeds() -> None:
    with pytest.raises(WorkflowError) as caught:
        compile_workflow(spec([detect(confidence="$inputs.conf")], inputs=[IMAGE, CONF]), registry(), {"conf": "high"})
    assert str(caught.value) == f"{DET}: confidence: Input should be a valid number, unable to parse string as a number"


class PlainDetector:
    """A detector that follows DetectModel but is no edgewatch Detector: it takes no per-call settings."""

    kind = "detect"
    name = "plain"

    def detect(self, images: list[Any]) -> list[Any]:
        return [None for _ in images]


def test_detection_steps_need_a_detector_that_takes_their_settings() -> None:
    with pytest.raises(WorkflowError) as caught:
        compile_workflow(spec([detect(model_id="plain")]), {"plain": PlainDetector()})  # type: ignore[dict-item]
    assert str(caught.value) == (f"{DET} field model_id: model 'plain' takes no per-call detection settings "
                                 "(confidence, iou_threshold, ...); use an edgewatch detector type")


def test_the_chosen_ocr_model_must_be_an_ocr_model() -> None:
    with pytest.raises(WorkflowError) as caught:
        compile_workflow(spec([{"type": OCR, "name": "text", "images": "$inputs.image"}]), registry(),
                         ocr_model="coco")
    assert str(caught.value) == ("step 'text' (roboflow_core/ocr_model@v1) (ocr_model): model 'coco' has kind "
                                 "'detect'; this block needs a model of kind 'ocr'")
