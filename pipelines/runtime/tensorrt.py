"""Native TensorRT engines: build from ONNX with visible progress, cache per model+GPU+TensorRT, and run.

`tensorrt` (>= 10) and `cuda-python` are optional and imported lazily, so that CPU-only installs never
touch them; without them every entry point raises TensorRTUnavailableError saying what to install.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from pipelines.runtime.base import (
    InferenceError,
    ModelFile,
    ModelLoadError,
    RuntimeOptions,
    Tensor,
    TensorInfo,
    fixed_batch,
    run_batched,
    trt_cache_dir,
    warm_up,
)

log = logging.getLogger(__name__)

ProgressFn = Callable[[str], None]
INSTALL_HINT = (
    "install NVIDIA's 'tensorrt' (>= 10) and 'cuda-python' wheels (pip install 'edgewatch[tensorrt]' "
    "cuda-python), or give the .onnx model with providers [tensorrt, cuda, cpu] instead"
)


class TensorRTUnavailableError(ModelLoadError):
    """TensorRT or cuda-python is not installed (or too old) on this machine."""


def import_tensorrt() -> ModuleType:
    try:
        trt = importlib.import_module("tensorrt")
    except ImportError as exc:
        raise TensorRTUnavailableError(f"TensorRT is not installed ({exc}); {INSTALL_HINT}") from exc
    major = int(str(trt.__version__).split(".")[0])
    if major < 10:
        raise TensorRTUnavailableError(f"TensorRT {trt.__version__} is too old; edgewatch needs 10 or newer")
    return trt


def import_cudart() -> ModuleType:
    try:
        cudart = importlib.import_module("cuda.bindings.runtime")  # cuda-python >= 12.6
    except ImportError:
        try:
            cudart = importlib.import_module("cuda.cudart")  # older cuda-python layout
        except ImportError as exc:
            raise TensorRTUnavailableError(f"cuda-python is not installed ({exc}); {INSTALL_HINT}") from exc
    return cudart


def cuda_check(result: Sequence[object], what: str) -> Any:
    """cuda-python returns (error, value...): raise on an error, else return the value(s).

    Untyped: the values are cuda-python's own (pointers, handles, property structs), shipped without hints.
    """
    error = result[0]
    if getattr(error, "value", error) != 0:
        raise InferenceError(f"CUDA {what} failed: {getattr(error, 'name', error)}")
    return result[1] if len(result) == 2 else tuple(result[1:])


def gpu_name(cudart: ModuleType, device_id: int) -> str:
    props = cuda_check(cudart.cudaGetDeviceProperties(device_id), f"cudaGetDeviceProperties({device_id})")
    name = props.name
    return (name.decode(errors="replace") if isinstance(name, bytes) else str(name)).rstrip("\x00").strip()


def engine_key(model_bytes: bytes, gpu: str, trt_version: str, fp16: bool, profile: str = "") -> str:
    """What an engine depends on: the exact model, the GPU model, TensorRT's version, precision, profile."""
    digest = hashlib.sha256(model_bytes).hexdigest()[:16]
    slug = re.sub(r"[^a-z0-9]+", "-", gpu.lower()).strip("-") or "gpu"
    parts = [digest, slug, f"trt{trt_version}", "fp16" if fp16 else "fp32"]
    return "-".join([*parts, profile] if profile else parts)


def engine_path(cache_dir: Path, onnx_path: Path, key: str) -> Path:
    return Path(cache_dir) / f"{Path(onnx_path).stem}-{key}.engine"


