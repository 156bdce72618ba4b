"""Model sessions: ONNX Runtime (CPU/CUDA/TensorRT execution providers) behind one small interface.

PLACEHOLDER-FREE MINIMAL VERSION: the runtime owner extends this (provider fallback, TensorRT engines)
keeping the interface: Runtime(path, options, stage).inputs/.outputs/.provider/.run(feeds).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import onnxruntime as ort
from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)

Provider = Literal["tensorrt", "cuda", "cpu"]


class RuntimeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    providers: list[Provider] = Field(
        default_factory=lambda: ["cpu"], description="Execution providers in fallback order."
    )
    intra_op_threads: int | None = Field(None, ge=1, description="Threads inside one operator (CPU).")
    inter_op_threads: int | None = Field(None, ge=1, description="Threads across operators (CPU).")
    warmup_runs: int = Field(1, ge=0, description="Inference runs on zeros at load time.")


class ModelLoadError(ValueError):
    """A model file that is missing, corrupt, or does not fit the stage it was given to."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int | str | None, ...]
    dtype: np.dtype


class Runtime:
    def __init__(self, path: str | Path, options: RuntimeOptions | None = None, stage: str = "") -> None:
        self.path = Path(path)
        self.stage = stage
        options = options or RuntimeOptions()
        if not self.path.is_file():
            raise ModelLoadError(f"{stage or 'model'}: model file {self.path} does not exist")
        so = ort.SessionOptions()
        if options.intra_op_threads:
            so.intra_op_num_threads = options.intra_op_threads
        try:
            self.session = ort.InferenceSession(str(self.path), so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises bare RuntimeError/InvalidProtobuf subclasses
            raise ModelLoadError(f"{stage or 'model'}: cannot load {self.path}: {exc}") from exc
        self.provider = "cpu"
        self.inputs = [TensorInfo(i.name, tuple(i.shape), _dtype(i.type)) for i in self.session.get_inputs()]
        self.outputs = [TensorInfo(o.name, tuple(o.shape), _dtype(o.type)) for o in self.session.get_outputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return list(self.session.run(None, feeds))


def _dtype(onnx_type: str) -> np.dtype:
    table = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(uint8)": np.uint8,
             "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(double)": np.float64}
    return np.dtype(table.get(onnx_type, np.float32))
