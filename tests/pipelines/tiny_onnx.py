"""Tiny ONNX graphs for decoder contract tests: outputs are constants we chose, optionally scaled per image."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

Dim = int | str | None


def constant_model(
    path: Path,
    outputs: Mapping[str, np.ndarray],
    *,
    input_name: str = "images",
    input_shape: Sequence[Dim] = ("batch", 3, 64, 64),
    per_image_mean: bool = False,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """A model whose every output is `constant[0:1]` repeated over the input's batch.

    With per_image_mean, each image's output is the constant times that image's mean input value, so
    different pictures give different (but exactly known) results: what batch tests need.
    """
    nodes = [
        helper.make_node("ReduceMean", [input_name], ["mean4"], axes=[1, 2, 3], keepdims=1),
    ]
    if not per_image_mean:
        nodes += [
            helper.make_node("Mul", ["mean4", "zero"], ["zeroed"]),
            helper.make_node("Add", ["zeroed", "one"], ["image_factor"]),
        ]
    factor = "mean4" if per_image_mean else "image_factor"
    inits = [
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
    ]
    graph_outputs = []
    for index, (name, value) in enumerate(outputs.items()):
        value = np.asarray(value, dtype=np.float32)
        rank = value.ndim
        inits.append(numpy_helper.from_array(value, f"const{index}"))
        inits.append(numpy_helper.from_array(np.array([-1] + [1] * (rank - 1), np.int64), f"shape{index}"))
        nodes.append(helper.make_node("Reshape", [factor, f"shape{index}"], [f"factor_{index}"]))
        nodes.append(helper.make_node("Mul", [f"const{index}", f"factor_{index}"], [name]))
        dims: list[Dim] = [input_shape[0], *value.shape[1:]]
        graph_outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, dims))
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, list(input_shape))],
        graph_outputs,
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    for key, text in (metadata or {}).items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=text))
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def channel_mean_model(path: Path, input_name: str = "x", batch: Dim = "batch") -> Path:
    """A DB-style text detector stand-in: probability map [N,1,H,W] = mean over the input's channels."""
    node = helper.make_node("ReduceMean", [input_name], ["maps"], axes=[1], keepdims=1)
    graph = helper.make_graph(
        [node],
        "tiny_db",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [batch, 3, "h", "w"])],
        [helper.make_tensor_value_info("maps", TensorProto.FLOAT, [batch, 1, "h", "w"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def grey(value: int, height: int = 64, width: int = 64) -> np.ndarray:
    return np.full((height, width, 3), value, dtype=np.uint8)
