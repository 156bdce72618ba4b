"""What every model runtime shares: options, errors, tensor info, provider choice, batching and warm-up helpers.

`pipelines/runtime/open.py` chooses the runtime for a file: ONNX Runtime (onnx.py) or a TensorRT engine
(tensorrt.py); both build on ModelFile here and have the RuntimeLike interface.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Protocol, TypeAlias

import numpy as np
import numpy.typing as npt
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state
from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)

Provider = Literal["tensorrt", "cuda", "cpu"]
# A model input or output: its dtype is whatever the model file declares (float32, float16, int64, ...).
Tensor: TypeAlias = npt.NDArray[np.generic]
ProviderOptions: TypeAlias = dict[str, str | int | bool]  # one ONNX Runtime provider's option dict

ORT_PROVIDER_NAMES: dict[str, str] = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
ENGINE_SUFFIXES = (".engine", ".plan")
# ORT raises its own exception classes, none of which derives from RuntimeError.
# fmt: off
ORT_ERRORS: tuple[type[BaseException], ...] = (
    ort_state.Fail, ort_state.InvalidArgument, ort_state.InvalidProtobuf, ort_state.NoSuchFile,
    ort_state.RuntimeException, ort_state.EPFail, ort_state.NotImplemented, ort_state.InvalidGraph, RuntimeError,
)
ORT_DTYPES: dict[str, np.dtype[np.generic]] = {
    f"tensor({onnx})": np.dtype(numpy) for onnx, numpy in (
        ("float", "float32"), ("float16", "float16"), ("double", "float64"), ("uint8", "uint8"), ("int8", "int8"),
        ("int32", "int32"), ("int64", "int64"), ("bool", "bool"),
    )
}
# fmt: on
# Spatial size used for dynamic dimensions during warm-up: a multiple of 32, as detectors need.
WARMUP_DYNAMIC_SIDE = 64


class RuntimeOptions(BaseModel):
    """How a model file is executed: providers in fallback order, threads, warm-up, TensorRT settings."""

    model_config = ConfigDict(extra="forbid")

    providers: list[Provider] = Field(
        default_factory=lambda: list[Provider](["cpu"]),
        description="Execution providers in fallback order: tensorrt, cuda, cpu. The first one available "
        "runs the model; listing cpu last makes loading never fail for lack of a GPU.",
        min_length=1,
    )
    intra_op_threads: int | None = Field(default=None, ge=1, description="Threads inside one operator (CPU).")
    inter_op_threads: int | None = Field(default=None, ge=1, description="Threads across operators (CPU).")
    parallel_runs: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        default="auto",
        description="CPU: a batch is cut into this many parts that run side by side on one session, each on "
        "one thread with `intra_op_threads` (default 1) inside. auto: usable cores / intra_op_threads, at most 4; "
        "1 on a GPU and outside the daemon. An explicit number is capped at the usable cores (`edgewatch bench "
        "sessions`: 2 single-thread runs did 130.5 fps of YOLOX-nano on 2 cores, one 2-thread session 102.7).",
    )
    spin_wait: bool = Field(
        default=False,
        description="Let ONNX Runtime's idle CPU threads spin (ORT's own default). Off here: on a small box a "
        "spinning detector thread steals the core that decoding and the next stage need (`edgewatch bench peer "
        "--spin on,off`: spinning cut the daemon's fps by 51-69% on a busy 2-core box; README 'Benchmarks').",
    )
    warmup_runs: int = Field(default=1, ge=0, description="Inference runs on zeros at load time.")
    device_id: int = Field(default=0, ge=0, description="GPU index for the CUDA/TensorRT providers and engines.")
    trt_cache_dir: Path | None = Field(
        default=None,
        description="Directory for cached TensorRT engines. Default: $CACHE_DIRECTORY/trt under systemd, "
        "else ~/.cache/edgewatch/trt.",
    )
    trt_fp16: bool = Field(default=True, description="Let TensorRT use float16 kernels where the GPU has them.")
    trt_workspace_mb: int = Field(
        default=2048, ge=16, description="Scratch memory TensorRT may use while building an engine, in MiB."
    )
    dynamic_batch: Literal["auto", "off"] = Field(
        default="auto",
        description="auto: a model whose batch axis is fixed at 1 gets it made dynamic in memory at load (the "
        "file is untouched), kept only if a batch of 2 gives the same outputs as two single runs, so crops run "
        "in one call (not with TensorRT); off: batches of such a model run as a loop of single calls.",
    )


class ModelLoadError(ValueError):
    """A model file that is missing, corrupt, or does not fit the stage it was given to."""


class InferenceError(RuntimeError):
    """A run that the backend refused (wrong shape or dtype fed, device failure)."""


@dataclass(frozen=True)
class TensorInfo:
    """One model input or output: a dimension is an int when fixed, a name or None when dynamic."""

    name: str
    shape: tuple[int | str | None, ...]
    dtype: np.dtype[np.generic]


class RuntimeLike(Protocol):
    """What stages rely on; Runtime (ONNX Runtime) and engine.TrtRuntime (TensorRT) both provide it."""

    path: Path
    stage: str
    provider: str
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    metadata: dict[str, str]
    parallel_runs: int  # parts a batch may be cut into and run side by side (pipelines/runtime/parallel.py)

    @property
    def batch_dynamic(self) -> bool: ...

    def run(self, feeds: dict[str, Tensor]) -> list[Tensor]: ...


def model_label(stage: str, path: Path) -> str:
    return f"stage {stage!r}: model {path}" if stage else f"model {path}"


def default_cache_dir() -> Path:
    """Engine cache: systemd's CacheDirectory= when set, else the user's cache folder."""
    systemd = os.environ.get("CACHE_DIRECTORY")
    if systemd:
        return Path(systemd.split(":")[0]) / "trt"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edgewatch" / "trt"


def trt_cache_dir(options: RuntimeOptions) -> Path:
    return (options.trt_cache_dir or default_cache_dir()).expanduser()


def provider_options(name: Provider, options: RuntimeOptions) -> ProviderOptions:
    """ONNX Runtime's option dict for one of our provider names."""
    if name == "tensorrt":
        return {
            "device_id": options.device_id,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(trt_cache_dir(options)),
            "trt_fp16_enable": options.trt_fp16,
            "trt_max_workspace_size": options.trt_workspace_mb << 20,
        }
    if name == "cuda":
        return {"device_id": options.device_id}
    return {}


