"""Classifier: real SqueezeNet (float16) and plate-colour models, label files, activations, load-time checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from daemon.bench.scenes import render_plate
from pipelines.classify import Classifier, activate, read_labels
from pipelines.models import load_model
from pipelines.runtime.base import ModelLoadError

CAR_WORDS = (
    "sports car",
    "car wheel",
    "convertible",
    "minivan",
    "grille",
    "racer",
    "cab",
    "wagon",
    "limousine",
    "pickup",
    "jeep",
    "coupe",
)


@pytest.fixture(scope="module")
def squeezenet(models_dir: Path) -> Classifier:
    return load_model(
        {
            "type": "classify",
            "path": str(models_dir / "squeezenet1.1_fp16.onnx"),
            "labels_file": str(models_dir / "imagenet_labels.txt"),
            "top_k": 5,
        },
        name="imagenet",
    )


@pytest.fixture(scope="module")
def plate_colour(models_dir: Path) -> Classifier:
    return load_model(
        {
            "type": "classify",
            "path": str(models_dir / "plate_color_cls_96.onnx"),
            "labels": ["blue", "green", "yellow"],
            "scale": 1 / 255,
        },
        name="colour",
    )


def test_squeezenet_float16_calls_the_car_a_car(squeezenet: Classifier, media_dir: Path) -> None:
    image = cv2.imread(str(media_dir / "rf_car.jpg"))
    [result] = squeezenet.classify([image])
    assert squeezenet.preprocess([image]).dtype == np.float16
    assert any(word in result["class"] for word in CAR_WORDS), result["class"]
    assert set(result) == {"class", "class_id", "confidence", "top"}
    assert len(result["top"]) == 5
    confidences = [t["confidence"] for t in result["top"]]
    assert confidences == sorted(confidences, reverse=True)
    assert result["top"][0] == {k: result[k] for k in ("class", "class_id", "confidence")}
    assert 0.0 < sum(confidences) <= 1.01  # already probabilities: auto must not soften them again


def test_batch_of_crops_equals_one_by_one(squeezenet: Classifier, media_dir: Path) -> None:
    image = cv2.imread(str(media_dir / "rf_car.jpg"))
    crops = [image, image[100:380, 20:400], image[:, ::-1], image[200:, 300:]]
    together = squeezenet.classify(crops)
    alone = [squeezenet.classify([c])[0] for c in crops]
    assert [r["class_id"] for r in together] == [r["class_id"] for r in alone]
    np.testing.assert_allclose([r["confidence"] for r in together], [r["confidence"] for r in alone], atol=1e-3)


@pytest.mark.parametrize(("colour", "expected"), [("yellow", "yellow"), ("blue", "blue")])
def test_plate_colour_classifier(plate_colour: Classifier, colour: str, expected: str) -> None:
    plates = [render_plate(text, (160, 46), colour) for text in ("AB123CD", "KX907ZT")]
    results = plate_colour.classify(plates)
    assert [r["class"] for r in results] == [expected, expected]
    assert all(r["confidence"] > 0.5 for r in results)


def test_empty_batch_runs_nothing(plate_colour: Classifier) -> None:
    assert plate_colour.classify([]) == []


def test_multi_label_lists_classes_over_threshold(models_dir: Path) -> None:
    model = load_model(
        {
            "type": "classify",
            "path": str(models_dir / "plate_color_cls_96.onnx"),
            "labels": ["blue", "green", "yellow"],
            "scale": 1 / 255,
            "multi_label": True,
            "threshold": 0.0,
            "top_k": 2,
        }
    )
    [result] = model.classify([render_plate("AB123CD", (160, 46), "yellow")])
    assert result["classes"][0]["class"] == "yellow"
    assert len(result["classes"]) == 3 and len(result["top"]) == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0,tench, Tinca tinca\n1,goldfish\n2,shark\n", ["tench, Tinca tinca", "goldfish", "shark"]),
        ("2,c\n0,a\n1,b\n\n", ["a", "b", "c"]),
        ("cat\ndog\nbird\n", ["cat", "dog", "bird"]),
        ("blue plate\ngreen plate\n", ["blue plate", "green plate"]),
    ],
)
def test_read_labels(tmp_path: Path, text: str, expected: list[str]) -> None:
    path = tmp_path / "labels.txt"
    path.write_text(text)
    assert read_labels(path) == expected


def test_read_labels_with_a_gap(tmp_path: Path) -> None:
    path = tmp_path / "labels.txt"
    path.write_text("0,a\n2,c\n")
    with pytest.raises(ModelLoadError, match=r"indices \[1\]"):
        read_labels(path)


@pytest.mark.parametrize(
    ("activation", "scores", "expected"),
    [
        ("none", [[0.2, 0.8]], [[0.2, 0.8]]),
        ("auto", [[0.2, 0.8]], [[0.2, 0.8]]),
        ("auto", [[0.0, np.log(3.0)]], [[0.25, 0.75]]),
        ("softmax", [[0.0, np.log(3.0)]], [[0.25, 0.75]]),
        ("sigmoid", [[0.0, 100.0]], [[0.5, 1.0]]),
    ],
)
def test_activate(activation: str, scores: list[list[float]], expected: list[list[float]]) -> None:
    np.testing.assert_allclose(activate(np.asarray(scores, dtype=np.float32), activation), expected, atol=1e-6)


def tiny_model(path: Path, input_shape: list[Any], output_shape: list[Any] | None = None) -> Path:
    """A one-op ONNX graph: Identity (or Flatten when output_shape is given) over a float input."""
    op = helper.make_node("Identity" if output_shape is None else "Flatten", ["x"], ["y"])
    graph = helper.make_graph(
        [op],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, input_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, output_shape or input_shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize(
    ("input_shape", "output_shape", "options", "message"),
    [
        ([1, 3, 32], None, {}, "expected rank 4"),
        ([1, 5, 32, 32], None, {}, "no channel axis of size 1 or 3"),
        ([1, 3, "h", "w"], None, {}, "dynamic size: set input_size"),
        ([1, 3, 8, 8], None, {}, "expected \\[N, classes\\]"),
        ([1, 3, 2, 2], [1, 12], {"labels": ["a", "b"]}, "2 labels for an output of 12 classes"),
        ([1, 3, 8, 8], [1, 192], {"input_size": (16, 16)}, "differs from the model's fixed input"),
    ],
)
def test_load_errors_name_stage_and_file(
    tmp_path: Path, input_shape: list[Any], output_shape: list[Any] | None, options: dict[str, Any], message: str
) -> None:
    path = tiny_model(tmp_path / "tiny.onnx", input_shape, output_shape)
    with pytest.raises(ModelLoadError, match=message) as info:
        load_model({"type": "classify", "path": str(path), **options}, name="colour")
    assert "'colour'" in str(info.value) and "tiny.onnx" in str(info.value)


def test_dynamic_model_with_input_size_and_nhwc_layout(tmp_path: Path) -> None:
    path = tiny_model(tmp_path / "nhwc.onnx", ["n", "h", "w", 3], ["n", "c"])
    model = load_model(
        {
            "type": "classify",
            "path": str(path),
            "input_size": (4, 2),
            "channel_order": "rgb",
            "scale": 1 / 255,
            "activation": "none",
        }
    )
    assert (model.layout, model.size_wh) == ("nhwc", (4, 2))
    crop = np.zeros((20, 40, 3), dtype=np.uint8)
    crop[..., 2] = 255  # red in BGR
    batch = model.preprocess([crop, crop])
    assert batch.shape == (2, 2, 4, 3)
    np.testing.assert_allclose(batch[0, 0, 0], [1.0, 0.0, 0.0])
    [result] = model.classify([crop])
    assert result["class_id"] in (0, 3, 6, 9, 12, 15, 18, 21) and result["confidence"] == 1.0
