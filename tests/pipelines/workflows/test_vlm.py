"""vlm_as_detector with the answer as a parameter: the four model formats in pixels, bad answers as error_status."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from pipelines.models import load_model
from pipelines.workflows import compile_workflow
from tests.pipelines.workflows.specs import VLM, classify, crop, spec, xyxy

W, H = 1000, 500
INPUTS = [{"type": "WorkflowImage", "name": "image"}, {"type": "WorkflowParameter", "name": "answer"}]
OUTPUTS = [{"type": "JsonField", "name": "vlm", "selector": "$steps.vlm.*"}]


def vlm_step(model_type: str, task_type: str = "object-detection", classes: list[str] | None = None) -> dict[str, Any]:
    return {"type": VLM, "name": "vlm", "image": "$inputs.image", "vlm_output": "$inputs.answer",
            "classes": classes, "model_type": model_type, "task_type": task_type}


def fenced(payload: Any) -> str:
    return f"Sure:\n```json\n{json.dumps(payload)}\n```"


def run(step: dict[str, Any], answer: Any, extra: list[dict[str, Any]] | None = None,
        outputs: list[dict[str, Any]] | None = None, models: dict[str, Any] | None = None,
        image: np.ndarray | None = None) -> dict[str, Any]:
    compiled = compile_workflow(spec([step, *(extra or [])], outputs or OUTPUTS, INPUTS), models or {},
                                {"answer": answer})
    picture = image if image is not None else np.zeros((H, W, 3), np.uint8)
    return compiled.run([picture], models or {})[0]


# fmt: off
FORMATS = [
    ("openai", "openai", "object-detection", ["cat", "dog"],
     json.dumps({"detections": [{"x_min": 0.1, "y_min": 0.2, "x_max": 0.5, "y_max": 0.6, "class_name": "dog",
                                 "confidence": 0.9}]}),
     [([100, 100, 500, 300], "dog", 1, 0.9)]),
    ("google-gemini", "google-gemini", "object-detection", ["cat", "dog"],
     fenced([{"box_2d": [200, 100, 600, 500], "label": "cat"}]),  # [ymin, xmin, ymax, xmax] in 0..1000
     [([100, 100, 500, 300], "cat", 0, 1.0)]),
    ("anthropic-claude", "anthropic-claude", "object-detection", ["cat", "dog"],
     fenced({"detections": [{"x_min": 0.5, "y_min": 0.5, "x_max": 0.6, "y_max": 0.7, "class_name": "cat",
                             "confidence": 0.4}]}),
     [([500, 250, 600, 350], "cat", 0, 0.4)]),
    ("florence-2", "florence-2", "open-vocabulary-object-detection", ["car"],
     json.dumps({"<OPEN_VOCABULARY_DETECTION>": {"bboxes": [[10, 20, 110, 220]], "bboxes_labels": ["car"],
                                                 "polygons": [], "polygons_labels": []}}),
     [([10, 20, 110, 220], "car", 0, 1.0)]),
]
# fmt: on


@pytest.mark.parametrize(("model_type", "task", "classes", "answer", "expected"), [f[1:] for f in FORMATS],
                         ids=[f[0] for f in FORMATS])
def test_answers_in_each_model_format_give_boxes_in_pixels(model_type: str, task: str, classes: list[str],
                                                           answer: str, expected: list[Any]) -> None:
    result = run(vlm_step(model_type, task, classes), answer)["vlm"]
    assert result["error_status"] is False
    uuid.UUID(result["inference_id"])
    predictions = result["predictions"]
    assert predictions["image"] == {"width": W, "height": H}
    got = [(xyxy(p), p["class"], p["class_id"], p["confidence"]) for p in predictions["predictions"]]
    assert len(got) == len(expected)
    for (box, name, class_id, confidence), (want_box, want_name, want_id, want_conf) in zip(got, expected, strict=True):
        np.testing.assert_allclose(box, want_box, atol=1e-3)
        assert (name, class_id) == (want_name, want_id) and confidence == pytest.approx(want_conf)
    assert all(p["parent_id"] == "image" for p in predictions["predictions"])


@pytest.mark.parametrize("answer", [
    "I could not find anything.",  # not JSON
    '{"detections": "none"}',  # JSON of the wrong shape
    '[{"x_min": "left", "y_min": 0, "x_max": 1, "y_max": 1, "class_name": "cat"}]',  # a coordinate that is no number
    fenced({"detections": [{"x_min": 0.1}]}),  # keys missing
    42,  # not text
    None,  # the parameter was never given
], ids=["prose", "wrong-shape", "not-a-number", "missing-keys", "number", "absent"])
def test_a_malformed_answer_is_an_error_status_never_an_exception(answer: Any) -> None:
    result = run(vlm_step("openai", classes=["cat"]), answer)["vlm"]
    assert result["error_status"] is True and result["predictions"] is None
    uuid.UUID(result["inference_id"])


def test_vlm_boxes_feed_crops_and_a_classifier(models_dir: Path, media_dir: Path) -> None:
    squeeze = load_model({"type": "classify", "path": str(models_dir / "squeezenet1.1_fp16.onnx"),
                          "labels_file": str(models_dir / "imagenet_labels.txt")}, "squeeze")
    image = cv2.imread(str(media_dir / "rf_car.jpg"))
    answer = fenced({"detections": [{"x_min": 0.04, "y_min": 0.33, "x_max": 0.9, "y_max": 0.88, "class_name": "car"}]})
    outputs = [{"type": "JsonField", "name": "cls", "selector": "$steps.cls.predictions"},
               {"type": "JsonField", "name": "status", "selector": "$steps.vlm.error_status"}]
    result = run(vlm_step("google-gemini", classes=["car"]),
                 answer, [crop(predictions="$steps.vlm.predictions"), classify()], outputs, {"squeeze": squeeze},
                 image)
    h, w = image.shape[:2]
    x1, y1, x2, y2 = (round(v) for v in (0.04 * w, 0.33 * h, 0.9 * w, 0.88 * h))
    expected = squeeze.classify([image[y1:y2, x1:x2]])[0]
    assert result["status"] is False and len(result["cls"]) == 1
    assert result["cls"][0]["top"] == expected["class"]
    assert result["cls"][0]["confidence"] == pytest.approx(expected["confidence"])


def test_a_vlm_step_beside_another_image_step_runs_under_the_whole_picture(models_dir: Path) -> None:
    squeeze = load_model({"type": "classify", "path": str(models_dir / "squeezenet1.1_fp16.onnx")}, "squeeze")
    answer = json.dumps({"detections": [{"x_min": 0.1, "y_min": 0.2, "x_max": 0.5, "y_max": 0.6, "class_name": "a"}]})
    outputs = [*OUTPUTS, {"type": "JsonField", "name": "whole", "selector": "$steps.cls.predictions"}]
    result = run(vlm_step("openai", classes=["a"]), answer, [classify(images="$inputs.image")], outputs,
                 {"squeeze": squeeze})
    assert result["vlm"]["error_status"] is False
    np.testing.assert_allclose(xyxy(result["vlm"]["predictions"]["predictions"][0]), [100, 100, 500, 300], atol=1e-3)
    assert result["whole"]["image"] == {"width": W, "height": H} and result["whole"]["parent_id"] == "image"