def profile_shapes(
    shape: Sequence[int], max_batch: int, sides: tuple[int, int, int]
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None:
    """(min, opt, max) for an input whose dynamic dims are -1: batch 1..max_batch, other dims by `sides`.

    None when the shape is fully fixed (no optimisation profile needed).
    """
    if all(d >= 0 for d in shape):
        return None
    triples = [
        (dim, dim, dim) if dim >= 0 else (1, max_batch, max_batch) if axis == 0 else sides
        for axis, dim in enumerate(shape)
    ]
    lo, opt, hi = zip(*triples, strict=True)
    return tuple(lo), tuple(opt), tuple(hi)


class ProgressPrinter:
    """Turns TensorRT's phase/step callbacks into readable lines (thread-safe, as TensorRT requires).

    Steps are reported at every 10% of a phase so that long tactic searches do not flood the terminal.
    """

    def __init__(self, report: ProgressFn, max_depth: int = 3) -> None:
        self.report = report
        self.max_depth = max_depth
        self.phases: dict[str, tuple[int, int]] = {}  # name -> (depth, steps)
        self.lock = threading.Lock()

    def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
        with self.lock:
            depth = self.phases[parent_phase][0] + 1 if parent_phase in self.phases else 0
            self.phases[phase_name] = (depth, num_steps)
            if depth < self.max_depth:
                self.report(f"{'  ' * depth}{phase_name} (0/{num_steps})")

    def step_complete(self, phase_name: str, step: int) -> bool:
        with self.lock:
            depth, total = self.phases.get(phase_name, (0, 0))
            done = step + 1
            tenth = max(1, total // 10)
            if depth < self.max_depth and total > 1 and (done % tenth == 0 or done == total):
                self.report(f"{'  ' * depth}{phase_name} ({done}/{total})")
        return True

    def phase_finish(self, phase_name: str) -> None:
        with self.lock:
            depth, _ = self.phases.pop(phase_name, (0, 0))
            if depth < self.max_depth:
                self.report(f"{'  ' * depth}{phase_name} done")


def progress_monitor(trt: ModuleType, printer: ProgressPrinter) -> object:
    """A trt.IProgressMonitor that forwards to `printer` (defined here because trt is imported lazily)."""

    base: Any = trt.IProgressMonitor  # tensorrt ships no type hints, so mypy cannot know its classes

    class Monitor(base):  # type: ignore[misc]
        def __init__(self) -> None:
            base.__init__(self)

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            printer.phase_start(phase_name, parent_phase, num_steps)

        def step_complete(self, phase_name: str, step: int) -> bool:
            return printer.step_complete(phase_name, step)

        def phase_finish(self, phase_name: str) -> None:
            printer.phase_finish(phase_name)

    return Monitor()


def onnx_metadata(onnx_path: Path) -> dict[str, str]:
    """The ONNX model's metadata_props (class names, input size), kept beside the engine as JSON."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    return dict(session.get_modelmeta().custom_metadata_map)


def build_engine(
    onnx_path: str | Path,
    cache_dir: str | Path | None = None,
    fp16: bool = True,
    workspace_mb: int = 2048,
    progress: ProgressFn | None = None,
    *,
    device_id: int = 0,
    max_batch: int = 8,
    dynamic_sides: tuple[int, int, int] = (32, 640, 1280),
) -> Path:
    """Build (or find cached) a TensorRT engine for `onnx_path`; returns the .engine path.

    The cache file name holds sha256(model)[:16], the GPU name, TensorRT's version and the precision, so a
    changed model, another GPU or a TensorRT upgrade builds a fresh engine instead of loading a stale one.
    """
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise ModelLoadError(f"model {onnx_path}: file does not exist")
    say = progress or (lambda line: log.info("%s", line))
    trt, cudart = import_tensorrt(), import_cudart()
    cuda_check(cudart.cudaSetDevice(device_id), f"cudaSetDevice({device_id})")
    model_bytes = onnx_path.read_bytes()
    gpu = gpu_name(cudart, device_id)
    profile_tag = f"b{max_batch}-s{'x'.join(map(str, dynamic_sides))}"
    key = engine_key(model_bytes, gpu, str(trt.__version__), fp16, profile_tag)
    target = engine_path(Path(cache_dir) if cache_dir else trt_cache_dir(RuntimeOptions()), onnx_path, key)
    if target.is_file():
        say(f"using cached engine {target}")
        return target
    say(f"building TensorRT {trt.__version__} engine for {onnx_path.name} on {gpu} ({'fp16' if fp16 else 'fp32'})")
    serialized = serialize_network(trt, onnx_path, model_bytes, fp16, workspace_mb, max_batch, dynamic_sides, say)
    target.parent.mkdir(parents=True, exist_ok=True)
    sidecar = {"source": onnx_path.name, "metadata": onnx_metadata(onnx_path)}
    Path(f"{target}.json").write_text(json.dumps(sidecar, indent=1), encoding="utf-8")
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    partial.write_bytes(serialized)
    os.replace(partial, target)  # atomic: a concurrent loader never sees half an engine
    say(f"engine written to {target}")
    return target


def serialize_network(
    trt: ModuleType,
    onnx_path: Path,
    model_bytes: bytes,
    fp16: bool,
    workspace_mb: int,
    max_batch: int,
    dynamic_sides: tuple[int, int, int],
    say: ProgressFn,
) -> bytes:
    """Parse the ONNX model and run TensorRT's builder on it (the minutes-long part), reporting progress."""
    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse(model_bytes, str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelLoadError(f"model {onnx_path}: TensorRT cannot parse it: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    shapes = {t.name: profile_shapes(tuple(t.shape), max_batch, dynamic_sides) for t in inputs}
    dynamic = {name: s for name, s in shapes.items() if s is not None}
    if dynamic:
        profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in dynamic.items():
            profile.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(profile)
    monitor = progress_monitor(trt, ProgressPrinter(say))  # must outlive the build
    config.progress_monitor = monitor
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ModelLoadError(f"model {onnx_path}: TensorRT failed to build an engine (see its log above)")
    return bytes(serialized)


class TrtRuntime(ModelFile):
    """A deserialised TensorRT engine with the Runtime interface (inputs, outputs, provider, run)."""

    def __init__(self, path: str | Path, options: RuntimeOptions | None = None, stage: str = "") -> None:
        super().__init__(path, options, stage)
        trt, self.cudart = import_tensorrt(), import_cudart()
        cuda_check(self.cudart.cudaSetDevice(self.options.device_id), f"cudaSetDevice({self.options.device_id})")
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise ModelLoadError(
                f"{self.label}: TensorRT {trt.__version__} cannot load this engine (built by "
                "another TensorRT version, for another GPU, or not an engine); rebuild it "
                "with `edgewatch build-engine MODEL.onnx`"
            )
        self.context = self.engine.create_execution_context()
        self.stream = cuda_check(self.cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._buffers: dict[str, tuple[int, int]] = {}
        self.inputs, self.outputs = self._tensors(trt)
        self.max_batch = fixed_batch(self.inputs)
        self.profile_max_batch = self._profile_batch(2)
        self.metadata = self._sidecar_metadata()
        self.provider = "tensorrt"
        self.parallel_runs = 1  # one GPU stream: batches go whole to the engine
        log.info("%s runs on tensorrt (engine, TensorRT %s)", self.label, trt.__version__)
        warm_up(self, self.options.warmup_runs, feeds=self._profile_feeds())

    def _tensors(self, trt: ModuleType) -> tuple[list[TensorInfo], list[TensorInfo]]:
        inputs: list[TensorInfo] = []
        outputs: list[TensorInfo] = []
        for index in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(index)
            shape = tuple(d if d >= 0 else None for d in self.engine.get_tensor_shape(name))
            info = TensorInfo(name, shape, np.dtype(trt.nptype(self.engine.get_tensor_dtype(name))))
            is_input = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (inputs if is_input else outputs).append(info)
        return inputs, outputs

    def _profile_batch(self, which: int) -> int | None:
        """Batch size of optimisation profile 0 for the first input: which = 0 min, 1 opt, 2 max."""
        if self.max_batch is not None or not self.inputs:
            return self.max_batch
        return int(self.engine.get_tensor_profile_shape(self.inputs[0].name, 0)[which][0])

    def _profile_feeds(self) -> dict[str, Tensor]:
        feeds: dict[str, Tensor] = {}
        for info in self.inputs:
            if all(isinstance(d, int) for d in info.shape):
                shape = tuple(int(d or 0) for d in info.shape)
            else:
                shape = tuple(self.engine.get_tensor_profile_shape(info.name, 0)[1])
            feeds[info.name] = np.zeros(shape, dtype=info.dtype)
        return feeds

    def _sidecar_metadata(self) -> dict[str, str]:
        sidecar = Path(f"{self.path}.json")
        if not sidecar.is_file():
            return {}
        try:
            return {str(k): str(v) for k, v in json.loads(sidecar.read_text(encoding="utf-8"))["metadata"].items()}
        except (OSError, ValueError, KeyError, AttributeError) as exc:
            log.warning("%s: ignoring unreadable metadata file %s: %s", self.label, sidecar, exc)
            return {}

    def run(self, feeds: dict[str, Tensor]) -> list[Tensor]:
        typed = {i.name: np.ascontiguousarray(feeds[i.name], dtype=i.dtype) for i in self.inputs if i.name in feeds}
        if len(typed) != len(self.inputs):
            raise InferenceError(f"{self.label}: missing inputs {sorted({i.name for i in self.inputs} - set(typed))}")
        batch = self.max_batch
        n = next(iter(typed.values())).shape[0] if typed else 0
        if batch is None and self.profile_max_batch is not None and n > self.profile_max_batch:
            batch = self.profile_max_batch  # more than the engine's profile allows: run it in chunks
        return run_batched(self._run_once, typed, batch)

    def _device(self, name: str, nbytes: int) -> int:
        """A device buffer for tensor `name` of at least `nbytes`, grown (never shrunk) as shapes change."""
        ptr, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                cuda_check(self.cudart.cudaFree(ptr), "cudaFree")
            ptr = int(cuda_check(self.cudart.cudaMalloc(max(nbytes, 1)), f"cudaMalloc({nbytes})"))
            self._buffers[name] = (ptr, nbytes)
        return ptr

    def _run_once(self, feeds: dict[str, Tensor]) -> list[Tensor]:
        cudart, h2d = self.cudart, self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        for info in self.inputs:
            array = feeds[info.name]
            if not self.context.set_input_shape(info.name, array.shape):
                raise InferenceError(
                    f"{self.label}: input {info.name} shape {array.shape} is outside the "
                    "engine's optimisation profile; rebuild with a larger --max-batch"
                )
            ptr = self._device(info.name, array.nbytes)
            cuda_check(cudart.cudaMemcpyAsync(ptr, array.ctypes.data, array.nbytes, h2d, self.stream), "copy in")
            self.context.set_tensor_address(info.name, ptr)
        results: list[Tensor] = []
        for info in self.outputs:
            shape = tuple(self.context.get_tensor_shape(info.name))
            if any(d < 0 for d in shape):
                raise InferenceError(f"{self.label}: output {info.name} has a data-dependent shape {shape}")
            host = np.empty(shape, dtype=info.dtype)
            self.context.set_tensor_address(info.name, self._device(info.name, host.nbytes))
            results.append(host)
        if not self.context.execute_async_v3(int(self.stream)):
            raise InferenceError(f"{self.label}: TensorRT execution failed")
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for info, host in zip(self.outputs, results, strict=True):
            if host.nbytes:
                src = self._buffers[info.name][0]
                cuda_check(cudart.cudaMemcpyAsync(host.ctypes.data, src, host.nbytes, d2h, self.stream), "copy out")
        cuda_check(cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        return results

    def close(self) -> None:
        """Free the device buffers and the stream (the engine itself goes with this object)."""
        for ptr, _ in self._buffers.values():
            self.cudart.cudaFree(ptr)
        self._buffers.clear()
        if getattr(self, "stream", None) is not None:
            self.cudart.cudaStreamDestroy(self.stream)
            self.stream = None
