"""GPU checks for a machine with an NVIDIA GPU (`make gpu-check`): the ONNX Runtime CUDA and TensorRT providers,
build-engine, the TensorRT engine runtime against ONNX Runtime CPU outputs, and throughput next to trtexec.

Everywhere else each test is skipped with the reason; none of them has run on the project's CPU-only machines.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from importlib import util
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest
import supervision as sv

from daemon.__main__ import main
from pipelines.models import load_model

pytestmark = pytest.mark.gpu

MODEL = "yolox_nano.onnx"
IMAGES = ("rf_car.jpg", "three_buses.jpg", "times_square_cars_people.jpg")
BOX_TOLERANCE_PX = 2.0  # fp32 CUDA vs CPU kernels; fp16 TensorRT gets FP16_TOLERANCE_PX
FP16_TOLERANCE_PX = 6.0


def _providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def needs_provider(name: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        name not in _providers(),
        reason=f"no {name} in this ONNX Runtime ({', '.join(_providers())}): a CPU build or no GPU; "
        "install onnxruntime-gpu on a CUDA machine (docs/MODELS.md). This GPU check did not run.",
    )


needs_tensorrt_package = pytest.mark.skipif(
    util.find_spec("tensorrt") is None or util.find_spec("cuda") is None,
    reason="the tensorrt and cuda-python packages are not installed (no GPU here): build-engine and the engine "
    "runtime cannot be checked. This GPU check did not run.",
)


def detect_all(models_dir: Path, media_dir: Path, providers: list[str], path: Path | None = None,
               trt_fp16: bool = False) -> list[sv.Detections]:
    model = load_model({"type": "yolox", "path": str(path or models_dir / MODEL),
                        "runtime": {"providers": providers, "trt_fp16": trt_fp16}}, name="gpu-check")
    assert model.kind == "detect"
    return model.detect([read(media_dir / name) for name in IMAGES])


def read(path: Path) -> npt.NDArray[np.uint8]:
    image = cv2.imread(str(path))
    assert image is not None, path
    return image.astype(np.uint8)


def assert_same_boxes(got: list[sv.Detections], want: list[sv.Detections], tolerance: float) -> None:
    for g, w in zip(got, want, strict=True):
        assert len(g) == len(w), (len(g), len(w))
        order_g, order_w = np.lexsort(g.xyxy.T[::-1]), np.lexsort(w.xyxy.T[::-1])
        assert np.abs(g.xyxy[order_g] - w.xyxy[order_w]).max() <= tolerance
        assert g.class_id is not None and w.class_id is not None
        assert list(g.class_id[order_g]) == list(w.class_id[order_w])


@needs_provider("CUDAExecutionProvider")
def test_cuda_provider_matches_cpu(models_dir: Path, media_dir: Path) -> None:
    cpu = detect_all(models_dir, media_dir, ["cpu"])
    assert_same_boxes(detect_all(models_dir, media_dir, ["cuda"]), cpu, BOX_TOLERANCE_PX)


@needs_provider("TensorrtExecutionProvider")
def test_tensorrt_provider_matches_cpu(models_dir: Path, media_dir: Path) -> None:
    cpu = detect_all(models_dir, media_dir, ["cpu"])
    assert_same_boxes(detect_all(models_dir, media_dir, ["tensorrt"], trt_fp16=True), cpu, FP16_TOLERANCE_PX)


@needs_tensorrt_package
def test_build_engine_and_the_engine_matches_ort_cpu(models_dir: Path, media_dir: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["build-engine", str(models_dir / MODEL), "--cache-dir", str(tmp_path), "--no-fp16"]) == 0
    engine = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert engine.is_file() and engine.stat().st_size > 0
    cpu = detect_all(models_dir, media_dir, ["cpu"])
    assert_same_boxes(detect_all(models_dir, media_dir, ["tensorrt"], path=engine), cpu, BOX_TOLERANCE_PX)


@needs_tensorrt_package
@pytest.mark.skipif(shutil.which("trtexec") is None, reason="trtexec is not on PATH (TensorRT's samples/bin)")
def test_engine_throughput_next_to_trtexec(models_dir: Path, media_dir: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["build-engine", str(models_dir / MODEL), "--cache-dir", str(tmp_path)]) == 0
    engine = Path(capsys.readouterr().out.strip().splitlines()[-1])
    proc = subprocess.run(["trtexec", f"--loadEngine={engine}", "--duration=5"], capture_output=True, text=True,
                          timeout=120, check=True)
    found = re.search(r"Throughput: ([0-9.]+) qps", proc.stdout)
    assert found, proc.stdout[-2000:]
    model = load_model({"type": "yolox", "path": str(engine)}, name="gpu-check")
    assert model.kind == "detect"
    image = read(media_dir / IMAGES[0])
    started, runs = time.perf_counter(), 0
    while time.perf_counter() - started < 5:
        model.detect([image])
        runs += 1
    ours = runs / (time.perf_counter() - started)
    print(f"engine end to end (preprocess + infer + decode): {ours:.1f} fps; trtexec (infer only): "
          f"{float(found.group(1)):.1f} qps")
    assert ours > 0.1 * float(found.group(1))  # pre/post-processing in Python costs, but not 10x
