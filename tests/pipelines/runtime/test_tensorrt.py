"""TensorRT engines, the parts that run without a GPU: cache keys, profiles, progress, missing TensorRT."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from pipelines.runtime.base import InferenceError, ModelLoadError
from pipelines.runtime.open import open_runtime
from pipelines.runtime.tensorrt import (
    ProgressPrinter,
    TensorRTUnavailableError,
    build_engine,
    cuda_check,
    engine_key,
    engine_path,
    profile_shapes,
)

HAVE_TRT = importlib.util.find_spec("tensorrt") is not None
needs_no_trt = pytest.mark.skipif(HAVE_TRT, reason="tensorrt is installed here: the missing-TensorRT path cannot run")


def test_engine_key_changes_with_everything_an_engine_depends_on() -> None:
    base = engine_key(b"model", "NVIDIA Jetson Orin NX", "10.3.0", True)
    assert base == engine_key(b"model", "NVIDIA Jetson Orin NX", "10.3.0", True)
    variants = {
        engine_key(b"model2", "NVIDIA Jetson Orin NX", "10.3.0", True),
        engine_key(b"model", "NVIDIA GeForce RTX 4090", "10.3.0", True),
        engine_key(b"model", "NVIDIA Jetson Orin NX", "10.7.0", True),
        engine_key(b"model", "NVIDIA Jetson Orin NX", "10.3.0", False),
        engine_key(b"model", "NVIDIA Jetson Orin NX", "10.3.0", True, "b8-s32x640x1280"),
    }
    assert base not in variants and len(variants) == 5


def test_engine_key_format_is_file_name_safe() -> None:
    # sha256(b"model")[:16], then the GPU name slugged, the TensorRT version and the precision
    assert engine_key(b"model", "NVIDIA GeForce RTX 4090 (PCIe)", "10.3.0", False) == (
        "9372c470eeadd5ec-nvidia-geforce-rtx-4090-pcie-trt10.3.0-fp32"
    )
    assert engine_key(b"", "", "10.0.1", True).split("-")[1] == "gpu"


def test_engine_path_sits_in_the_cache_dir_named_after_the_model(tmp_path: Path) -> None:
    path = engine_path(tmp_path, Path("/models/yolox_nano.onnx"), "abc-gpu-trt10.3.0-fp16")
    assert path == tmp_path / "yolox_nano-abc-gpu-trt10.3.0-fp16.engine"


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ((1, 3, 416, 416), None),
        ((-1, 3, 416, 416), ((1, 3, 416, 416), (8, 3, 416, 416), (8, 3, 416, 416))),
        ((1, 3, -1, -1), ((1, 3, 32, 32), (1, 3, 640, 640), (1, 3, 1280, 1280))),
        ((-1, 3, 48, -1), ((1, 3, 48, 32), (8, 3, 48, 640), (8, 3, 48, 1280))),
    ],
)
def test_profile_shapes(shape: tuple[int, ...], expected: tuple | None) -> None:
    assert profile_shapes(shape, 8, (32, 640, 1280)) == expected


def test_progress_printer_nests_phases_and_throttles_steps() -> None:
    lines: list[str] = []
    printer = ProgressPrinter(lines.append)
    printer.phase_start("Building engine", None, 2)
    printer.phase_start("Tactic search", "Building engine", 100)
    for step in range(100):
        assert printer.step_complete("Tactic search", step) is True
    printer.phase_finish("Tactic search")
    printer.step_complete("Building engine", 0)
    printer.step_complete("Building engine", 1)
    printer.phase_finish("Building engine")
    assert lines[:3] == ["Building engine (0/2)", "  Tactic search (0/100)", "  Tactic search (10/100)"]
    assert lines.count("  Tactic search (100/100)") == 1
    assert len([line for line in lines if "Tactic search (" in line]) == 11  # start + every 10%
    assert lines[-4:] == [
        "  Tactic search done",
        "Building engine (1/2)",
        "Building engine (2/2)",
        "Building engine done",
    ]


def test_progress_printer_hides_deep_phases() -> None:
    lines: list[str] = []
    printer = ProgressPrinter(lines.append, max_depth=1)
    printer.phase_start("top", None, 1)
    printer.phase_start("inner", "top", 5)
    printer.step_complete("inner", 4)
    printer.phase_finish("inner")
    assert lines == ["top (0/1)"]


class FakeCudaError:
    """Stands in for cuda-python's cudaError_t enum members (value/name)."""

    def __init__(self, value: int, name: str) -> None:
        self.value, self.name = value, name


def test_cuda_check() -> None:
    ok = FakeCudaError(0, "cudaSuccess")
    assert cuda_check((ok, 1234), "cudaMalloc") == 1234
    assert cuda_check((ok, 1, 2), "x") == (1, 2)
    with pytest.raises(InferenceError, match="cudaMalloc failed: cudaErrorMemoryAllocation"):
        cuda_check((FakeCudaError(2, "cudaErrorMemoryAllocation"), 0), "cudaMalloc")


@needs_no_trt
def test_build_engine_without_tensorrt_says_what_to_install(models_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(TensorRTUnavailableError, match=r"TensorRT is not installed.*tensorrt.*cuda-python"):
        build_engine(models_dir / "yolox_nano.onnx", tmp_path)
    assert not any(tmp_path.iterdir())


@needs_no_trt
def test_engine_file_without_tensorrt_is_a_model_load_error(tmp_path: Path) -> None:
    engine = tmp_path / "yolox.engine"
    engine.write_bytes(b"serialized engine")
    with pytest.raises(ModelLoadError, match="TensorRT is not installed"):
        open_runtime(engine, stage="cars")


@pytest.mark.parametrize("suffix", [".engine", ".plan"])
def test_missing_engine_file_names_the_file(tmp_path: Path, suffix: str) -> None:
    with pytest.raises(ModelLoadError, match=f"stage 'cars': model .*absent{suffix}: file does not exist"):
        open_runtime(tmp_path / f"absent{suffix}", stage="cars")
    with pytest.raises(ModelLoadError, match=r"absent.onnx: file does not exist"):
        build_engine(tmp_path / "absent.onnx", tmp_path)
