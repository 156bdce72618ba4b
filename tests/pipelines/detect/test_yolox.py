"""YOLOX: the real yolox_nano on real pictures, the grid decode contract, batching, overrides, load errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import supervision as sv

from pipelines.detect.yolox import YoloX
from pipelines.models import load_model
from pipelines.runtime.base import ModelLoadError
from tests.pipelines.tiny_onnx import constant_model, grey


@pytest.fixture(scope="module")
def yolox(models_dir: Path) -> YoloX:
    return load_model({"type": "yolox", "path": str(models_dir / "yolox_nano.onnx")})


def names(detections: sv.Detections) -> list[str]:
    return [str(n) for n in detections.data["class_name"]]


def test_three_buses(yolox: YoloX, media_dir: Path) -> None:
    image = cv2.imread(str(media_dir / "three_buses.jpg"))
    detections = yolox.detect([image])[0]
    buses = detections[detections.data["class_name"] == "bus"]
    assert len(buses) == 3
    assert (buses.confidence >= 0.85).all()
    assert buses.class_id.tolist() == [5, 5, 5]
    h, w = image.shape[:2]
    assert (buses.xyxy >= 0).all() and (buses.xyxy[:, [0, 2]] <= w).all() and (buses.xyxy[:, [1, 3]] <= h).all()
    # three buses side by side: their centres spread across the picture from left to right
    centres = np.sort((buses.xyxy[:, 0] + buses.xyxy[:, 2]) / 2)
    assert centres[0] < w / 3 < centres[1] < 2 * w / 3 < centres[2]


def test_cars_and_people(yolox: YoloX, media_dir: Path) -> None:
    found = names(yolox.detect([cv2.imread(str(media_dir / "times_square_cars_people.jpg"))])[0])
    assert found.count("car") >= 2 and found.count("person") >= 3


def test_batch_of_real_pictures_equals_one_by_one(yolox: YoloX, media_dir: Path) -> None:
    images = [
        cv2.imread(str(media_dir / f))
        for f in ("three_buses.jpg", "times_square_cars_people.jpg", "crosswalk_people.jpg")
    ]
    assert yolox.runtime.batch_dynamic  # batch 1 in the file, made dynamic at load (pipelines/runtime/batching.py)
    together = yolox.detect(images)
    for image, batched in zip(images, together, strict=True):
        single = yolox.detect([image])[0]
        np.testing.assert_allclose(batched.xyxy, single.xyxy, atol=1e-3)
        np.testing.assert_array_equal(batched.class_id, single.class_id)


def test_overrides_per_call(yolox: YoloX, media_dir: Path) -> None:
    image = cv2.imread(str(media_dir / "times_square_cars_people.jpg"))
    default = yolox.detect([image])[0]
    strict = yolox.detect([image], confidence_threshold=0.8)[0]
    assert 0 < len(strict) < len(default)
    assert (strict.confidence >= 0.8).all()
    people = yolox.detect([image], class_filter=["person"], max_detections=2)[0]
    assert names(people) == ["person", "person"]
    assert len(yolox.detect([image])[0]) == len(default)  # overrides do not stick
    with pytest.raises(ValueError, match="unicorn"):
        yolox.detect([image], class_filter=["unicorn"])
    with pytest.raises(ValueError, match="threshold"):
        yolox.detect([image], threshold=0.3)
    assert yolox.detect([]) == []


def yolox_rows(nc: int = 2) -> np.ndarray:
    """Raw YOLOX rows for a 64x64 input: 8x8 + 4x4 + 2x2 anchor points."""
    rows = np.zeros((1, 84, 5 + nc), np.float32)
    # stride 8, cell (x=3, y=2): centre ((3 + .5) * 8, (2 + .25) * 8) = (28, 18), size 16 x 32
    rows[0, 2 * 8 + 3] = [0.5, 0.25, np.log(2), np.log(4), 0.9, 0.1, 0.8]
    # stride 32, cell (1, 1): centre (32, 32), size 32 x 32
    rows[0, 64 + 16 + 3] = [0.0, 0.0, 0.0, 0.0, 1.0, 0.95, 0.0]
    # below the threshold: objectness 0.9 x class 0.2
    rows[0, 5] = [0.0, 0.0, 0.0, 0.0, 0.9, 0.2, 0.0]
    return rows


@pytest.mark.parametrize(("image_wh", "factor"), [((64, 64), 1.0), ((128, 128), 2.0), ((128, 64), 2.0)])
def test_grid_decode_contract(tmp_path: Path, image_wh: tuple[int, int], factor: float) -> None:
    path = constant_model(tmp_path / "yolox.onnx", {"output": yolox_rows()}, input_shape=(1, 3, 64, 64))
    model = YoloX(YoloX.Options(path=path, class_names=["cat", "dog"], confidence_threshold=0.5))
    detections = model.detect([grey(0, image_wh[1], image_wh[0])])[0]
    assert names(detections) == ["cat", "dog"]
    np.testing.assert_allclose(detections.confidence, [0.95, 0.72], atol=1e-6)
    expected = np.array([[16, 16, 48, 48], [20, 2, 36, 34]], np.float32) * factor
    expected[:, [0, 2]] = expected[:, [0, 2]].clip(0, image_wh[0])
    expected[:, [1, 3]] = expected[:, [1, 3]].clip(0, image_wh[1])
    np.testing.assert_allclose(detections.xyxy, expected, atol=1e-4)


def test_already_decoded_export(tmp_path: Path) -> None:
    rows = np.zeros((1, 84, 6), np.float32)
    rows[0, 0] = [30, 20, 10, 8, 0.9, 1.0]
    path = constant_model(tmp_path / "decoded.onnx", {"output": rows}, input_shape=(1, 3, 64, 64))
    model = YoloX(YoloX.Options(path=path, class_names=["thing"], grid_decode=False))
    np.testing.assert_allclose(model.detect([grey(0)])[0].xyxy, [[25, 16, 35, 24]])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d, t: t / "absent.onnx", "absent.onnx.*does not exist"),
        (
            lambda d, t: (t / "junk.onnx").write_bytes(b"\x01\x02junk" * 100) and t / "junk.onnx",
            "junk.onnx.*not a valid ONNX model",
        ),
        (lambda d, t: d / "person_reid_0288.onnx", r"person_reid_0288.onnx expects input .*\[(1|N),256,128,3\]"),
        (lambda d, t: d / "squeezenet1.1_fp16.onnx", r"squeezenet1.1_fp16.onnx.*needs \[N,anchors,5\+classes\]"),
        (lambda d, t: d / "nanodet_m_320.onnx", r"nanodet_m_320.onnx: output has 1600 anchors but strides"),
    ],
)
def test_wrong_models_fail_at_load_naming_the_file(models_dir: Path, tmp_path: Path, make, message: str) -> None:
    with pytest.raises(ModelLoadError, match=message):
        load_model({"type": "yolox", "path": str(make(models_dir, tmp_path))})


def test_wrong_class_names_and_input_size(models_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match="2 names but the model outputs 80"):
        load_model({"type": "yolox", "path": str(models_dir / "yolox_nano.onnx"), "class_names": ["a", "b"]})
    with pytest.raises(ModelLoadError, match="fixed at 416x416"):
        load_model({"type": "yolox", "path": str(models_dir / "yolox_nano.onnx"), "input_size": [640, 640]})
    with pytest.raises(ValueError, match="unicorn"):
        load_model({"type": "yolox", "path": str(models_dir / "yolox_nano.onnx"), "class_filter": ["unicorn"]})


@pytest.mark.parametrize("style", ["plain", "indexed"])
def test_class_names_from_a_labels_file(tmp_path: Path, style: str) -> None:
    labels = tmp_path / "labels.txt"
    lines = [f"thing {i}" if style == "plain" else f"{i},thing {i}" for i in range(2)]
    labels.write_text("\n".join(lines) + "\n\n", encoding="utf-8")
    path = constant_model(tmp_path / "yolox.onnx", {"output": yolox_rows()}, input_shape=(1, 3, 64, 64))
    model = load_model({"type": "yolox", "path": str(path), "class_names": str(labels)})
    assert model.class_names == ["thing 0", "thing 1"]
    assert names(model.detect([grey(0)])[0]) == ["thing 0", "thing 1"]
    with pytest.raises(ModelLoadError, match=r"absent\.txt"):
        load_model({"type": "yolox", "path": str(path), "class_names": str(tmp_path / "absent.txt")})
