"""`edgewatch workflow run`: a Roboflow spec on real photos, JSON lines out, annotated pictures, clear errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import pytest

from daemon.__main__ import main
from daemon.cli.workflow import load_registry, read_spec
from pipelines.workflows import compile_workflow
from tests.pipelines.workflows.specs import class_filter, classify, crop, detect, spec, statement


def models_yaml(tmp_path: Path, models_dir: Path) -> Path:
    (tmp_path / "yolox.onnx").symlink_to(models_dir / "yolox_nano.onnx")  # a path relative to the YAML
    path = tmp_path / "models.yaml"
    path.write_text(json.dumps({"models": {  # JSON is YAML
        "coco": {"type": "yolox", "path": "yolox.onnx"},
        "squeeze": {"type": "classify", "path": str(models_dir / "squeezenet1.1_fp16.onnx"),
                    "labels_file": str(models_dir / "imagenet_labels.txt")},
    }}))
    return path


def write_spec(tmp_path: Path, value: Any) -> Path:
    path = tmp_path / "workflow.json"
    path.write_text(json.dumps(value))
    return path


def test_run_prints_one_json_line_per_image_and_annotates(tmp_path: Path, models_dir: Path, media_dir: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    inputs = [{"type": "WorkflowImage", "name": "image"},
              {"type": "WorkflowParameter", "name": "kinds", "default_value": ["person"]}]
    steps = [detect(), class_filter("wanted", "$steps.det.predictions",
                                    statement("class_name", "in (Sequence)", None, dynamic="kinds"),
                                    operations_parameters={"kinds": "$inputs.kinds"}),
             crop(predictions="$steps.wanted.predictions"), classify()]
    outputs = [{"type": "JsonField", "name": "cars", "selector": "$steps.wanted.predictions"},
               {"type": "JsonField", "name": "labels", "selector": "$steps.cls.predictions"}]
    workflow = write_spec(tmp_path, spec(steps, outputs, inputs))
    photos = [str(media_dir / "times_square_cars_people.jpg"), str(media_dir / "rf_car.jpg")]
    code = main(["workflow", "run", str(workflow), *photos, "--models", str(models_yaml(tmp_path, models_dir)),
                 "--param", 'kinds=["car"]', "--annotate", str(tmp_path / "drawn")])
    assert code == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["source"] for line in lines] == photos
    for line in lines:
        cars = line["outputs"]["cars"]["predictions"]
        assert cars and {c["class"] for c in cars} == {"car"}  # the --param replaced the default ["person"]
        assert len(line["outputs"]["labels"]) == len(cars)
        assert all(c["parent_id"] == "image" for c in cars)
    for photo in photos:
        drawn = cv2.imread(str(tmp_path / "drawn" / f"{Path(photo).stem}.jpg"))
        assert drawn is not None and drawn.shape == cv2.imread(photo).shape
        assert (drawn != cv2.imread(photo)).any()


@pytest.mark.parametrize(("value", "message"), [
    (spec([detect(model_id="yolo")]), "step 'det' (roboflow_core/roboflow_object_detection_model@v2) field model_id: "
                                      "model 'yolo' is not in the model registry (models: coco, ocr, squeeze)"),
    ("not json", "not JSON: Expecting value (line 1, column 1)"),
], ids=["unknown-model", "not-json"])
def test_errors_are_one_line_on_stderr(tmp_path: Path, models_dir: Path, media_dir: Path, value: Any, message: str,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    workflow = tmp_path / "workflow.json"
    workflow.write_text(value if isinstance(value, str) else json.dumps(value))
    code = main(["workflow", "run", str(workflow), str(media_dir / "rf_car.jpg"),
                 "--models", str(models_yaml(tmp_path, models_dir))])
    assert code == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip().endswith(message) and "edgewatch workflow run: " in captured.err


EXAMPLES = sorted((Path(__file__).resolve().parents[3] / "configs" / "workflows").glob("*.json"))


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.stem for e in EXAMPLES])
def test_example_specifications_compile_against_the_example_models(example: Path, models_dir: Path) -> None:
    registry = load_registry(example.parents[1] / "vehicle-plate-ocr.yaml")
    compiled = compile_workflow(read_spec(example), registry)
    assert set(compiled.model_ids) <= set(registry)


def test_the_plate_example_reads_plates_on_buses(media_dir: Path, models_dir: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    example = next(e for e in EXAMPLES if e.stem == "vehicle-plate-ocr")
    code = main(["workflow", "run", str(example), str(media_dir / "three_buses.jpg"),
                 "--models", str(example.parents[1] / "vehicle-plate-ocr.yaml")])
    assert code == 0
    outputs = json.loads(capsys.readouterr().out)["outputs"]
    assert len(outputs["vehicles"]["predictions"]) == len(outputs["plates"]) == len(outputs["plate_text"]) >= 2
    assert any(len(text) >= 5 for texts in outputs["plate_text"] for text in texts)
