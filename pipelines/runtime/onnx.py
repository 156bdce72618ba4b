"""ONNX Runtime sessions (TensorRT EP, CUDA EP, CPU) with provider fallback, warm-up and batching."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from pipelines.runtime.base import (
    ORT_ERRORS,
    ORT_PROVIDER_NAMES,
    InferenceError,
    ModelFile,
    ModelLoadError,
    ProviderOptions,
    RuntimeOptions,
    Tensor,
    TensorInfo,
    choose_providers,
    fixed_batch,
    ort_dtype,
    provider_name,
    run_batched,
    trt_cache_dir,
    warm_up,
)
from pipelines.runtime.batching import dynamic_batch_session
from pipelines.runtime.parallel import resolve_runs, run_split

log = logging.getLogger(__name__)


class Runtime(ModelFile):
    """An ONNX Runtime session: the first available requested provider, warmed up, batch-transparent."""

    def __init__(self, path: str | Path, options: RuntimeOptions | None = None, stage: str = "") -> None:
        super().__init__(path, options, stage)
        self._splittable = True
        available = ort.get_available_providers()
        chosen = choose_providers(self.options, available, self.label)
        first = provider_name(chosen[0][0])
        self.parallel_runs = resolve_runs(self.options.parallel_runs, self.options.intra_op_threads, first)
        self.session = self._open(chosen)
        self.provider = provider_name(self.session.get_providers()[0])
        requested = [ORT_PROVIDER_NAMES[p] for p in self.options.providers]
        if self.session.get_providers()[0] not in requested:
            raise ModelLoadError(
                f"{self.label}: requested providers {self.options.providers} all failed to start; "
                f"ONNX Runtime fell back to {self.session.get_providers()} (check the CUDA/TensorRT libraries)"
            )
        log.info("%s runs on %s (requested %s)", self.label, self.provider, ", ".join(self.options.providers))
        missing = [p for p in self.options.providers if p != "cpu" and ORT_PROVIDER_NAMES[p] not in available]
        if missing:  # a GPU box on the CPU build of ONNX Runtime: say so loudly, with the fix
            log.warning("%s: this ONNX Runtime has no %s provider, so it runs on %s; install onnxruntime-gpu "
                        "(x86_64 with an NVIDIA GPU) or NVIDIA's onnxruntime-gpu wheel for your JetPack "
                        "(docs/MODELS.md, `edgewatch doctor`)", self.label, " or ".join(missing), self.provider)
        self._describe()
        if self.max_batch == 1 and self.options.dynamic_batch == "auto" and self.provider != "tensorrt":
            session = dynamic_batch_session(self.path, self.session, self.label)
            if session is not None:
                self.session = session
                self._describe()
        warm_up(self, self.options.warmup_runs, skip_guessed=self.provider == "tensorrt")

    def _describe(self) -> None:
        self.inputs = [TensorInfo(i.name, tuple(i.shape), ort_dtype(i.type)) for i in self.session.get_inputs()]
        self.outputs = [TensorInfo(o.name, tuple(o.shape), ort_dtype(o.type)) for o in self.session.get_outputs()]
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        self.max_batch = fixed_batch(self.inputs)
        self._output_names = [o.name for o in self.outputs]

    def _open(self, chosen: list[tuple[str, ProviderOptions]]) -> ort.InferenceSession:
        """A session on the first provider of `chosen` that really starts.

        ONNX Runtime, when a GPU provider fails to start (missing CUDA/TensorRT libraries), silently
        retries on the CPU; going down our own list instead keeps CUDA when only TensorRT is broken.
        """
        so = ort.SessionOptions()
        so.log_severity_level = 3  # ORT warns about harmless export quirks (initializers listed as inputs)
        if self.options.intra_op_threads:
            so.intra_op_num_threads = self.options.intra_op_threads
        elif self.parallel_runs > 1:  # each run on its caller's thread: no intra-op pool to wake or spin
            so.intra_op_num_threads = 1
        if self.options.inter_op_threads:
            so.inter_op_num_threads = self.options.inter_op_threads
        if not self.options.spin_wait:
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
            so.add_session_config_entry("session.inter_op.allow_spinning", "0")
        if any(name == ORT_PROVIDER_NAMES["tensorrt"] for name, _ in chosen):
            trt_cache_dir(self.options).mkdir(parents=True, exist_ok=True)
        for start in range(len(chosen)):
            attempt = chosen[start:]
            session = self._session(so, attempt)
            if session.get_providers()[0] == attempt[0][0] or start == len(chosen) - 1:
                break
            log.warning(
                "%s: %s failed to start; trying %s",
                self.label,
                provider_name(attempt[0][0]),
                ", ".join(provider_name(name) for name, _ in attempt[1:]),
            )
        return session

    def _session(self, so: ort.SessionOptions, chosen: list[tuple[str, ProviderOptions]]) -> ort.InferenceSession:
        try:
            return ort.InferenceSession(
                str(self.path),
                so,
                providers=[name for name, _ in chosen],
                provider_options=[opts for _, opts in chosen],
            )
        except ort_state.InvalidProtobuf as exc:
            raise ModelLoadError(f"{self.label}: not a valid ONNX model (protobuf parsing failed)") from exc
        except ORT_ERRORS as exc:
            raise ModelLoadError(f"{self.label}: ONNX Runtime cannot load it: {exc}") from exc

    def run(self, feeds: dict[str, Tensor]) -> list[Tensor]:
        """Outputs in model order; any batch size, looped inside when the model's batch axis is fixed."""
        typed = {
            info.name: np.ascontiguousarray(feeds[info.name], dtype=info.dtype)
            for info in self.inputs
            if info.name in feeds
        }
        if len(typed) != len(self.inputs):
            missing = sorted({i.name for i in self.inputs} - set(typed))
            raise InferenceError(f"{self.label}: missing inputs {missing}")
        rows = next(iter(typed.values())).shape[0] if typed else 0
        if self.parallel_runs > 1 and rows > 1 and self._splittable and self.max_batch in (None, 1):
            joined = run_split(self._run_rows, typed, self.parallel_runs)
            if joined is not None:
                return joined
            self._splittable = False  # an output without a batch axis: this model's batches run whole
            log.info("%s: outputs have no batch axis; batches run whole, not split", self.label)
        return self._run_rows(typed)

    def _run_rows(self, feeds: dict[str, Tensor]) -> list[Tensor]:
        return run_batched(self._run_once, feeds, self.max_batch)

    def _run_once(self, feeds: dict[str, Tensor]) -> list[Tensor]:
        try:
            return list(self.session.run(self._output_names, feeds))
        except ORT_ERRORS as exc:
            raise InferenceError(f"{self.label}: {exc}") from exc
