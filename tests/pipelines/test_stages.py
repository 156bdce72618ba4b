"""The chain with real models: plates -> rectified OCR, colour, cars -> plates -> OCR, batching, validation."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import supervision as sv
from pydantic import ValidationError

from daemon.bench.scenes import place_plate, plate_corners, plate_scene, render_plate
from pipelines.models import load_model
from pipelines.runtime.base import InferenceError
from pipelines.stages import NoopPipeline, Pipeline, PipelineSpec

PLATE_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


class CountingRun:
    """Delegates to the real runtime.run and records the batch size of every call."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.sizes: list[int] = []

    def __call__(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.sizes.append(len(next(iter(feeds.values()))))
        return self.real(feeds)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def models(models_dir: Path) -> dict[str, Any]:
    return {
        "plates": load_model(
            {
                "type": "yolov5",
                "path": str(models_dir / "plate_det_y5fu_640.onnx"),
                "num_keypoints": 4,
                "pad_value": 0,
                "class_names": ["single", "double"],
            },
            name="plates",
        ),
        "ocr": load_model({"type": "ocr", "uppercase": True, "allowed_characters": PLATE_CHARS}, name="ocr"),
        "colour": load_model(
            {
                "type": "classify",
                "path": str(models_dir / "plate_color_cls_96.onnx"),
                "labels": ["blue", "green", "yellow"],
                "scale": 1 / 255,
            },
            name="colour",
        ),
        "cars": load_model({"type": "yolox", "path": str(models_dir / "yolox_nano.onnx")}, name="cars"),
    }


def plate_pipeline(models: dict[str, Any], **text_stage: Any) -> Pipeline:
    return Pipeline(
        {
            "name": "plates",
            "detector": "plates",
            "stages": [
                {"name": "text", "model": "ocr", "crop": {"rectify_keypoints": True}, **text_stage},
                {"name": "colour", "model": "colour", "crop": {"rectify_keypoints": True}},
            ],
        },
        models,
    )


def on_canvas(crop: np.ndarray) -> np.ndarray:
    """The plate detector needs context around a plate: put a tight crop on a grey picture."""
    canvas = np.full((480, 640, 3), 120, dtype=np.uint8)
    h, w = crop.shape[:2]
    canvas[200 : 200 + h, 250 : 250 + w] = crop
    return canvas


def test_real_plate_crops_detected_rectified_and_read(models: dict[str, Any], media_dir: Path) -> None:
    frames = [on_canvas(cv2.imread(str(media_dir / f"plate_crop_{i}.png"))) for i in (1, 2)]
    results = plate_pipeline(models).run(frames).detections
    assert [len(d) for d in results] == [1, 1]
    assert [d.data["text"][0]["text"] for d in results] == ["AD799KB", "KRW301"]
    for d in results:
        assert d.data["keypoints"].shape == (1, 4, 2)
        assert d.metadata["stages"] == {"text": "ocr", "colour": "classify"}


@pytest.mark.parametrize(("colour", "seed"), [("yellow", 1), ("blue", 2)])
def test_synthetic_scene_plates_read_and_coloured(models: dict[str, Any], colour: str, seed: int) -> None:
    texts = ["AB123CD", "KX907ZT", "MN450PR", "HT221LW", "ZZ808AA", "RS314EF"]
    image, corners = plate_scene(texts, seed=seed, colour=colour)
    [dets] = plate_pipeline(models).run([image]).detections
    assert len(dets) == len(texts)
    assert sorted(r["text"] for r in dets.data["text"]) == sorted(texts)
    assert {r["class"] for r in dets.data["colour"]} == {colour}
    for text, quad in zip(texts, corners, strict=True):  # each reading sits on the plate that carries it
        i = [r["text"] for r in dets.data["text"]].index(text)
        np.testing.assert_allclose(dets.data["keypoints"][i].mean(axis=0), quad.mean(axis=0), atol=6)


def test_result_arrays_follow_the_data_conventions(models: dict[str, Any]) -> None:
    image, _ = plate_scene(["AB123CD", "KX907ZT", "MN450PR"], seed=3)
    blank = np.full((360, 640, 3), 128, dtype=np.uint8)
    dets, empty = plate_pipeline(models).run([image, blank]).detections
    for name in ("text", "colour"):
        assert dets.data[name].dtype == object and dets.data[name].shape == (len(dets),)
        assert empty.data[name].shape == (0,)
    assert set(dets.data["text"][0]) == {"text", "confidence", "char_confidences"}
    assert set(dets.data["colour"][0]) == {"class", "class_id", "confidence", "top"}
    assert empty.metadata["stages"] == {"text": "ocr", "colour": "classify"}


@pytest.mark.parametrize(
    ("stage", "runs"),
    [
        ({"on": ["double"]}, False),
        ({"on": ["single"]}, True),
        ({"on": None}, True),
        ({"min_parent_confidence": 0.999}, False),
        ({"min_crop_size": 500}, False),
    ],
)
def test_filters_leave_none_where_the_stage_did_not_run(
    models: dict[str, Any], stage: dict[str, Any], runs: bool
) -> None:
    image, _ = plate_scene(["AB123CD", "KX907ZT"], seed=4)
    [dets] = plate_pipeline(models, **stage).run([image]).detections
    assert len(dets) == 2
    assert all((value is not None) == runs for value in dets.data["text"])
    assert all(value is not None for value in dets.data["colour"])


@pytest.mark.parametrize("max_batch_size", [1, 4, 7, 64])
def test_crops_of_all_frames_go_to_the_model_together(
    models: dict[str, Any], monkeypatch: pytest.MonkeyPatch, max_batch_size: int
) -> None:
    rng_texts = [
        ["AB123CD", "KX907ZT", "MN450PR", "HT221LW", "ZZ808AA"],
        ["RS314EF", "TT555UV", "EF909GH"],
        ["PL246MN", "CD135EF", "GH777JK", "LM864NP", "WX321YZ", "BC468DF"],
    ]
    frames = [plate_scene(texts, seed=10 + i)[0] for i, texts in enumerate(rng_texts)]
    # one width bucket, so the OCR model's calls are exactly its batches
    ocr = load_model(
        {"type": "ocr", "uppercase": True, "allowed_characters": PLATE_CHARS, "bucket_widths": [320]}, name="ocr"
    )
    pipeline = Pipeline(
        {
            "name": "plates",
            "detector": "plates",
            "stages": [
                {"name": "text", "model": "ocr", "crop": {"rectify_keypoints": True}, "max_batch_size": max_batch_size},
                {"name": "colour", "model": "colour", "max_batch_size": max_batch_size},
            ],
        },
        {**models, "ocr": ocr},
    )
    ocr_calls, colour_calls = CountingRun(ocr.runtime.run), CountingRun(models["colour"].runtime.run)
    monkeypatch.setattr(ocr.runtime, "run", ocr_calls)
    monkeypatch.setattr(models["colour"].runtime, "run", colour_calls)
    results = pipeline.run(frames).detections
    crops = sum(len(d) for d in results)
    assert crops == 14
    full, rest = divmod(crops, max_batch_size)
    expected = [max_batch_size] * full + ([rest] if rest else [])
    assert len(ocr_calls.sizes) == math.ceil(crops / max_batch_size)
    assert ocr_calls.sizes == colour_calls.sizes == expected
    assert sorted(r["text"] for d in results for r in d.data["text"]) == sorted(t for texts in rng_texts for t in texts)


def car_with_plate(media_dir: Path, text: str, colour: str, flip: bool) -> np.ndarray:
    car = cv2.imread(str(media_dir / "rf_car.jpg"))
    if flip:
        car = np.ascontiguousarray(car[:, ::-1])
    x = 640 - 105 if flip else 105
    place_plate(car, render_plate(text, (110, 32), colour), plate_corners((x, 282), (110, 32), -4 if flip else 4, 0.05))
    return car


def test_chain_detect_detect_ocr(models: dict[str, Any], media_dir: Path) -> None:
    frames = [car_with_plate(media_dir, "KX907ZT", "yellow", False), car_with_plate(media_dir, "MN450PR", "blue", True)]
    pipeline = Pipeline(
        {
            "name": "cars",
            "detector": "cars",
            "stages": [
                {
                    "name": "plates",
                    "model": "plates",
                    "on": ["car", "bus", "truck"],
                    "crop": {"padding": 0.05},
                    "stages": [{"name": "text", "model": "ocr", "crop": {"rectify_keypoints": True}}],
                }
            ],
        },
        models,
    )
    texts = []
    for frame, dets in zip(frames, pipeline.run(frames).detections, strict=True):
        assert dets.metadata["stages"] == {"plates": "detect"}
        cars = np.flatnonzero(dets.data["class_name"] == "car")
        assert len(cars) >= 1
        for i in range(len(dets)):
            child = dets.data["plates"][i]
            assert (child is None) == (i not in cars)
        plates = [dets.data["plates"][i] for i in cars if len(dets.data["plates"][i])]
        assert len(plates) == 1
        plate = plates[0]
        assert isinstance(plate, sv.Detections) and plate.metadata["stages"] == {"text": "ocr"}
        # child boxes are in source pixels: inside their car, on the bumper where the plate was drawn
        x1, y1, x2, y2 = plate.xyxy[0]
        assert 230 < y1 < y2 < 330 and (x2 < 200 or x1 > 440)
        assert frame.shape[1] >= x2
        texts.append(plate.data["text"][0]["text"])
    assert texts == ["KX907ZT", "MN450PR"]


def test_embed_stage_stores_one_vector_per_person(models: dict[str, Any], models_dir: Path, media_dir: Path) -> None:
    reid = load_model({"type": "embed", "path": str(models_dir / "person_reid_0288.onnx")}, name="reid")
    pipeline = Pipeline(
        {
            "name": "people",
            "detector": "cars",
            "stages": [{"name": "reid", "model": "reid", "on": ["person"], "max_batch_size": 4}],
        },
        {**models, "reid": reid},
    )
    crowd = cv2.imread(str(media_dir / "rf_crowd.jpg"))
    [dets] = pipeline.run([crowd, crowd[:, ::-1].copy()]).detections[:1]
    people = dets.data["class_name"] == "person"
    assert people.sum() >= 5 and dets.metadata["stages"] == {"reid": "embed"}
    for is_person, vector in zip(people, dets.data["reid"], strict=True):
        if not is_person:
            assert vector is None
            continue
        assert vector.dtype == np.float32 and vector.shape == (256,)
        assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"detector": "nope"}, "pipeline 'p' detector: unknown model 'nope'"),
        ({"detector": "colour"}, "model 'colour' has kind 'classify'; expected a detect model"),
        ({"stages": [{"name": "t", "model": "missing"}]}, "stage p/t: unknown model 'missing'"),
        (
            {"stages": [{"name": "c", "model": "colour", "stages": [{"name": "t", "model": "ocr"}]}]},
            "stage p/c: only detect stages can have child stages",
        ),
        (
            {"stages": [{"name": "p2", "model": "plates", "stages": [{"name": "t", "model": "nope"}]}]},
            "stage p/p2/t: unknown model 'nope'",
        ),
    ],
)
def test_construction_errors_name_the_stage(models: dict[str, Any], spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        Pipeline({"name": "p", "detector": "plates", **spec}, models)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"stages": [{"name": "t", "model": "ocr", "colour": 1}]}, "Extra inputs are not permitted"),
        ({"stages": [{"name": "t", "model": "ocr"}, {"name": "t", "model": "colour"}]}, "two stages are named 't'"),
        ({"stages": [{"name": "keypoints", "model": "ocr"}]}, "stage name 'keypoints' is reserved"),
        ({"stages": [{"name": "t", "model": "ocr", "max_batch_size": 0}]}, "greater than or equal to 1"),
        ({"stages": [{"name": "bad name", "model": "ocr"}]}, "should match pattern"),
        ({"stages": [{"name": "t", "model": "e", "match": {"folder": "f", "embedding": "x"}}]}, "set by the stage"),
        ({"stages": [{"name": "t", "model": "e", "match": {"folder": "f", "thresold": 0.5}}]}, "thresold"),
    ],
)
def test_spec_validation(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        PipelineSpec.model_validate({"name": "p", "detector": "plates", **spec})


def test_yaml_bare_on_key_means_the_parent_filter() -> None:
    import yaml

    text = "name: p\ndetector: d\nstages:\n  - {name: t, model: ocr, on: [car, bus]}\n"
    data = yaml.safe_load(text)
    assert True in data["stages"][0]  # PyYAML's YAML 1.1 reading of `on`
    spec = PipelineSpec.model_validate(data)
    assert spec.stages[0].on == ["car", "bus"]


def test_every_spec_field_is_described() -> None:
    from pipelines.crops import CropOptions
    from pipelines.embed.gallery import GalleryOptions
    from pipelines.stages import StageSpec

    for model in (PipelineSpec, StageSpec, CropOptions, GalleryOptions):
        assert model.model_config.get("extra") == "forbid"
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"


def test_noop_pipeline() -> None:
    pipeline = NoopPipeline()
    out = pipeline.run([np.zeros((10, 10, 3), np.uint8)] * 3).detections
    assert [len(d) for d in out] == [0, 0, 0] and pipeline.name == "noop"
    assert pipeline.run([]).detections == []


def test_a_failing_second_stage_model_costs_only_its_own_results(
    models: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # ONNX Runtime itself refuses the OCR run (asked for an output the graph lacks), as a failing device would
    monkeypatch.setattr(models["ocr"].runtime, "_output_names", ["no_such_output"])
    image, _ = plate_scene(["AB123CD", "KX907ZT"], seed=4)
    with pytest.raises(InferenceError, match="no_such_output"):  # a library caller gets the error
        plate_pipeline(models).run([image])
    pipeline = Pipeline(plate_pipeline(models).spec, models, isolate_stage_errors=True)  # as the daemon builds it
    run = pipeline.run([image])
    [dets] = run.detections
    assert len(dets) == 2  # the plate detections stand
    assert list(dets.data["text"]) == [None, None]  # the failed stage's crops have no result
    assert all(value is not None for value in dets.data["colour"])  # the other stage still ran
    assert list(run.stage_errors) == ["plates/text"]
    assert "no_such_output" in run.stage_errors["plates/text"]
    monkeypatch.undo()
    run = pipeline.run([image])
    [dets] = run.detections
    assert run.stage_errors == {} and all(value is not None for value in dets.data["text"])
