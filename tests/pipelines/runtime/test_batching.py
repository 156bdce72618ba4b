"""Dynamic batch rewrite: tiny onnx.helper graphs with each batch-1 habit, and the real fixed-batch models."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pipelines.runtime.base import RuntimeOptions
from pipelines.runtime.batching import BATCH_DIM, BatchRewriteError, make_batch_dynamic
from pipelines.runtime.onnx import Runtime

SHAPE = (1, 3, 4, 4)


def i64(name: str, values: Sequence[int]) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=np.int64), name)


def save(
    path: Path,
    nodes: list[onnx.NodeProto],
    output_shape: Sequence[int],
    initializers: Sequence[onnx.TensorProto] = (),
    *,
    input_shape: Sequence[int] = SHAPE,
    opset: int = 13,
    ir_version: int = 8,
) -> Path:
    """A graph from input "x" to output "y", both float32, with the given fixed shapes."""
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(output_shape))],
        initializer=list(initializers),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir_version
    onnx.save(model, str(path))
    return path


def flatten_matmul(path: Path) -> Path:
    weights = numpy_helper.from_array(np.linspace(-1, 1, 48 * 5, dtype=np.float32).reshape(48, 5), "w")
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["flat"]), helper.make_node("MatMul", ["flat", "w"], ["y"])]
    return save(path, nodes, (1, 5), [i64("shape", [1, -1]), weights])


def flatten_by_constant_node(path: Path) -> Path:
    nodes = [
        helper.make_node("Constant", [], ["shape"], value=i64("shape_value", [1, -1])),
        helper.make_node("Reshape", ["x", "shape"], ["flat"]),
        helper.make_node("Relu", ["flat"], ["y"]),
    ]
    return save(path, nodes, (1, 48))


def image_normalisation(path: Path) -> Path:
    """What TF exports of per-image normalisation look like: a mean over every axis, batch included."""
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["mean"], axes=[0, 1, 2, 3], keepdims=1),
        helper.make_node("Sub", ["x", "mean"], ["y"]),
    ]
    return save(path, nodes, SHAPE)


def channel_mean_axes_input(path: Path) -> Path:
    """Opset 18 passes reduce axes as an input; here they include the batch."""
    nodes = [
        helper.make_node("ReduceMean", ["x", "axes"], ["mean"], keepdims=1),
        helper.make_node("Sub", ["x", "mean"], ["y"]),
    ]
    return save(path, nodes, SHAPE, [i64("axes", [0, 2, 3])], opset=18, ir_version=9)


def old_ir_flatten(path: Path) -> Path:
    """IR 3 (opset 7): every initializer must also be listed as a graph input."""
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["flat"]), helper.make_node("Relu", ["flat"], ["y"])]
    path = save(path, nodes, (1, 48), [i64("shape", [1, -1])], opset=7, ir_version=3)
    model = onnx.load(str(path))
    model.graph.input.append(helper.make_tensor_value_info("shape", TensorProto.INT64, [2]))
    onnx.save(model, str(path))
    return path


def mean_over_batch(path: Path) -> Path:
    """Subtracts the mean over the batch axis alone: a batch of 2 mixes its images, which no rewrite can undo."""
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["mean"], axes=[0], keepdims=1),
        helper.make_node("Sub", ["x", "mean"], ["y"]),
    ]
    return save(path, nodes, SHAPE)


def squeezed_batch(path: Path) -> Path:
    """Drops the batch axis by name and puts it back: ONNX Runtime refuses a batch of 2 at Squeeze."""
    nodes = [
        helper.make_node("Squeeze", ["x", "axes"], ["chw"]),
        helper.make_node("Unsqueeze", ["chw", "axes"], ["y"]),
    ]
    return save(path, nodes, SHAPE, [i64("axes", [0])])


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def distinct_images(count: int, shape: Sequence[int]) -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.random((count, *shape[1:])).astype(np.float32) * 255


@pytest.mark.parametrize(
    ("build", "dynamic"),
    [
        (flatten_matmul, True),
        (flatten_by_constant_node, True),
        (image_normalisation, True),
        (channel_mean_axes_input, True),
        (old_ir_flatten, True),
        (mean_over_batch, False),
        (squeezed_batch, False),
    ],
)
def test_auto_rewrites_when_safe_and_loops_otherwise(tmp_path: Path, build, dynamic: bool) -> None:
    path = build(tmp_path / "m.onnx")
    before = sha(path)
    auto = Runtime(path, RuntimeOptions(dynamic_batch="auto"))
    looped = Runtime(path, RuntimeOptions(dynamic_batch="off"))
    assert auto.batch_dynamic is dynamic and looped.max_batch == 1
    assert auto.inputs[0].shape[0] == (BATCH_DIM if dynamic else 1)
    images = distinct_images(3, SHAPE)
    together = auto.run({"x": images})[0]
    one_by_one = np.concatenate([looped.run({"x": images[i : i + 1]})[0] for i in range(3)])
    np.testing.assert_allclose(together, one_by_one, rtol=1e-5, atol=1e-3)
    assert sha(path) == before  # the user's file is only read


def test_refused_rewrite_is_one_info_line_naming_the_reason(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = mean_over_batch(tmp_path / "mixing.onnx")
    with caplog.at_level(logging.INFO, logger="pipelines.runtime.batching"):
        Runtime(path, RuntimeOptions(), stage="colour")
    lines = [r for r in caplog.records if r.name == "pipelines.runtime.batching"]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO
    message = lines[0].getMessage()
    assert "stage 'colour'" in message and "stays fixed at 1" in message and "mixes images" in message


def test_rewrite_frees_reshape_and_reduce_without_touching_constants_shared_by_weights(tmp_path: Path) -> None:
    # "shape" reshapes both the input (batch-dependent) and a weight (not): only the input's use changes
    bias = numpy_helper.from_array(np.arange(48, dtype=np.float32), "bias")
    nodes = [
        helper.make_node("Reshape", ["x", "shape"], ["flat"]),
        helper.make_node("Reshape", ["bias", "shape"], ["bias_row"]),
        helper.make_node("Add", ["flat", "bias_row"], ["y"]),
    ]
    model = onnx.load(str(save(tmp_path / "m.onnx", nodes, (1, 48), [i64("shape", [1, -1]), bias])))
    rewritten = make_batch_dynamic(model)
    first, second = rewritten.graph.node[0], rewritten.graph.node[1]
    values = {t.name: numpy_helper.to_array(t).tolist() for t in rewritten.graph.initializer}
    assert values[first.input[1]] == [0, -1] and second.input[1] == "shape" and values["shape"] == [1, -1]
    assert rewritten.graph.input[0].type.tensor_type.shape.dim[0].dim_param == BATCH_DIM
    assert rewritten.graph.output[0].type.tensor_type.shape.dim[0].dim_param == BATCH_DIM
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1  # the original is left alone


@pytest.mark.parametrize("input_shape", [(2, 3, 4, 4), (3, 4, 4)])
def test_rewrite_needs_a_batch_of_one(tmp_path: Path, input_shape: tuple[int, ...]) -> None:
    nodes = [helper.make_node("Relu", ["x"], ["y"])]
    model = onnx.load(str(save(tmp_path / "m.onnx", nodes, input_shape, input_shape=input_shape)))
    with pytest.raises(BatchRewriteError, match=r"input 'x' has shape \[.*\]; expected a batch axis fixed at 1"):
        make_batch_dynamic(model)


@pytest.mark.parametrize(
    ("model", "dtype", "pixel_scale", "tolerance"),
    [
        ("plate_color_cls_96.onnx", np.float32, 1 / 255, 1e-4),
        ("squeezenet1.1_fp16.onnx", np.float16, 1.0, 1e-2),
        ("person_reid_0288.onnx", np.float32, 1.0, 1e-4),  # TF export: reshapes and means over the batch axis
    ],
)
def test_real_fixed_batch_models_become_dynamic_with_equal_results(
    models_dir: Path, model: str, dtype: type, pixel_scale: float, tolerance: float
) -> None:
    auto = Runtime(models_dir / model, RuntimeOptions(intra_op_threads=1))
    looped = Runtime(models_dir / model, RuntimeOptions(intra_op_threads=1, dynamic_batch="off"))
    assert looped.max_batch == 1 and auto.batch_dynamic and auto.inputs[0].shape[0] == BATCH_DIM
    images = (distinct_images(3, looped.inputs[0].shape) * pixel_scale).astype(dtype)  # type: ignore[arg-type]
    together = np.asarray(auto.run({auto.inputs[0].name: images})[0], dtype=np.float32)
    one_by_one = np.concatenate(
        [np.asarray(looped.run({looped.inputs[0].name: images[i : i + 1]})[0], np.float32) for i in range(3)]
    )
    assert together.shape == one_by_one.shape and together.shape[0] == 3
    scale = max(1.0, float(np.abs(one_by_one).max()))
    np.testing.assert_allclose(together, one_by_one, rtol=tolerance, atol=tolerance * scale)
    assert not np.allclose(together[0], together[1])  # distinct images: a mixed-up batch would not pass


def test_real_model_that_cannot_take_a_batch_keeps_looping(models_dir: Path, media_dir: Path) -> None:
    # the PP-OCRv3 text detector squeezes its batch axis away; a batch still runs, one image at a time
    runtime = Runtime(models_dir / "text_det_ppocrv3_en.onnx", RuntimeOptions(warmup_runs=0))
    assert runtime.max_batch == 1
    picture = cv2.resize(cv2.imread(str(media_dir / "text_gsoc.jpg")), (320, 192)).astype(np.float32) / 255
    normalised = (picture - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    images = np.stack([normalised, normalised[::-1]]).transpose(0, 3, 1, 2).astype(np.float32)
    together = runtime.run({runtime.inputs[0].name: images})[0]
    alone = [runtime.run({runtime.inputs[0].name: images[i : i + 1]})[0] for i in range(2)]
    assert together.shape == (2, 192, 320) and together.max() > 0.5  # it finds text
    np.testing.assert_array_equal(together, np.stack(alone))
