"""TrtRuntime's host side (device buffers, copies, shapes, profile chunking) against a stand-in TensorRT.

The stand-in (tests/fixtures/fake_tensorrt.py) executes the engine's graph with ONNX Runtime on the CPU, so
these compare a model run through TrtRuntime with the same model through ONNX Runtime. The real TensorRT and
CUDA were not available to run.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnx
import pytest

from pipelines.models import load_model
from pipelines.runtime.base import ModelLoadError
from pipelines.runtime.batching import make_batch_dynamic
from pipelines.runtime.open import open_runtime
from pipelines.runtime.tensorrt import TrtRuntime
from tests.fixtures import fake_tensorrt


@pytest.fixture
def fake() -> Iterator[tuple[Any, fake_tensorrt.Cudart]]:
    with fake_tensorrt.installed() as installed:
        yield installed


def test_detector_through_an_engine_matches_onnx_runtime(
    fake: tuple[Any, fake_tensorrt.Cudart], models_dir: Path, media_dir: Path, tmp_path: Path
) -> None:
    _trt, cudart = fake
    engine = tmp_path / "yolox_nano.engine"
    shutil.copy(models_dir / "yolox_nano.onnx", engine)
    image = cv2.imread(str(media_dir / "three_buses.jpg"))
    assert image is not None
    via_engine = load_model({"type": "yolox", "path": str(engine)}, name="cars")
    via_ort = load_model({"type": "yolox", "path": str(models_dir / "yolox_nano.onnx")}, name="cars")
    assert via_engine.runtime.provider == "tensorrt" and isinstance(via_engine.runtime, TrtRuntime)
    got, expected = via_engine.detect([image, image[:, ::-1]]), via_ort.detect([image, image[:, ::-1]])
    for a, b in zip(got, expected, strict=True):
        assert len(a) == len(b) >= 3
        np.testing.assert_allclose(a.xyxy, b.xyxy, atol=1e-3)
        np.testing.assert_allclose(a.confidence, b.confidence, atol=1e-5)
    # batch 1 in the file: two pictures are two runs, each one copy in and one copy out per tensor
    assert [d for d, _ in cudart.copies[-4:]] == ["in", "out", "in", "out"]


def test_dynamic_batch_engine_runs_in_profile_sized_chunks(
    fake: tuple[Any, fake_tensorrt.Cudart], models_dir: Path, tmp_path: Path
) -> None:
    engine = tmp_path / "colour.plan"
    onnx.save(make_batch_dynamic(onnx.load(str(models_dir / "plate_color_cls_96.onnx"))), str(engine))
    runtime = open_runtime(engine, stage="colour")
    assert isinstance(runtime, TrtRuntime) and runtime.batch_dynamic and runtime.profile_max_batch == 4
    reference = open_runtime(models_dir / "plate_color_cls_96.onnx", stage="colour")
    crops = np.random.default_rng(3).random((7, 3, 96, 96), dtype=np.float32)
    before = runtime.context.engine.runs
    [out] = runtime.run({runtime.inputs[0].name: crops})
    assert runtime.context.engine.runs - before == 2  # 7 crops, a profile of at most 4: chunks of 4 and 3
    expected = np.concatenate([reference.run({reference.inputs[0].name: crops[i : i + 1]})[0] for i in range(7)])
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_buffers_grow_and_are_freed_on_close(
    fake: tuple[Any, fake_tensorrt.Cudart], models_dir: Path, tmp_path: Path
) -> None:
    _trt, cudart = fake
    engine = tmp_path / "colour.engine"
    onnx.save(make_batch_dynamic(onnx.load(str(models_dir / "plate_color_cls_96.onnx"))), str(engine))
    runtime = open_runtime(engine, stage="colour")
    assert isinstance(runtime, TrtRuntime)
    name, crop_bytes = runtime.inputs[0].name, 3 * 96 * 96 * 4
    assert runtime._buffers[name][1] == 2 * crop_bytes  # warmed up at the profile's optimal batch, 2
    runtime.run({name: np.zeros((1, 3, 96, 96), np.float32)})
    assert runtime._buffers[name][1] == 2 * crop_bytes  # a smaller batch reuses the buffer
    runtime.run({name: np.zeros((4, 3, 96, 96), np.float32)})
    assert runtime._buffers[name][1] == 4 * crop_bytes  # a larger one grows it
    runtime.close()
    assert cudart.memory == {} and cudart.streams == 0


def test_bytes_that_are_no_engine_are_a_clear_load_error(fake: tuple[Any, Any], tmp_path: Path) -> None:
    engine = tmp_path / "cars.engine"
    engine.write_bytes(b"not an engine at all" * 10)
    with pytest.raises(ModelLoadError, match=r"cars.engine: TensorRT .* cannot load this engine .* build-engine"):
        open_runtime(engine, stage="cars")
