"""`edgewatch doctor`: explains missing GPU providers with their fix, fails on missing models, --json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from daemon.__main__ import main
from daemon.cli.doctor import check_model, check_providers, check_state_dir
from pipelines.models import model_class
from tests.conftest import ROOT

YoloxOptions = model_class("yolox").Options
CPU_ONLY = ["AzureExecutionProvider", "CPUExecutionProvider"]


def test_missing_gpu_providers_are_a_warning_with_the_fix() -> None:
    checks = check_providers(CPU_ONLY, ["cpu", "cuda", "tensorrt"])
    warn = next(c for c in checks if c.name == "requested providers")
    assert warn.status == "warn" and "cuda, tensorrt" in warn.detail
    assert "onnxruntime-gpu" in warn.fix and "Jetson" in warn.fix


def test_available_gpu_providers_pass() -> None:
    checks = check_providers(["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
                             ["cpu", "cuda", "tensorrt"])
    assert [c.status for c in checks] == ["ok", "ok"]
    assert "tensorrt, cuda, cpu" in checks[0].detail


def test_state_dir_writable_and_not(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ok = check_state_dir(tmp_path / "not" / "yet")  # the daemon creates it under a writable parent
    assert ok.status == "ok" and "MB free" in ok.detail
    monkeypatch.setattr("daemon.cli.doctor.os.access", lambda path, mode: False)
    failed = check_state_dir(tmp_path / "state")
    assert failed.status == "fail" and "StateDirectory" in failed.fix


def test_a_model_file_that_does_not_load_fails(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    check = check_model("det", YoloxOptions.model_validate({"type": "yolox", "path": str(bad)}))
    assert check.status == "fail" and "bad.onnx" in check.detail


def test_doctor_on_the_carpark_example_explains_the_missing_gpu_providers(
    models_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    monkeypatch.setenv("EDGEWATCH_MODELS", str(models_dir))
    assert main(["doctor", "--json", str(ROOT / "configs" / "carpark.yaml")]) == 0
    report = json.loads(capsys.readouterr().out)
    by_name = {c["name"]: c for c in report["checks"]}
    assert report["ok"] is True
    if "CUDAExecutionProvider" not in __import__("onnxruntime").get_available_providers():
        assert by_name["requested providers"]["status"] == "warn"
        assert "pip install onnxruntime-gpu" in by_name["requested providers"]["fix"]
    for model in ("vehicles", "plates", "reader"):
        assert by_name[f"model {model}"]["status"] == "ok" and "loads on" in by_name[f"model {model}"]["detail"]
    notes = [c for c in report["checks"] if c["name"] == "config reference"]
    assert len(notes) == 5 and all("cred:" in c["detail"] for c in notes)


def test_doctor_fails_on_a_missing_model_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("models:\n  det: {type: yolox, path: absent.onnx}\npipeline: {name: p, detector: det}\n"
                      "sources: [{id: a, type: file, path: x.mp4}]\nsinks: [{id: o, type: jsonl, path: o.jsonl}]\n")
    assert main(["doctor", str(config)]) == 1
    out = capsys.readouterr().out
    assert "[fail] config" in out and "absent.onnx does not exist" in out
