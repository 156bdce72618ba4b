"""`edgewatch infer` and `edgewatch two-stage`: JSON output, annotated pictures, clear config errors."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from daemon.bench.scenes import plate_scene
from daemon.cli.models import register

PLATE_TEXTS = ["AB123CD", "KX907ZT"]


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="edgewatch")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


def plate_config(tmp_path: Path, models_dir: Path, **pipeline: Any) -> Path:
    (tmp_path / "plates.onnx").symlink_to(models_dir / "plate_det_y5fu_640.onnx")  # relative path in the YAML
    config = tmp_path / "two_stage.yaml"
    spec = {
        "name": "plates",
        "detector": "plates",
        "stages": [{"name": "text", "model": "ocr", "crop": {"rectify_keypoints": True}}],
        **pipeline,
    }
    config.write_text(
        json.dumps(
            {  # JSON is YAML
                "models": {
                    "plates": {"type": "yolov5", "path": "plates.onnx", "num_keypoints": 4, "pad_value": 0},
                    "ocr": {
                        "type": "ocr",
                        "uppercase": True,
                        "allowed_characters": "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
                    },
                },
                "pipeline": spec,
            }
        )
    )
    return config


def test_infer_json_on_one_image(models_dir: Path, media_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = run_cli(["infer", str(models_dir / "yolox_nano.onnx"), str(media_dir / "rf_car.jpg"), "--json"])
    assert code == 0
    [line] = capsys.readouterr().out.splitlines()
    message = json.loads(line)
    assert message["source"] == str(media_dir / "rf_car.jpg")
    assert [d["class"] for d in message["detections"]] == ["car"]
    assert set(message["detections"][0]) >= {"bbox", "class", "class_id", "confidence"}


def test_infer_text_summary_over_a_folder_with_annotations(
    models_dir: Path, media_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    car = cv2.imread(str(media_dir / "rf_car.jpg"))
    cv2.imwrite(str(folder / "car.jpg"), car)
    cv2.imwrite(str(folder / "empty.png"), np.zeros((100, 100, 3), np.uint8))
    out = tmp_path / "out"
    code = run_cli(
        [
            "infer",
            str(models_dir / "yolox_nano.onnx"),
            str(folder),
            "--type",
            "yolox",
            "--conf",
            "0.5",
            "--annotate",
            str(out),
        ]
    )
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{folder / 'car.jpg'}: 1 detections: car 0.")
    assert lines[1].endswith("empty.png: no detections")
    annotated = cv2.imread(str(out / "car.jpg"))
    assert annotated is not None and annotated.shape == car.shape
    assert np.abs(annotated.astype(int) - car.astype(int)).max() > 100  # boxes drawn


@pytest.mark.parametrize(
    ("argv_tail", "message"),
    [
        (["--type", "classify"], "has kind 'classify'; infer runs detectors"),
        (["--type", "yolox", "--conf", "2"], "confidence_threshold"),
    ],
)
def test_infer_errors(
    models_dir: Path, media_dir: Path, capsys: pytest.CaptureFixture[str], argv_tail: list[str], message: str
) -> None:
    model = models_dir / ("plate_color_cls_96.onnx" if "classify" in argv_tail else "yolox_nano.onnx")
    assert run_cli(["infer", str(model), str(media_dir / "rf_car.jpg"), *argv_tail]) == 1
    assert message in capsys.readouterr().err


def test_infer_missing_model_file(media_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["infer", str(tmp_path / "none.onnx"), str(media_dir / "rf_car.jpg")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_two_stage_prints_texts_and_annotates(
    models_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image, _ = plate_scene(PLATE_TEXTS, seed=8)
    picture = tmp_path / "scene.png"
    cv2.imwrite(str(picture), image)
    out = tmp_path / "annotated.jpg"
    assert run_cli(["two-stage", str(plate_config(tmp_path, models_dir)), str(picture), "--annotate", str(out)]) == 0
    [line] = capsys.readouterr().out.splitlines()
    detections = json.loads(line)["detections"]
    assert sorted(d["text"] for d in detections) == sorted(PLATE_TEXTS)
    assert all(d["stages"]["text"]["text"] == d["text"] for d in detections)
    annotated = cv2.imread(str(out))
    assert annotated is not None and annotated.shape == image.shape


def test_two_stage_over_a_video_writes_one_picture_per_frame(
    models_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image, _ = plate_scene(PLATE_TEXTS, seed=9)
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (image.shape[1], image.shape[0]))
    for _ in range(2):
        writer.write(image)
    writer.release()
    out = tmp_path / "frames"
    assert run_cli(["two-stage", str(plate_config(tmp_path, models_dir)), str(video), "--annotate", str(out)]) == 0
    messages = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [m["source"] for m in messages] == [0, 1]
    assert all(len(m["detections"]) == 2 for m in messages)
    assert sorted(p.name for p in out.iterdir()) == ["frame_000000.jpg", "frame_000001.jpg"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("models: [", "not valid YAML"),
        ("models: {}\n", "pipeline (line 1): required setting is missing"),
        ("models: {a: 1}\npipeline: {detector: a}\n", "models.a (line 1): expected a mapping with a 'type:' key"),
        ("models: {a: {type: nosuch, path: x.onnx}}\npipeline: {detector: a}\n", "unknown model type 'nosuch'"),
        ("models: {a: {type: yolox, path: missing.onnx}}\npipeline: {detector: a}\n", "does not exist"),
        ("models: {a: {type: yolox, path: m.onnx, colour: 1}}\npipeline: {detector: a}\n",
         "models.a.colour (line 1): unknown key 'colour'"),
    ],
)
def test_two_stage_config_errors(
    models_dir: Path, media_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    (tmp_path / "m.onnx").symlink_to(models_dir / "yolox_nano.onnx")
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    assert run_cli(["two-stage", str(config), str(media_dir / "rf_car.jpg")]) == 1
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("pipeline", "message"),
    [
        ({"detector": "nope"}, "unknown model 'nope'"),
        ({"stages": [{"name": "text", "model": "ocr", "extra": 1}]},
         "pipeline.stages[0].extra (line 1): unknown key 'extra'"),
        ({"detector": "ocr"}, "model 'ocr' has kind 'ocr'; expected a detect model"),
    ],
)
def test_two_stage_pipeline_errors(
    models_dir: Path,
    media_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    pipeline: dict[str, Any],
    message: str,
) -> None:
    config = plate_config(tmp_path, models_dir, **pipeline)
    assert run_cli(["two-stage", str(config), str(media_dir / "rf_car.jpg")]) == 1
    assert message in capsys.readouterr().err
