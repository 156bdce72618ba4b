"""Roboflow's unchanged `inference_sdk` client runs Workflows on edgewatch's API (run_workflow, inline and stored).

The client runs in its own venv (tests/integration/test_inference_sdk.py makes it); the outputs are checked
against `edgewatch two-stage` (daemon/cli/models.py load_two_stage) on the same photos.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import supervision as sv

from daemon.cli.models import load_two_stage
from pipelines.labels import class_names
from tests.fixtures.api_server import Running, serve
from tests.integration.test_inference_sdk import drive, sdk_python
from tests.pipelines.workflows.specs import classify, crop, detect, spec, xyxy
from tests.pipelines.workflows.test_vlm import FORMATS, INPUTS, OUTPUTS, fenced, vlm_step

pytestmark = pytest.mark.integration

__all__ = ["sdk_python"]  # the SDK venv fixture, shared with the other client tests
PHOTOS = ("three_buses.jpg", "times_square_cars_people.jpg", "rf_car.jpg", "crosswalk_people.jpg")
TWO_STAGE = spec(
    [detect(model_id="det/1"), crop(), classify(model_id="cls")],
    [{"type": "JsonField", "name": "boxes", "selector": "$steps.det.predictions"},
     {"type": "JsonField", "name": "classes", "selector": "$steps.cls.predictions"}],
)


@pytest.fixture(scope="module")
def api(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    stored = tmp_path_factory.mktemp("workflows")
    (stored / "my-workspace").mkdir()
    (stored / "my-workspace" / "two-stage.json").write_text(json.dumps(TWO_STAGE))
    running = serve(models_dir, workflows_dir=str(stored))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def expected(models_dir: Path, media_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[sv.Detections]:
    """`edgewatch two-stage` with the workflow's settings: the block defaults (confidence 0.4, iou 0.3), every crop."""
    config = tmp_path_factory.mktemp("two-stage") / "two-stage.yaml"
    config.write_text(json.dumps({
        "models": {"det": {"type": "yolox", "path": str(models_dir / "yolox_nano.onnx"), "confidence_threshold": 0.4,
                           "iou_threshold": 0.3},
                   "cls": {"type": "classify", "path": str(models_dir / "squeezenet1.1_fp16.onnx"),
                           "labels_file": str(models_dir / "imagenet_labels.txt")}},
        "pipeline": {"detector": "det", "stages": [{"name": "cls", "model": "cls", "min_crop_size": 1}]},
    }))
    images = [cv2.imread(str(media_dir / name)) for name in PHOTOS]
    return list(load_two_stage(config).run(images).detections)


def assert_two_stage(output: dict[str, Any], found: sv.Detections, parent: str) -> None:
    predictions = output["boxes"]["predictions"]
    assert [p["class"] for p in predictions] == class_names(found).tolist()
    np.testing.assert_allclose([xyxy(p) for p in predictions], found.xyxy.reshape(-1, 4), atol=1e-3)
    np.testing.assert_allclose([p["confidence"] for p in predictions], found.confidence, rtol=1e-5)
    assert {p["parent_id"] for p in predictions} <= {parent}
    classes = output["classes"]
    assert [c["top"] for c in classes] == [r["class"] for r in found.data["cls"]]
    np.testing.assert_allclose([c["confidence"] for c in classes], [r["confidence"] for r in found.data["cls"]],
                               rtol=1e-5)
    assert [c["parent_id"] for c in classes] == [p["detection_id"] for p in predictions]


def test_run_workflow_inline_and_stored_matches_two_stage(sdk_python: Path, api: Running, media_dir: Path,
                                                          expected: list[sv.Detections]) -> None:
    invalid = json.loads(json.dumps(TWO_STAGE))
    invalid["steps"][2]["images"] = "$steps.det.predictions"
    out = drive(sdk_python, api.port, "workflow", spec=TWO_STAGE, paths=[str(media_dir / n) for n in PHOTOS],
                workspace="my-workspace", workflow_id="two-stage", invalid=invalid)
    assert sum(len(d) for d in expected) >= 10  # real photos with real detections
    for key in ("batch", "stored"):
        assert len(out[key]) == len(PHOTOS)
        for i, (output, found) in enumerate(zip(out[key], expected, strict=True)):
            assert_two_stage(output, found, f"image.[{i}]")
    for key in ("single", "legacy", "stored_legacy"):
        assert len(out[key]) == 1
        assert_two_stage(out[key][0], expected[0], "image")
    assert out["excluded"][0].keys() == {"boxes"}
    assert out["stored_missing"]["status"] == 404 and "no-such" in out["stored_missing"]["message"]
    assert out["invalid"]["status"] == 400
    assert "step 'cls'" in out["invalid"]["message"] and "field images" in out["invalid"]["message"]


@pytest.fixture(scope="module")
def wide_photo(media_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real photo at 1000 x 500, the size the VLM answer table's pixel boxes are for."""
    path = tmp_path_factory.mktemp("vlm") / "wide.png"
    cv2.imwrite(str(path), cv2.resize(cv2.imread(str(media_dir / "three_buses.jpg")), (1000, 500)))
    return path


MALFORMED = {
    "prose": "I could not find anything.",
    "wrong-shape": '{"detections": "none"}',
    "not-a-number": '[{"x_min": "left", "y_min": 0, "x_max": 1, "y_max": 1, "class_name": "cat"}]',
    "missing-keys": fenced({"detections": [{"x_min": 0.1}]}),
    "number": 42,
    "absent": None,
}


def test_vlm_as_detector_answers_through_the_client(sdk_python: Path, api: Running, wide_photo: Path) -> None:
    cases = {name: {"spec": spec([vlm_step(model_type, task, classes)], OUTPUTS, INPUTS),
                    "parameters": {"answer": answer}}
             for name, model_type, task, classes, answer, _ in FORMATS}
    openai = spec([vlm_step("openai", classes=["cat"])], OUTPUTS, INPUTS)
    cases.update({f"bad-{name}": {"spec": openai, "parameters": {"answer": answer}}
                  for name, answer in MALFORMED.items()})
    out = drive(sdk_python, api.port, "workflow_cases", path=str(wide_photo), cases=cases)
    for name, _, _, _, _, boxes in FORMATS:
        result = out[name][0]["vlm"]  # never an HTTP error: a list of one output per image
        assert result["error_status"] is False
        predictions = result["predictions"]
        assert predictions["image"] == {"width": 1000, "height": 500}
        got = [(xyxy(p), p["class"], p["class_id"], p["confidence"]) for p in predictions["predictions"]]
        assert len(got) == len(boxes)
        for (box, cls, class_id, confidence), (want, want_cls, want_id, want_conf) in zip(got, boxes, strict=True):
            np.testing.assert_allclose(box, want, atol=1e-3)  # pixels of the picture sent
            assert (cls, class_id) == (want_cls, want_id) and confidence == pytest.approx(want_conf)
    for name in MALFORMED:
        result = out[f"bad-{name}"][0]["vlm"]
        assert result["error_status"] is True and result["predictions"] is None, name
