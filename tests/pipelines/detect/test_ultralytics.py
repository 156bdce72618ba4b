"""Ultralytics: raw [1,4+nc,N] and end-to-end [1,N,6] layouts, metadata, pose key points, batching."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipelines.detect.ultralytics import Ultralytics, layout_of, names_from_metadata
from pipelines.runtime.base import InferenceError, ModelLoadError
from tests.pipelines.tiny_onnx import constant_model, grey

NAMES_META = {"names": "{0: 'cat', 1: 'dog'}", "imgsz": "[64, 64]", "task": "detect"}


def raw_output(kp: np.ndarray | None = None) -> np.ndarray:
    """[1, 4+2(+kp), 6]: columns are anchors; cx, cy, w, h in input pixels, then class scores."""
    anchors = np.array(
        [
            # cx, cy, w,  h,  cat, dog
            [20, 20, 20, 20, 0.9, 0.1],  # (10, 10, 30, 30) cat 0.9
            [21, 21, 20, 20, 0.8, 0.0],  # overlaps the first, same class: NMS drops it
            [22, 22, 20, 20, 0.0, 0.7],  # overlaps too, but a dog: kept unless NMS is class-agnostic
            [50, 50, 10, 10, 0.1, 0.3],  # (45, 45, 55, 55) dog 0.3
            [5, 5, 4, 4, 0.1, 0.1],  # below every threshold
            [40, 10, 8, 4, 0.0, 0.0],
        ],
        np.float32,
    )
    columns = anchors if kp is None else np.concatenate([anchors, kp], axis=1)
    return columns.T[None]


@pytest.fixture
def raw_model(tmp_path: Path) -> Ultralytics:
    path = constant_model(
        tmp_path / "v8.onnx", {"output0": raw_output()}, input_shape=(1, 3, 64, 64), metadata=NAMES_META
    )
    return Ultralytics(Ultralytics.Options(path=path))


def test_raw_layout_contract(raw_model: Ultralytics) -> None:
    assert raw_model.class_names == ["cat", "dog"] and raw_model.layout == "raw"
    d = raw_model.detect([grey(0)])[0]
    assert d.data["class_name"].tolist() == ["cat", "dog", "dog"]
    np.testing.assert_allclose(d.confidence, [0.9, 0.7, 0.3], atol=1e-6)
    np.testing.assert_allclose(d.xyxy, [[10, 10, 30, 30], [12, 12, 32, 32], [45, 45, 55, 55]])


@pytest.mark.parametrize(
    ("overrides", "classes", "count"),
    [
        ({"class_agnostic_nms": True}, ["cat", "dog"], 2),
        ({"confidence_threshold": 0.8}, ["cat"], 1),
        ({"class_filter": ["dog"]}, ["dog", "dog"], 2),
        ({"max_detections": 1}, ["cat"], 1),
        ({"iou_threshold": 0.95}, ["cat", "cat", "dog", "dog"], 4),
        ({"max_candidates": 2}, ["cat"], 1),  # the two best candidates are both cats; NMS keeps one
    ],
)
def test_overrides(raw_model: Ultralytics, overrides: dict, classes: list[str], count: int) -> None:
    d = raw_model.detect([grey(0)], **overrides)[0]
    assert d.data["class_name"].tolist() == classes and len(d) == count


def test_class_filter_picks_the_best_allowed_class(raw_model: Ultralytics) -> None:
    # anchor 0 is cat 0.9 / dog 0.1: with only dogs allowed it must not come back as a cat
    d = raw_model.detect([grey(0)], class_filter=["dog"], confidence_threshold=0.05)[0]
    assert set(d.data["class_name"].tolist()) == {"dog"}


def test_end2end_layout_contract(tmp_path: Path) -> None:
    rows = np.array(
        [[[10, 10, 30, 40, 0.9, 2], [11, 11, 31, 41, 0.85, 2], [0, 0, 5, 5, 0.1, 0], [40, 20, 60, 50, 0.6, 0]]],
        np.float32,
    )
    path = constant_model(tmp_path / "e2e.onnx", {"output0": rows}, input_shape=(1, 3, 64, 64))
    model = Ultralytics(Ultralytics.Options(path=path))
    assert model.layout == "end2end" and len(model.class_names) == 80  # no metadata: COCO, as Ultralytics
    d = model.detect([grey(0, 32, 32)])[0]  # 32x32 picture: scale 2 into the 64x64 input
    assert d.data["class_name"].tolist() == ["car", "car", "person"]  # NMS is the model's job here
    np.testing.assert_allclose(d.xyxy, [[5, 5, 15, 20], [5.5, 5.5, 15.5, 20.5], [20, 10, 30, 25]])
    assert model.detect([grey(0)], class_filter=["person"])[0].data["class_name"].tolist() == ["person"]
    few = Ultralytics(Ultralytics.Options(path=path, class_names=["a", "b"]))
    with pytest.raises(InferenceError, match="class id 2 but only 2 class names"):
        few.detect([grey(0)])


def test_pose_keypoints_from_metadata(tmp_path: Path) -> None:
    kp = np.zeros((6, 6), np.float32)
    kp[0] = [12, 14, 0.9, 28, 26, 0.2]  # two key points (x, y, visibility) for anchor 0
    path = constant_model(
        tmp_path / "pose.onnx",
        {"output0": raw_output(kp)},
        input_shape=(1, 3, 64, 64),
        metadata={**NAMES_META, "kpt_shape": "[2, 3]", "task": "pose"},
    )
    d = Ultralytics(Ultralytics.Options(path=path)).detect([grey(0)])[0]
    np.testing.assert_allclose(d.data["keypoints"][0], [[12, 14], [28, 26]])
    np.testing.assert_allclose(d.data["keypoint_confidence"][0], [0.9, 0.2])
    assert d.data["keypoints"].shape == (3, 2, 2)


@pytest.mark.parametrize("batch", ["batch", 1])
def test_batch_equals_one_by_one(tmp_path: Path, batch: int | str) -> None:
    path = constant_model(
        tmp_path / "m.onnx",
        {"output0": raw_output()},
        input_shape=(batch, 3, 64, 64),
        per_image_mean=True,
        metadata=NAMES_META,
    )
    # dynamic_batch off: a file fixed at batch 1 keeps it, so the runtime's loop is what this tests
    options = Ultralytics.Options(path=path, confidence_threshold=0.2, runtime={"dynamic_batch": "off"})
    model = Ultralytics(options)
    assert model.runtime.batch_dynamic == (batch == "batch")
    images = [grey(255), grey(204), grey(128)]  # the graph scales boxes and scores by each image's mean
    together = model.detect(images)
    singles = [model.detect([image])[0] for image in images]
    for a, b in zip(together, singles, strict=True):
        np.testing.assert_allclose(a.xyxy, b.xyxy, atol=1e-4)
        np.testing.assert_allclose(a.confidence, b.confidence, atol=1e-6)
        assert a.data["class_name"].tolist() == b.data["class_name"].tolist()
    assert [len(d) for d in together] == [3, 3, 2]  # scores 0.9/0.7/0.3 times 1, 0.8 and 0.5
    np.testing.assert_allclose(together[1].xyxy[0], np.array([10, 10, 30, 30]) * 0.8, atol=1e-3)


@pytest.mark.parametrize(
    ("shape", "classes", "kp", "expected"),
    [
        ((1, 84, 8400), None, 0, "raw"),
        ((1, 84, 8400), 80, 0, "raw"),
        ((1, 300, 6), None, 0, "end2end"),
        ((1, 300, 6), 80, 0, "end2end"),
        ((1, 56, 8400), None, 51, "raw"),
        ((1, 300, 57), 1, 51, "end2end"),
        ((1, 84, "anchors"), None, 0, "raw"),
        (("b", "n", "m"), None, 0, None),
        ((1, 6, 21), 2, 0, "raw"),
    ],
)
def test_layout_of(shape: tuple, classes: int | None, kp: int, expected: str | None) -> None:
    assert layout_of(shape, classes, kp) == expected


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("{0: 'person', 1: 'bicycle'}", ["person", "bicycle"]),
        ("['a', 'b']", ["a", "b"]),
        ("", None),
        ("not python", None),
        ("{}", None),
    ],
)
def test_names_from_metadata(text: str, names: list[str] | None) -> None:
    assert names_from_metadata(text) == names


def test_class_count_mismatch_fails_at_load(tmp_path: Path) -> None:
    path = constant_model(tmp_path / "v8.onnx", {"output0": raw_output()}, input_shape=(1, 3, 64, 64))
    with pytest.raises(ModelLoadError, match=r"v8.onnx: output \[(batch|1|N),6,6\]"):
        Ultralytics(Ultralytics.Options(path=path, class_names=["a", "b", "c"], layout="raw"))
