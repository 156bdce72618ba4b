"""One-shot helpers: two_stage / two_stage_ocr record shapes, infer and infer_on_stream over every source kind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import supervision as sv

from daemon.bench.scenes import plate_scene
from pipelines.models import load_model
from pipelines.oneshot import infer, infer_on_stream, resolve_model, two_stage, two_stage_ocr

CAR_WORDS = ("car", "wheel", "convertible", "minivan", "grille", "racer", "cab", "wagon", "limousine", "jeep")


@pytest.fixture(scope="module")
def yolox(models_dir: Path) -> Any:
    return load_model({"type": "yolox", "path": str(models_dir / "yolox_nano.onnx")}, name="objects")


@pytest.fixture(scope="module")
def plates(models_dir: Path) -> Any:
    return load_model(
        {"type": "yolov5", "path": str(models_dir / "plate_det_y5fu_640.onnx"), "num_keypoints": 4, "pad_value": 0},
        name="plates",
    )


def write_video(path: Path, frames: list[np.ndarray]) -> Path:
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (w, h))
    assert writer.isOpened()
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def test_two_stage_records(yolox: Any, models_dir: Path, media_dir: Path) -> None:
    classifier = {
        "type": "classify",
        "path": str(models_dir / "squeezenet1.1_fp16.onnx"),
        "labels_file": str(models_dir / "imagenet_labels.txt"),
    }
    records = two_stage(media_dir / "rf_car.jpg", yolox, classifier)
    assert len(records) >= 1
    car = records[0]
    assert list(car) == ["bbox", "class", "class_id", "confidence", "classification"]
    assert car["class"] == "car" and car["class_id"] == 2 and 0.3 < car["confidence"] <= 1.0
    assert len(car["bbox"]) == 4 and car["bbox"][0] < car["bbox"][2] and car["bbox"][1] < car["bbox"][3]
    assert any(word in car["classification"]["class"] for word in CAR_WORDS)
    assert set(car["classification"]) == {"class", "class_id", "confidence", "top"}


def test_two_stage_filtered_detections_have_no_classification(yolox: Any, models_dir: Path, media_dir: Path) -> None:
    classifier = load_model(
        {
            "type": "classify",
            "path": str(models_dir / "plate_color_cls_96.onnx"),
            "labels": ["blue", "green", "yellow"],
            "scale": 1 / 255,
        }
    )
    records = two_stage(cv2.imread(str(media_dir / "times_square_cars_people.jpg")), yolox, classifier, on=["car"])
    assert {r["class"] for r in records} >= {"car", "person"}
    for record in records:
        assert (record["classification"] is None) == (record["class"] != "car")


def test_two_stage_ocr_records(plates: Any) -> None:
    texts = ["AB123CD", "KX907ZT", "MN450PR"]
    image, _ = plate_scene(texts, seed=5)
    records = two_stage_ocr(
        image, plates, {"type": "ocr", "uppercase": True, "allowed_characters": "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"}
    )
    assert sorted(r["text"] for r in records) == sorted(texts)
    for record in records:
        assert list(record) == ["bbox", "class", "class_id", "confidence", "text", "text_confidence"]
        assert 0.5 < record["text_confidence"] <= 1.0


def test_two_stage_ocr_with_paths_and_default_ocr(models_dir: Path, media_dir: Path) -> None:
    canvas = np.full((480, 640, 3), 120, dtype=np.uint8)
    crop = cv2.imread(str(media_dir / "plate_crop_1.png"))
    canvas[200 : 200 + crop.shape[0], 250 : 250 + crop.shape[1]] = crop
    records = two_stage_ocr(
        canvas,
        {"type": "yolov5", "path": str(models_dir / "plate_det_y5fu_640.onnx"), "num_keypoints": 4, "pad_value": 0},
    )
    assert [r["text"].replace(" ", "") for r in records] == ["AD799KB"]


@pytest.mark.parametrize(
    ("model", "kwargs", "error", "message"),
    [
        ("x.onnx", {}, ValueError, "needs its type"),
        (42, {}, TypeError, "expected a loaded model, a dict or a path"),
    ],
)
def test_resolve_model_errors(model: Any, kwargs: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        resolve_model(model, **kwargs)


def test_infer_on_every_source_kind(yolox: Any, media_dir: Path, tmp_path: Path) -> None:
    car = cv2.imread(str(media_dir / "rf_car.jpg"))
    blank = np.zeros((240, 320, 3), dtype=np.uint8)
    folder = tmp_path / "pictures"
    folder.mkdir()
    cv2.imwrite(str(folder / "b_car.jpg"), car)
    cv2.imwrite(str(folder / "a_blank.png"), blank)
    (folder / "notes.txt").write_text("not a picture")
    video = write_video(tmp_path / "clip.mp4", [car, car, np.zeros_like(car)])

    def cars(results: list[sv.Detections]) -> list[int]:
        return [int(np.sum(d.data["class_name"] == "car")) for d in results]

    assert cars(infer(yolox, car)) == [1]
    assert cars(infer(yolox, media_dir / "rf_car.jpg")) == [1]
    assert cars(infer(yolox, [car, str(media_dir / "rf_car.jpg"), blank], batch_size=2)) == [1, 1, 0]
    assert cars(infer(yolox, folder)) == [0, 1]  # sorted by name, .txt skipped
    assert cars(infer(yolox, video)) == [1, 1, 0]
    assert cars(infer(yolox, car, confidence_threshold=0.99)) == [0]


def test_infer_loads_models_from_a_path_and_type(models_dir: Path, media_dir: Path) -> None:
    results = infer(models_dir / "yolox_nano.onnx", media_dir / "rf_car.jpg", model_type="yolox")
    assert "car" in results[0].data["class_name"]


@pytest.mark.parametrize("batch_size", [1, 2])
def test_infer_on_stream_references(yolox: Any, media_dir: Path, tmp_path: Path, batch_size: int) -> None:
    car = cv2.imread(str(media_dir / "rf_car.jpg"))
    video = write_video(tmp_path / "clip.mp4", [car] * 3)
    items = list(infer_on_stream(yolox, video, batch_size=batch_size))
    assert [ref for ref, _, _ in items] == [0, 1, 2]
    assert all(image.shape == car.shape and isinstance(d, sv.Detections) for _, image, d in items)
    folder = tmp_path / "pictures"
    folder.mkdir()
    for name in ("2.jpg", "1.JPG", "3.bmp"):
        cv2.imwrite(str(folder / name), car)
    refs = [ref for ref, _, _ in infer_on_stream(yolox, folder, image_ext=[".jpg"], batch_size=batch_size)]
    assert refs == [str(folder / "1.JPG"), str(folder / "2.jpg")]


def test_infer_on_stream_bad_paths(yolox: Any, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="neither a folder nor a file"):
        list(infer_on_stream(yolox, tmp_path / "missing"))
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video")
    with pytest.raises(ValueError, match="cannot open"):
        list(infer_on_stream(yolox, junk))