def choose_providers(
    options: RuntimeOptions, available: Sequence[str], label: str = "model"
) -> list[tuple[str, ProviderOptions]]:
    """The (ORT provider name, options) list to pass to ONNX Runtime, in the requested order.

    Pure: `available` is what `ort.get_available_providers()` says, so this is testable without a GPU.
    CPU is always usable in ONNX Runtime, so requesting it can never fail.
    """
    chosen = [
        (ORT_PROVIDER_NAMES[name], provider_options(name, options))
        for name in dict.fromkeys(options.providers)
        if ORT_PROVIDER_NAMES[name] in available or name == "cpu"
    ]
    if not chosen:
        raise ModelLoadError(
            f"{label}: none of the requested execution providers {options.providers} is available; "
            f"this ONNX Runtime offers {list(available)} (add 'cpu' to providers to fall back)"
        )
    return chosen


def provider_name(ort_name: str) -> str:
    """Our short name for an ORT provider name ("CUDAExecutionProvider" -> "cuda")."""
    return {long: short for short, long in ORT_PROVIDER_NAMES.items()}.get(ort_name, ort_name)


def fixed_batch(inputs: Sequence[TensorInfo]) -> int | None:
    """The batch size every input is fixed at, or None when the batch axis is dynamic."""
    sizes = {i.shape[0] for i in inputs if len(i.shape) >= 1}
    if len(sizes) == 1:
        size = next(iter(sizes))
        if isinstance(size, int) and size > 0:
            return size
    return None


