"""The one entry point to a model file: a native TensorRT engine for `.engine`/`.plan`, ONNX Runtime otherwise."""

from __future__ import annotations

from pathlib import Path

from pipelines.runtime.base import ENGINE_SUFFIXES, RuntimeLike, RuntimeOptions
from pipelines.runtime.onnx import Runtime


def open_runtime(path: str | Path, options: RuntimeOptions | None = None, stage: str = "") -> RuntimeLike:
    """A runtime for `path`: TensorRT engine files natively, everything else through ONNX Runtime."""
    if Path(path).suffix.lower() in ENGINE_SUFFIXES:
        from pipelines.runtime.tensorrt import TrtRuntime  # lazy: only engine users need tensorrt installed

        return TrtRuntime(path, options, stage)
    return Runtime(path, options, stage)
