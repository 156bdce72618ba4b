"""Compiled workflows on real models and photos: the same results as the equivalent PipelineSpec, Roboflow's JSON."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import supervision as sv

from pipelines.build import build_pipeline
from pipelines.labels import class_names
from pipelines.models import LoadedModel, load_model
from pipelines.stages import PipelineSpec
from pipelines.workflows import WorkflowError, compile_workflow
from tests.pipelines.workflows.specs import OCR, class_filter, classify, crop, detect, spec, statement, xyxy

PHOTOS = ["three_buses.jpg", "times_square_cars_people.jpg", "rf_car.jpg", "crosswalk_people.jpg"]
PLATES = {"type": "yolov5", "num_keypoints": 4, "pad_value": 0, "class_names": ["single", "double"],
          "class_agnostic_nms": True}


@pytest.fixture(scope="module")
def models(models_dir: Path) -> dict[str, LoadedModel]:
    """The registry as the workflow sees it; `coco` has Roboflow's block defaults as its own options, so the
    PipelineSpec run directly and the workflow run post-process alike."""
    return {
        "coco": load_model({"type": "yolox", "path": str(models_dir / "yolox_nano.onnx"),
                            "confidence_threshold": 0.4, "iou_threshold": 0.3}, "coco"),
        "squeeze": load_model({"type": "classify", "path": str(models_dir / "squeezenet1.1_fp16.onnx"),
                               "labels_file": str(models_dir / "imagenet_labels.txt")}, "squeeze"),
        "plates": load_model({**PLATES, "path": str(models_dir / "plate_det_y5fu_640.onnx"),
                              "confidence_threshold": 0.3}, "plates"),
        "reader": load_model({"type": "ocr"}, "reader"),
    }


@pytest.fixture(scope="module")
def photos(media_dir: Path) -> list[np.ndarray]:
    return [cv2.imread(str(media_dir / name)) for name in PHOTOS]


def direct(models: dict[str, LoadedModel], detector: str, stage: dict[str, Any], images: list[np.ndarray]
           ) -> list[sv.Detections]:
    spec_ = PipelineSpec.model_validate({"name": "direct", "detector": detector, "stages": [stage]})
    return list(build_pipeline(spec_, models).run(images).detections)


def test_detection_crop_classification_matches_the_pipeline_run_directly(models: dict[str, LoadedModel],
                                                                           photos: list[np.ndarray]) -> None:
    outputs = [{"type": "JsonField", "name": "boxes", "selector": "$steps.det.predictions"},
               {"type": "JsonField", "name": "classes", "selector": "$steps.cls.predictions"}]
    results = compile_workflow(spec([detect(), crop(), classify()], outputs), models).run(photos, models)
    expected = direct(models, "coco", {"name": "cls", "model": "squeeze"}, photos)
    assert sum(len(d) for d in expected) >= 10  # real photos with real detections
    assert json.loads(json.dumps(results, allow_nan=False)) == results  # plain JSON values only
    for i, (result, found) in enumerate(zip(results, expected, strict=True)):
        boxes = result["boxes"]
        assert boxes["image"] == {"width": photos[i].shape[1], "height": photos[i].shape[0]}
        predictions = boxes["predictions"]
        assert [p["class"] for p in predictions] == class_names(found).tolist()
        assert [p["class_id"] for p in predictions] == found.class_id.tolist()
        np.testing.assert_allclose([xyxy(p) for p in predictions], found.xyxy.reshape(-1, 4), atol=1e-3)
        np.testing.assert_allclose([p["confidence"] for p in predictions], found.confidence, rtol=1e-6)
        assert {p["parent_id"] for p in predictions} <= {f"image.[{i}]"}
        # one classification per crop, in detection order: the same top classes as the direct run
        assert [c["top"] for c in result["classes"]] == [r["class"] for r in found.data["cls"]]
        assert [c["parent_id"] for c in result["classes"]] == [p["detection_id"] for p in predictions]
        assert all(c["prediction_type"] == "classification" and c["root_parent_id"] == f"image.[{i}]"
                   for c in result["classes"])


def test_filters_crops_and_own_coordinates(models: dict[str, LoadedModel], photos: list[np.ndarray]) -> None:
    steps = [detect(), class_filter("people", "$steps.det.predictions", statement("class_name", "==", "person"),
                                    statement("confidence", "(Number) >=", 0.6)),
             crop(predictions="$steps.people.predictions"), classify()]
    outputs = [{"type": "JsonField", "name": "all", "selector": "$steps.det.predictions"},
               {"type": "JsonField", "name": "people", "selector": "$steps.people.predictions"},
               {"type": "JsonField", "name": "crops", "selector": "$steps.crop.*", "coordinates_system": "own"},
               {"type": "JsonField", "name": "cls", "selector": "$steps.cls.predictions"}]
    image = photos[1]  # Times Square: people at several confidences, and cars
    result = compile_workflow(spec(steps, outputs), models).run([image], models)[0]
    everyone = result["all"]["predictions"]
    people = [p for p in everyone if p["class"] == "person" and p["confidence"] >= 0.6]
    assert 0 < len(people) < len(everyone)
    assert result["people"]["predictions"] == people  # the filter's output: the same dicts, ids included
    assert len(result["crops"]) == len(result["cls"]) == len(people)
    for person, one_crop, label in zip(people, result["crops"], result["cls"], strict=True):
        box = [round(v) for v in xyxy(person)]
        picture = one_crop["crops"]
        assert picture["parent_id"] == person["detection_id"] == label["parent_id"]
        assert picture["parent_origin"] == {"offset_x": box[0], "offset_y": box[1], "width": image.shape[1],
                                            "height": image.shape[0]}
        pixels = cv2.imdecode(np.frombuffer(base64.b64decode(picture["value"]), np.uint8), cv2.IMREAD_COLOR)
        assert pixels.shape[:2] == (box[3] - box[1], box[2] - box[0]) == (label["image"]["height"],
                                                                           label["image"]["width"])
        own = one_crop["predictions"]["predictions"][0]  # the person in the crop's own pixels
        assert own["x"] == pytest.approx(person["x"] - box[0]) and own["y"] == pytest.approx(person["y"] - box[1])
        assert own["parent_id"] == person["detection_id"] and own["root_parent_id"] == "image"


def test_detection_crop_ocr_on_plates_reads_as_the_pipeline(models: dict[str, LoadedModel],
                                                            photos: list[np.ndarray]) -> None:
    steps = [detect("plates", model_id="plates", confidence=0.3, iou_threshold=0.45),
             crop(predictions="$steps.plates.predictions"),
             {"type": OCR, "name": "text", "images": "$steps.crop.crops"}]
    outputs = [{"type": "JsonField", "name": "plates", "selector": "$steps.plates.predictions"},
               {"type": "JsonField", "name": "text", "selector": "$steps.text.*"}]
    compiled = compile_workflow(spec(steps, outputs), models, ocr_model="reader")
    buses = photos[0]
    result = compiled.run([buses], models)[0]
    expected = direct(models, "plates", {"name": "text", "model": "reader"}, [buses])[0]
    readings = [r["text"] for r in expected.data["text"]]
    assert [t["result"] for t in result["text"]] == readings
    assert any(len(text) >= 5 and text.isalnum() for text in readings)  # a real plate read
    for plate, text in zip(result["plates"]["predictions"], result["text"], strict=True):
        assert text["parent_id"] == plate["detection_id"] and text["prediction_type"] == "ocr"
        if text["result"]:  # the read picture's box, in image pixels by default
            box = text["predictions"]["predictions"][0]
            np.testing.assert_allclose(xyxy(box), [round(v) for v in xyxy(plate)], atol=1e-3)


def test_crops_of_crops_nest_per_parent(models: dict[str, LoadedModel], photos: list[np.ndarray]) -> None:
    steps = [detect(class_filter=["bus"]), crop(), detect("plates", images="$steps.crop.crops", model_id="plates",
                                                          confidence=0.3),
             crop("plate_crops", "$steps.plates.predictions", images="$steps.crop.crops"),
             {"type": OCR, "name": "text", "images": "$steps.plate_crops.crops"}]
    outputs = [{"type": "JsonField", "name": "buses", "selector": "$steps.det.predictions"},
               {"type": "JsonField", "name": "plates", "selector": "$steps.plates.predictions"},
               {"type": "JsonField", "name": "text", "selector": "$steps.text.result"}]
    result = compile_workflow(spec(steps, outputs), models).run([photos[0]], models)[0]
    buses = result["buses"]["predictions"]
    assert len(buses) >= 2 and {b["class"] for b in buses} == {"bus"}
    assert len(result["plates"]) == len(result["text"]) == len(buses)  # one entry per bus
    for found, texts in zip(result["plates"], result["text"], strict=True):
        assert len(texts) == len(found["predictions"])  # one reading per plate of that bus
    assert any(texts for texts in result["text"])


def test_a_class_filter_with_unknown_classes_fails_when_the_pipeline_is_built(models: dict[str, LoadedModel]) -> None:
    compiled = compile_workflow(spec([detect(class_filter=["unicorn"])]), models)
    with pytest.raises(WorkflowError, match=r"^step 'det': .*class_filter names unknown classes \['unicorn'\]"):
        compiled.build(models)


def test_batches_give_one_result_per_image_with_listed_ids(models: dict[str, LoadedModel],
                                                           photos: list[np.ndarray]) -> None:
    compiled = compile_workflow(spec([detect(max_detections=2)]), models)
    run = compiled.build(models).run(photos)
    results = compiled.outputs(run, photos)
    assert len(results) == len(photos)
    for i, result in enumerate(results):
        assert set(result) == {"det"} and set(result["det"]) == {"inference_id", "predictions", "model_id"}
        assert result["det"]["model_id"] == "coco" and len(result["det"]["predictions"]["predictions"]) <= 2
        assert all(p["parent_id"] == f"image.[{i}]" for p in result["det"]["predictions"]["predictions"])
    custom = compiled.outputs(run, photos, [f"cam{i}" for i in range(len(photos))])
    assert {p["parent_id"] for p in custom[1]["det"]["predictions"]["predictions"]} == {"cam1"}
