"""YOLOv5 family: the real HyperLPR plate detector with its 4 corners, and the key-point decode contract."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pipelines.detect.yolov5 import YoloV5
from pipelines.models import load_model
from pipelines.runtime.base import ModelLoadError
from tests.pipelines.tiny_onnx import constant_model, grey

PLATE = {"type": "yolov5", "pad_value": 0, "num_keypoints": 4, "class_names": ["single", "double"]}


@pytest.mark.parametrize("size", [320, 640])
def test_plate_with_four_corners_inside_its_box(models_dir: Path, media_dir: Path, size: int) -> None:
    crop = cv2.imread(str(media_dir / "plate_crop_1.png"))  # 151x54, "AD 799 KB"
    # The detector was trained on street scenes: give the plate some surroundings, as a car around it would.
    scene = cv2.copyMakeBorder(crop, 108, 108, 151, 151, cv2.BORDER_CONSTANT, value=(128, 128, 128))
    model = load_model({**PLATE, "path": str(models_dir / f"plate_det_y5fu_{size}.onnx")})
    detections = model.detect([scene])[0]
    assert len(detections) == 1
    assert detections.data["class_name"].tolist() == ["single"]
    assert detections.confidence[0] >= 0.5
    np.testing.assert_allclose(detections.xyxy[0], [151, 108, 302, 162], atol=8)
    corners = detections.data["keypoints"]
    assert corners.shape == (1, 4, 2) and corners.dtype == np.float32
    x1, y1, x2, y2 = detections.xyxy[0]
    assert ((corners[0, :, 0] >= x1 - 3) & (corners[0, :, 0] <= x2 + 3)).all()
    assert ((corners[0, :, 1] >= y1 - 3) & (corners[0, :, 1] <= y2 + 3)).all()
    # corners run top-left, top-right, bottom-right, bottom-left around the plate
    tl, tr, br, bl = corners[0]
    assert tl[0] < tr[0] and bl[0] < br[0] and tl[1] < bl[1] and tr[1] < br[1]


def test_no_plate_in_a_car_picture_without_one(models_dir: Path, media_dir: Path) -> None:
    model = load_model({**PLATE, "path": str(models_dir / "plate_det_y5fu_320.onnx")})
    assert len(model.detect([cv2.imread(str(media_dir / "rf_car.jpg"))])[0]) == 0  # its plate is not visible


def yolov5_rows(keypoint_dims: int, after_classes: bool) -> np.ndarray:
    """Two rows for a 64x64 input: K=2 key points, 2 classes, boxes as centre/size in input pixels."""
    k_values = 2 * keypoint_dims
    rows = np.zeros((1, 10, 5 + k_values + 2), np.float32)
    kp = [[10, 12, 0.9], [30, 40, 0.4]] if keypoint_dims == 3 else [[10, 12], [30, 40]]
    kp_flat, classes = np.ravel(kp), [0.2, 0.9]
    rows[0, 4, :5] = [20, 26, 20, 28, 0.8]  # xyxy (10, 12, 30, 40), score 0.8 * 0.9 -> class 1
    rows[0, 4, 5:] = np.concatenate([classes, kp_flat] if after_classes else [kp_flat, classes])
    rows[0, 7, :5] = [21, 26, 20, 28, 0.5]  # overlaps row 4 with a lower score: NMS drops it
    rows[0, 7, 5:] = rows[0, 4, 5:]
    return rows


@pytest.mark.parametrize(("keypoint_dims", "after_classes"), [(2, False), (3, False), (3, True)])
def test_keypoint_decode_contract(tmp_path: Path, keypoint_dims: int, after_classes: bool) -> None:
    path = constant_model(
        tmp_path / "y5.onnx",
        {"output": yolov5_rows(keypoint_dims, after_classes)},
        input_name="input",
        input_shape=(1, 3, 64, 64),
    )
    model = YoloV5(
        YoloV5.Options(
            path=path,
            num_keypoints=2,
            keypoint_confidence=keypoint_dims == 3,
            keypoints_after_classes=after_classes,
            class_names=["a", "b"],
            pad_value=0,
        )
    )
    # a 128x64 picture: centred letterbox at scale 0.5, 16 rows of padding above
    detections = model.detect([grey(0, 64, 128)])[0]
    assert detections.data["class_name"].tolist() == ["b"]
    np.testing.assert_allclose(detections.confidence, [0.72], atol=1e-6)
    np.testing.assert_allclose(detections.xyxy, [[20, 0, 60, 48]], atol=1e-4)
    np.testing.assert_allclose(detections.data["keypoints"], [[[20, -8], [60, 48]]], atol=1e-4)
    if keypoint_dims == 3:
        np.testing.assert_allclose(detections.data["keypoint_confidence"], [[0.9, 0.4]], atol=1e-6)
    else:
        assert "keypoint_confidence" not in detections.data
    assert len(model.detect([grey(0, 64, 128)], iou_threshold=0.95)[0]) == 2  # overlap 0.9 survives a loose NMS


def test_layout_that_cannot_hold_the_key_points_fails_at_load(models_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"plate_det_y5fu_320.onnx.*num_keypoints=5 needs"):
        load_model({**PLATE, "num_keypoints": 5, "path": str(models_dir / "plate_det_y5fu_320.onnx")})
    with pytest.raises(ModelLoadError, match="2 names but the model outputs 10 classes"):
        load_model({**PLATE, "num_keypoints": 0, "path": str(models_dir / "plate_det_y5fu_320.onnx")})
