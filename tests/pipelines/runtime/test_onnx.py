"""Runtime: provider choice and fallback, load errors, input checks, warm-up and transparent batching."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from pipelines.runtime.base import (
    InferenceError,
    ModelLoadError,
    RuntimeOptions,
    TensorInfo,
    choose_providers,
    default_cache_dir,
    fixed_batch,
    provider_name,
    run_batched,
    warmup_feeds,
)
from pipelines.runtime.inputs import check_input
from pipelines.runtime.onnx import Runtime
from pipelines.runtime.open import open_runtime
from tests.pipelines.tiny_onnx import constant_model

TRT, CUDA, CPU = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
GPU_BUILD = [TRT, CUDA, CPU]
CPU_BUILD = ["AzureExecutionProvider", CPU]


@pytest.mark.parametrize(
    ("requested", "available", "expected"),
    [
        (["tensorrt", "cuda", "cpu"], GPU_BUILD, [TRT, CUDA, CPU]),
        (["tensorrt", "cuda", "cpu"], CPU_BUILD, [CPU]),
        (["cuda", "cpu"], [CUDA, CPU], [CUDA, CPU]),
        (["tensorrt", "cpu"], [CUDA, CPU], [CPU]),
        (["cuda"], GPU_BUILD, [CUDA]),
        (["cpu", "cuda"], GPU_BUILD, [CPU, CUDA]),
        (["cpu"], [], [CPU]),  # ORT always has a CPU provider, even if a fake list forgets it
        (["cuda", "cuda", "cpu"], GPU_BUILD, [CUDA, CPU]),
    ],
)
def test_choose_providers_keeps_order_and_filters_to_available(
    requested: list[str], available: list[str], expected: list[str]
) -> None:
    chosen = choose_providers(RuntimeOptions.model_validate({"providers": requested}), available)
    assert [name for name, _ in chosen] == expected
    assert "AzureExecutionProvider" not in [name for name, _ in chosen]


@pytest.mark.parametrize(
    ("requested", "available"),
    [(["tensorrt"], CPU_BUILD), (["cuda"], CPU_BUILD), (["tensorrt", "cuda"], [CUDA.replace("CUDA", "ROCm"), CPU])],
)
def test_choose_providers_without_cpu_fails_with_what_was_asked_and_offered(
    requested: list[str], available: list[str]
) -> None:
    with pytest.raises(ModelLoadError) as err:
        choose_providers(
            RuntimeOptions.model_validate({"providers": requested}), available, "stage 'cars': model x.onnx"
        )
    text = str(err.value)
    assert "stage 'cars'" in text and "x.onnx" in text
    assert str(requested) in text and str(available) in text


def test_provider_options_carry_device_cache_and_precision(tmp_path: Path) -> None:
    options = RuntimeOptions(
        providers=["tensorrt", "cuda"], device_id=1, trt_cache_dir=tmp_path, trt_fp16=False, trt_workspace_mb=512
    )
    chosen = dict(choose_providers(options, GPU_BUILD))
    assert chosen[TRT] == {
        "device_id": 1,
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(tmp_path),
        "trt_fp16_enable": False,
        "trt_max_workspace_size": 512 << 20,
    }
    assert chosen[CUDA] == {"device_id": 1}


@pytest.mark.parametrize(("ort_name", "short"), [(TRT, "tensorrt"), (CUDA, "cuda"), (CPU, "cpu"), ("X", "X")])
def test_provider_name(ort_name: str, short: str) -> None:
    assert provider_name(ort_name) == short


def test_default_cache_dir_prefers_systemd_cache_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CACHE_DIRECTORY", f"{tmp_path}/a:{tmp_path}/b")
    assert default_cache_dir() == tmp_path / "a" / "trt"
    monkeypatch.delenv("CACHE_DIRECTORY")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "edgewatch" / "trt"


def test_real_model_loads_on_cpu_and_logs_one_provider_line(models_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    options = RuntimeOptions(intra_op_threads=1, dynamic_batch="off")  # the file's own input shape
    with caplog.at_level(logging.INFO, logger="pipelines.runtime.onnx"):
        rt = Runtime(models_dir / "yolox_nano.onnx", options, stage="cars")
    lines = [r.getMessage() for r in caplog.records if "runs on" in r.getMessage()]
    assert lines == [f"stage 'cars': model {models_dir / 'yolox_nano.onnx'} runs on cpu (requested cpu)"]
    assert rt.provider == "cpu"
    assert rt.inputs == [TensorInfo("images", (1, 3, 416, 416), np.dtype(np.float32))]
    assert rt.outputs[0].shape == (1, 3549, 85)
    assert not rt.batch_dynamic
    assert rt.session.get_session_options().intra_op_num_threads == 1
    out = rt.run({"images": np.zeros((2, 3, 416, 416), np.float32)})
    assert out[0].shape == (2, 3549, 85)


def test_requesting_only_an_absent_gpu_provider_fails_with_stage_and_file(models_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"stage 'cars': model .*yolox_nano\.onnx.*\['cuda'\]"):
        Runtime(models_dir / "yolox_nano.onnx", RuntimeOptions(providers=["cuda"]), stage="cars")


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "does not exist"), (b"\x00garbage" * 64, "not a valid ONNX model"), (b"", "ONNX")],
)
def test_missing_or_corrupt_file_is_a_model_load_error(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "broken.onnx"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ModelLoadError, match=message) as err:
        open_runtime(path, stage="plates")
    assert "broken.onnx" in str(err.value) and "stage 'plates'" in str(err.value)
    assert "Traceback" not in str(err.value)


@pytest.mark.parametrize(
    ("model", "rank", "channels", "channel_axis", "dtypes", "needed"),
    [
        ("squeezenet1.1_fp16.onnx", 4, 3, 1, ("float32",), "[1,3,224,224] float16 but the yolox stage needs [N,3,H,W]"),
        ("person_reid_0288.onnx", 4, 3, 1, ("float32",), "[1,256,128,3] float32 but the yolox stage needs [N,3,H,W]"),
        ("yolox_nano.onnx", 4, 3, 3, ("float32",), "[1,3,416,416] float32 but the yolox stage needs [N,H,W,3]"),
    ],
)
def test_check_input_names_model_shape_and_need(
    models_dir: Path, model: str, rank: int, channels: int, channel_axis: int, dtypes: tuple[str, ...], needed: str
) -> None:
    rt = Runtime(models_dir / model, RuntimeOptions(warmup_runs=0, dynamic_batch="off"), stage="cars")
    with pytest.raises(ModelLoadError) as err:
        check_input(rt, "yolox", rank=rank, channels=channels, channel_axis=channel_axis, dtypes=dtypes)
    assert needed in str(err.value) and model in str(err.value) and "stage 'cars'" in str(err.value)


def test_check_input_accepts_a_fitting_model(models_dir: Path) -> None:
    rt = Runtime(models_dir / "person_reid_0288.onnx", RuntimeOptions(warmup_runs=0))
    assert check_input(rt, "embed", channels=3, channel_axis=3).name == "inputs:0"


def test_wrong_feed_shape_is_an_inference_error_naming_the_model(models_dir: Path) -> None:
    rt = Runtime(models_dir / "yolox_nano.onnx", RuntimeOptions(warmup_runs=0), stage="cars")
    with pytest.raises(InferenceError, match=r"yolox_nano\.onnx"):
        rt.run({"images": np.zeros((1, 3, 320, 320), np.float32)})
    with pytest.raises(InferenceError, match="missing inputs"):
        rt.run({})


@pytest.mark.parametrize("batch_dim", ["batch", 1])
def test_runtime_batches_transparently(tmp_path: Path, batch_dim: int | str) -> None:
    const = np.arange(12, dtype=np.float32).reshape(1, 3, 4)
    path = constant_model(tmp_path / "m.onnx", {"out": const}, input_shape=(batch_dim, 3, 8, 8), per_image_mean=True)
    rt = Runtime(path, RuntimeOptions(dynamic_batch="off"))  # the loop over a fixed batch is what this tests
    assert rt.batch_dynamic == (batch_dim == "batch")
    images = np.stack([np.full((3, 8, 8), v, np.float32) for v in (1.0, 2.0, 3.0)])
    together = rt.run({"images": images})[0]
    one_by_one = np.concatenate([rt.run({"images": images[i : i + 1]})[0] for i in range(3)])
    assert together.shape == (3, 3, 4)
    np.testing.assert_allclose(together, one_by_one)
    np.testing.assert_allclose(together[2], const[0] * 3.0)


def test_run_batched_pads_fixed_batches_and_stacks_squeezed_outputs() -> None:
    calls: list[int] = []

    def fixed_two(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        x = feeds["x"]
        calls.append(len(x))
        return [x * 10]

    out = run_batched(fixed_two, {"x": np.arange(5, dtype=np.float32)[:, None]}, 2)
    assert calls == [2, 2, 2]  # the last chunk is padded to the engine's fixed batch
    np.testing.assert_array_equal(out[0][:, 0], [0, 10, 20, 30, 40])
    with pytest.raises(InferenceError, match="no batch axis"):
        run_batched(lambda feeds: [np.zeros(7)], {"x": np.zeros((3, 1))}, 2)

    def squeezed(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return [np.full((4, 5), feeds["x"][0, 0], np.float32)]  # a batch-1 model that drops the batch axis

    maps = run_batched(squeezed, {"x": np.array([[1.0], [2.0]], np.float32)}, 1)[0]
    assert maps.shape == (2, 4, 5) and maps[1, 0, 0] == 2.0
    with pytest.raises(InferenceError, match="disagree"):
        run_batched(squeezed, {"x": np.zeros((2, 1)), "y": np.zeros((3, 1))}, 1)


@pytest.mark.parametrize(
    ("shapes", "expected"),
    [([(1, 3, 8, 8)], 1), ([("n", 3, 8, 8)], None), ([(4, 3), (4, 7)], 4), ([(1, 3), ("n", 3)], None)],
)
def test_fixed_batch(shapes: list[tuple[int | str, ...]], expected: int | None) -> None:
    assert fixed_batch([TensorInfo(f"i{k}", s, np.dtype(np.float32)) for k, s in enumerate(shapes)]) == expected


def test_warmup_feeds_fill_dynamic_dims() -> None:
    feeds, guessed = warmup_feeds(
        [TensorInfo("x", ("n", 3, None, "w"), np.dtype(np.float16)), TensorInfo("ids", (1, 77), np.dtype(np.int64))]
    )
    assert guessed
    assert feeds["x"].shape == (1, 3, 64, 64) and feeds["x"].dtype == np.float16
    assert feeds["ids"].shape == (1, 77) and feeds["ids"].dtype == np.int64
    assert not warmup_feeds([TensorInfo("ids", (1, 77), np.dtype(np.int64))])[1]


@pytest.mark.parametrize("spin_wait", [False, True])
def test_spin_wait_setting_runs_the_same(models_dir: Path, spin_wait: bool) -> None:
    options = RuntimeOptions(intra_op_threads=2, spin_wait=spin_wait, warmup_runs=0)
    runtime = Runtime(models_dir / "plate_color_cls_96.onnx", options, stage="colour")
    feed = {runtime.inputs[0].name: np.full((1, 3, 96, 96), 0.5, np.float32)}
    reference = Runtime(models_dir / "plate_color_cls_96.onnx", RuntimeOptions(warmup_runs=0)).run(feed)
    np.testing.assert_allclose(runtime.run(feed)[0], reference[0], rtol=1e-5)


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="this ONNX Runtime has CUDA")
def test_a_requested_gpu_provider_that_is_missing_is_a_warning_with_the_fix(
    models_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    options = RuntimeOptions(providers=["tensorrt", "cuda", "cpu"], intra_op_threads=1, dynamic_batch="off")
    with caplog.at_level(logging.INFO, logger="pipelines.runtime.onnx"):
        rt = Runtime(models_dir / "yolox_nano.onnx", options, stage="cars")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert rt.provider == "cpu" and len(warnings) == 1
    assert "no tensorrt or cuda provider" in warnings[0] and "onnxruntime-gpu" in warnings[0]
