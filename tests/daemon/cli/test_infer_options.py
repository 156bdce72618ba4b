"""`infer` takes the type's options or a model from a config; a type that does not fit names the one that does;
`two-stage` with a tracking config runs every stage on a single image."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from daemon.__main__ import main
from tests.conftest import ROOT


def test_the_default_type_on_the_plate_model_names_yolov5_with_key_points(
    models_dir: Path, media_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["infer", str(models_dir / "plate_det_y5fu_640.onnx"), str(media_dir / "rf_car.jpg")]) == 1
    err = capsys.readouterr().err
    assert "The outputs fit type yolov5 with num_keypoints: 4" in err


def test_a_runtime_layout_error_also_gets_the_hint(models_dir: Path, media_dir: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    model = str(models_dir / "nanodet_m_320.onnx")
    assert main(["infer", "--type", "ultralytics", model, str(media_dir / "rf_car.jpg")]) == 1
    assert "The outputs fit type nanodet" in capsys.readouterr().err


def test_type_options_from_the_command_line(models_dir: Path, media_dir: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    args = ["infer", "--json", "--type", "yolox", "--class-names", ",".join(f"c{i}" for i in range(80)),
            "--set", "class_agnostic_nms=true", "--conf", "0.5",
            str(models_dir / "yolox_nano.onnx"), str(media_dir / "rf_car.jpg")]
    assert main(args) == 0
    records = json.loads(capsys.readouterr().out)["detections"]
    assert records and {r["class"] for r in records} == {"c2"}  # the car, under the given name
    assert all(r["confidence"] >= 0.5 for r in records)
    assert main(["infer", "--type", "yolov5", "--num-keypoints", "4", "--set", "pad_value=0",
                 str(models_dir / "plate_det_y5fu_640.onnx"), str(media_dir / "rf_car.jpg")]) == 0
    assert main(["infer", "--set", "nokey", str(models_dir / "yolox_nano.onnx"), "x.jpg"]) == 1
    assert "expected KEY=VALUE" in capsys.readouterr().err


def test_a_model_from_a_config(models_dir: Path, media_dir: Path, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)  # the cameras' secrets are not needed for a model
    monkeypatch.setenv("EDGEWATCH_MODELS", str(models_dir))
    config = str(ROOT / "configs" / "carpark.yaml")
    assert main(["infer", "--json", "--config", config, "--model", "vehicles", str(media_dir / "rf_car.jpg")]) == 0
    assert [r["class"] for r in json.loads(capsys.readouterr().out)["detections"]] == ["car"]
    assert main(["infer", "--config", config, "--model", "nope", str(media_dir / "rf_car.jpg")]) == 1
    assert "has no model 'nope'; it has plates, reader, vehicles" in capsys.readouterr().err
    assert main(["infer", "--config", config, str(media_dir / "rf_car.jpg")]) == 1
    assert "--model NAME" in capsys.readouterr().err


def test_two_stage_with_a_tracking_config_runs_every_stage(models_dir: Path, media_dir: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    config = str(ROOT / "configs" / "vehicle-plates-tracked.yaml")
    assert main(["two-stage", config, str(media_dir / "rf_car.jpg")]) == 0
    out, err = capsys.readouterr()
    records = json.loads(out)["detections"]
    assert records and all("plates" in r["stages"] for r in records)  # the second stage ran on the single image
    assert err.count("WARNING daemon.cli.models: ") == 1 and "tracking is off in two-stage" in err