def run_batched(
    run_once: Callable[[dict[str, Tensor]], list[Tensor]],
    feeds: dict[str, Tensor],
    batch: int | None,
) -> list[Tensor]:
    """Run `feeds` of batch N on a model fixed at `batch`: chunk (padding the last chunk) and concatenate.

    Outputs whose first axis is the batch are concatenated; a batch-1 model whose output has no batch
    axis (some exports squeeze it) gets its per-image outputs stacked on a new first axis.
    """
    sizes = {v.shape[0] for v in feeds.values() if v.ndim >= 1}
    if len(sizes) != 1:
        raise InferenceError(f"feeds disagree on the batch size: { {k: v.shape for k, v in feeds.items()} }")
    n = sizes.pop()
    if batch is None or n == batch:
        return run_once(feeds)
    parts: list[list[Tensor]] = []
    batched: list[bool] = []
    for start in range(0, n, batch):
        count = min(batch, n - start)
        outs = run_once({k: _pad_rows(v[start : start + count], batch) for k, v in feeds.items()})
        batched = [o.ndim >= 1 and o.shape[0] == batch for o in outs]
        parts.append([o[:count] if is_batch else o for o, is_batch in zip(outs, batched, strict=True)])
    joined = []
    for index, column in enumerate(zip(*parts, strict=True)):
        if batched[index]:
            joined.append(np.concatenate(column, axis=0))
        elif batch == 1:
            joined.append(np.stack(column, axis=0))
        else:
            raise InferenceError(f"output {index} has no batch axis; cannot split a batch of {batch}")
    return joined


def _pad_rows(array: Tensor, rows: int) -> Tensor:
    if array.shape[0] == rows:
        return array
    filler = np.repeat(array[-1:], rows - array.shape[0], axis=0)
    return np.concatenate([array, filler], axis=0)


def warmup_feeds(inputs: Sequence[TensorInfo]) -> tuple[dict[str, Tensor], bool]:
    """Zeros of each input's shape, dynamic dims filled in (batch 1, others 64); and whether any was guessed."""
    feeds: dict[str, Tensor] = {}
    guessed = False
    for info in inputs:
        shape = []
        for axis, dim in enumerate(info.shape):
            if isinstance(dim, int) and dim > 0:
                shape.append(dim)
            else:
                guessed = True
                shape.append(1 if axis == 0 else WARMUP_DYNAMIC_SIDE)
        feeds[info.name] = np.zeros(shape, dtype=info.dtype)
    return feeds, guessed


def warm_up(
    runtime: RuntimeLike, runs: int, skip_guessed: bool = False, feeds: dict[str, Tensor] | None = None
) -> None:
    """Run zeros through the model `runs` times so the first real frame pays no lazy-init cost.

    `feeds` replaces the zeros (an engine knows its profile's optimal shapes). A failure with fully fixed
    shapes means the model is broken (ModelLoadError); with guessed dynamic sizes it may only mean the
    guess does not suit the model, so it is logged and loading goes on.
    """
    if runs <= 0:
        return
    label = model_label(runtime.stage, runtime.path)
    guessed = False
    if feeds is None:
        feeds, guessed = warmup_feeds(runtime.inputs)
    if guessed and skip_guessed:
        log.info("%s: warm-up skipped (dynamic input shape)", label)
        return
    try:
        for _ in range(runs):
            runtime.run(feeds)
    except InferenceError as exc:
        if not guessed:
            raise ModelLoadError(f"{label}: warm-up run failed: {exc}") from exc
        log.warning("%s: warm-up with guessed input sizes failed: %s", label, exc)


def ort_dtype(onnx_type: str) -> np.dtype[np.generic]:
    if onnx_type not in ORT_DTYPES:
        raise ModelLoadError(f"unsupported tensor type {onnx_type}; expected one of {sorted(ORT_DTYPES)}")
    return ORT_DTYPES[onnx_type]


class ModelFile:
    """What every runtime starts from: the model file (which must exist), its options and its log label."""

    max_batch: int | None  # the batch every input is fixed at; None: dynamic

    def __init__(self, path: str | Path, options: RuntimeOptions | None = None, stage: str = "") -> None:
        self.path = Path(path)
        self.stage = stage
        self.options = options or RuntimeOptions()
        self.label = model_label(stage, self.path)
        if not self.path.is_file():
            raise ModelLoadError(f"{self.label}: file does not exist")

    @property
    def batch_dynamic(self) -> bool:
        return self.max_batch is None
