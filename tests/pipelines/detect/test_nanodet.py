"""NanoDet: the real nanodet_m_320 on real pictures and the distribution-bin decode contract."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pipelines.detect.nanodet import NanoDet
from pipelines.models import load_model
from pipelines.runtime.base import ModelLoadError
from tests.pipelines.tiny_onnx import constant_model, grey


@pytest.fixture(scope="module")
def nanodet(models_dir: Path) -> NanoDet:
    return load_model({"type": "nanodet", "path": str(models_dir / "nanodet_m_320.onnx")})


def test_three_buses(nanodet: NanoDet, media_dir: Path) -> None:
    image = cv2.imread(str(media_dir / "three_buses.jpg"))
    detections = nanodet.detect([image])[0]
    buses = detections[detections.data["class_name"] == "bus"]
    assert len(buses) == 3
    # NanoDet's GFL head scores box quality as well as class: its best buses score 0.77-0.82, not 0.85+.
    assert (buses.confidence >= 0.7).all()
    centres = np.sort((buses.xyxy[:, 0] + buses.xyxy[:, 2]) / 2)
    w = image.shape[1]
    assert centres[0] < w / 3 < centres[1] < 2 * w / 3 < centres[2]


def test_agrees_with_yolox_on_bus_boxes(nanodet: NanoDet, models_dir: Path, media_dir: Path) -> None:
    image = cv2.imread(str(media_dir / "three_buses.jpg"))
    yolox = load_model({"type": "yolox", "path": str(models_dir / "yolox_nano.onnx")})
    a = nanodet.detect([image], class_filter=["bus"])[0]
    b = yolox.detect([image], class_filter=["bus"])[0]
    a_xyxy, b_xyxy = a.xyxy[np.argsort(a.xyxy[:, 0])], b.xyxy[np.argsort(b.xyxy[:, 0])]
    np.testing.assert_allclose(a_xyxy, b_xyxy, atol=15)  # the two detectors' boxes agree to a few pixels


def test_cars_and_people(nanodet: NanoDet, media_dir: Path) -> None:
    found = list(nanodet.detect([cv2.imread(str(media_dir / "times_square_cars_people.jpg"))])[0].data["class_name"])
    assert found.count("car") >= 1 and found.count("person") >= 3


BINS = 8
STRIDES = (8, 16, 32)  # a 64x64 input: 8x8 + 4x4 + 2x2 = 84 anchor points


def side_logits(*distances: float) -> np.ndarray:
    """Bin logits whose softmax expectation is each distance (in strides): whole or half bins."""
    logits = np.zeros((4, BINS), np.float32)
    for side, d in enumerate(distances):
        logits[side, int(np.floor(d))] = 30.0
        if d % 1:
            logits[side, int(np.ceil(d))] = 30.0
    return logits.ravel()


def nanodet_outputs() -> tuple[np.ndarray, np.ndarray]:
    cls = np.zeros((1, 84, 2), np.float32)
    dis = np.tile(side_logits(0, 0, 0, 0), (1, 84, 1))
    # stride 16, cell (x=1, y=2): centre ((1 + .5) * 16, (2 + .5) * 16) = (24, 40)
    cls[0, 64 + 2 * 4 + 1] = [0.1, 0.9]
    dis[0, 64 + 2 * 4 + 1] = side_logits(1, 2, 2, 0.5)  # left 16, top 32, right 32, bottom 8
    cls[0, 3] = [0.6, 0.0]  # stride 8, cell (3, 0): centre (28, 4), sides 0 -> a point box, dropped
    return cls, dis


EXPECTED_XYXY = [[8, 8, 56, 48]]


@pytest.mark.parametrize("layout", ["per_stride", "single"])
def test_bin_decode_contract(tmp_path: Path, layout: str) -> None:
    cls, dis = nanodet_outputs()
    if layout == "per_stride":
        splits = np.cumsum([64, 16])
        outputs = {}
        for stride, c, d in zip(STRIDES, np.split(cls, splits, 1), np.split(dis, splits, 1), strict=True):
            outputs[f"cls_pred_stride_{stride}"] = c
            outputs[f"dis_pred_stride_{stride}"] = d
    else:
        outputs = {"output": np.concatenate([cls, dis], axis=2)}
    path = constant_model(tmp_path / "nanodet.onnx", outputs, input_name="input.1", input_shape=(1, 3, 64, 64))
    model = NanoDet(NanoDet.Options(path=path, class_names=["cat", "dog"], confidence_threshold=0.5))
    detections = model.detect([grey(0)])[0]
    assert list(detections.data["class_name"]) == ["dog"]
    np.testing.assert_allclose(detections.confidence, [0.9])
    np.testing.assert_allclose(detections.xyxy, EXPECTED_XYXY, atol=1e-3)
    # a 128x64 picture: centred letterbox at scale 0.5 with 16 rows of padding above
    wide = model.detect([grey(0, 64, 128)])[0]
    np.testing.assert_allclose(wide.xyxy, [[16, 0, 112, 64]], atol=1e-3)


def test_wrong_outputs_fail_at_load(tmp_path: Path, models_dir: Path) -> None:
    two = constant_model(
        tmp_path / "two.onnx", {"a": np.zeros((1, 84, 34)), "b": np.zeros((1, 84, 34))}, input_shape=(1, 3, 64, 64)
    )
    with pytest.raises(ModelLoadError, match=r"two.onnx: outputs \['a', 'b'\]; the nanodet stage needs"):
        NanoDet(NanoDet.Options(path=two))
    with pytest.raises(ModelLoadError, match=r"plate_det_y5fu_320\.onnx: cannot read the class count"):
        load_model({"type": "nanodet", "path": str(models_dir / "plate_det_y5fu_320.onnx")})
