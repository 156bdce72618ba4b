"""Dynamic batch for ONNX models exported with a batch axis fixed at 1: an in-memory graph rewrite, verified at load.

Many small second-stage models (classifiers, re-ID embedders) are exported with a batch of 1, so a batch of
crops would run as a loop of single calls. The rewrite gives their inputs and outputs a symbolic batch axis
and undoes the batch-1 assumptions that exports bake into graphs. It is accepted only when a batch of two
random inputs gives the same outputs as two single runs; otherwise the caller keeps looping.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, cast

import numpy as np
import onnxruntime as ort

from pipelines.runtime.base import ORT_ERRORS, Tensor, ort_dtype

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)

BATCH_DIM = "N"
REDUCE_OPS = frozenset({
    "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
    "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare",
})
# Relative tolerance of batch-of-2 versus two single runs, by output dtype: the two may accumulate in a
# different order, and float16 graphs round every layer to about three decimal digits.
TOLERANCE: dict[str, float] = {"float16": 1e-2, "float32": 1e-4, "float64": 1e-6}
# what a refused rewrite raises: ours and onnx's ValueErrors, an unreadable file, ONNX Runtime's own errors
REWRITE_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, *ORT_ERRORS)
VERIFY_DYNAMIC_SIDE = 64  # other dynamic dims of the verification inputs (a multiple of 32, as detectors need)


class NodeArg(Protocol):
    """ONNX Runtime's description of a session input or output (onnxruntime ships no type hints)."""

    @property
    def name(self) -> str: ...

    @property
    def shape(self) -> Sequence[int | str | None]: ...

    @property
    def type(self) -> str: ...


class BatchRewriteError(ValueError):
    """A graph whose batch axis the rewrite cannot free, or whose rewrite changed the results."""


def make_batch_dynamic(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` whose graph inputs and outputs have batch axis N instead of 1.

    Batch-1 assumptions on tensors computed from the inputs are undone where recognisable: a Reshape shape
    constant starting with 1 gets 0 (copy the input's batch), and a Reduce* over axes that include axis 0
    drops it (with keepdims, reducing an axis of size 1 changes nothing). Intermediate shape annotations
    are cleared so that ONNX Runtime infers them again. Raises BatchRewriteError when an input's batch is not 1.
    """
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    initializers = {t.name for t in graph.initializer}
    inputs = [v for v in graph.input if v.name not in initializers]
    for value in inputs:
        dims = value.type.tensor_type.shape.dim
        if not dims or dims[0].dim_value != 1:
            shape = [d.dim_value or d.dim_param or "?" for d in dims]
            raise BatchRewriteError(f"input {value.name!r} has shape {shape}; expected a batch axis fixed at 1")
        _symbolic(dims[0])
    for value in graph.output:
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].dim_value == 1:
            _symbolic(dims[0])
    ranks = _ranks(model)
    dependent = _batch_dependent(graph.node, (v.name for v in inputs))
    constants = _constants(graph)
    for node in graph.node:
        if node.input and node.input[0] in dependent:
            if node.op_type == "Reshape":
                _free_reshape(graph, node, constants)
            elif node.op_type in REDUCE_OPS:
                _free_reduce(graph, node, constants, ranks.get(node.input[0]))
    del graph.value_info[:]
    if out.ir_version < 4:  # before IR 4 every initializer had to be a graph input as well
        listed = {v.name for v in graph.input}
        graph.input.extend(
            onnx.helper.make_tensor_value_info(t.name, t.data_type, t.dims)
            for t in graph.initializer if t.name not in listed
        )
    return out


def _symbolic(dim: onnx.TensorShapeProto.Dimension) -> None:
    dim.ClearField("dim_value")
    dim.dim_param = BATCH_DIM


def _ranks(model: onnx.ModelProto) -> dict[str, int]:
    """Rank of every tensor that ONNX shape inference can tell (for negative or implicit reduce axes)."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError, ValueError):
        return {}
    values = [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]
    return {
        v.name: len(v.type.tensor_type.shape.dim) for v in values if v.type.tensor_type.HasField("shape")
    }


def _batch_dependent(nodes: Iterable[onnx.NodeProto], inputs: Iterable[str]) -> set[str]:
    """Tensors computed from the graph inputs (ONNX nodes are stored in topological order)."""
    dependent = set(inputs)
    for node in nodes:
        if any(name in dependent for name in node.input):
            dependent.update(node.output)
    return dependent


def _constants(graph: onnx.GraphProto) -> dict[str, Tensor]:
    """Values of initializers and Constant nodes, by tensor name."""
    from onnx import numpy_helper

    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def _replace_input(
    graph: onnx.GraphProto, node: onnx.NodeProto, slot: int, value: Tensor, constants: dict[str, Tensor]
) -> None:
    """Feed `node` input `slot` from a new initializer holding `value` (the old tensor may have other users)."""
    from onnx import numpy_helper

    name = f"{node.input[slot]}__batch_{'_'.join(str(int(v)) for v in value.ravel())}"
    if name not in constants:
        graph.initializer.append(numpy_helper.from_array(value, name))
        constants[name] = value
    node.input[slot] = name


def _attribute(node: onnx.NodeProto, name: str, default: object) -> object:
    from onnx import helper

    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def _free_reshape(graph: onnx.GraphProto, node: onnx.NodeProto, constants: dict[str, Tensor]) -> None:
    if len(node.input) < 2 or _attribute(node, "allowzero", 0):
        return
    shape = constants.get(node.input[1])
    if shape is None or shape.ndim != 1 or not len(shape) or shape[0] != 1:
        return
    freed = shape.copy()
    freed[0] = 0
    _replace_input(graph, node, 1, freed, constants)


def _free_reduce(
    graph: onnx.GraphProto, node: onnx.NodeProto, constants: dict[str, Tensor], rank: int | None
) -> None:
    if not _attribute(node, "keepdims", 1):
        return  # the batch axis vanishes from the output: nothing to keep
    from_input = len(node.input) > 1 and node.input[1] != ""
    if from_input:
        given = constants.get(node.input[1])
        if given is None:
            return
        axes: list[int] | None = [int(a) for a in given.ravel()]
    else:
        axes = cast("list[int] | None", _attribute(node, "axes", None))  # an INTS attribute
    if axes is None or len(axes) == 0:
        if _attribute(node, "noop_with_empty_axes", 0) or rank is None:
            return
        axes = list(range(rank))
    if rank is not None:
        axes = [a % rank for a in axes]
    if 0 not in axes or len(axes) == 1:
        return  # a reduce over the batch alone cannot be expressed without it
    kept = [a for a in axes if a != 0]
    if from_input:
        _replace_input(graph, node, 1, np.asarray(kept, dtype=np.int64), constants)
        return
    for attribute in node.attribute:
        if attribute.name == "axes":
            del attribute.ints[:]
            attribute.ints.extend(kept)
            return
    from onnx import helper

    node.attribute.append(helper.make_attribute("axes", kept))


def random_feeds(inputs: Sequence[NodeArg], rng: np.random.Generator) -> dict[str, Tensor]:
    """One random batch-1 input per ONNX Runtime input description (NodeArg): floats in [0,1), small ints."""
    feeds: dict[str, Tensor] = {}
    for info in inputs:
        shape = [
            d if isinstance(d, int) and d > 0 else (1 if axis == 0 else VERIFY_DYNAMIC_SIDE)
            for axis, d in enumerate(info.shape)
        ]
        dtype = ort_dtype(info.type)
        if dtype.kind == "f":
            feeds[info.name] = rng.random(shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[info.name] = rng.random(shape) < 0.5
        else:
            feeds[info.name] = rng.integers(0, 4, shape).astype(dtype)
    return feeds


def verify_batching(single: ort.InferenceSession, batched: ort.InferenceSession, seed: int = 0) -> None:
    """Raise BatchRewriteError unless `batched` on two random inputs equals `single` run on each in turn."""
    rng = np.random.default_rng(seed)
    feeds = [random_feeds(single.get_inputs(), rng) for _ in range(2)]
    names = [o.name for o in single.get_outputs()]
    alone = [single.run(names, f) for f in feeds]
    quiet = ort.RunOptions()
    quiet.log_severity_level = 4  # a graph that cannot take a batch fails here; that is an answer, not an error
    together = batched.run(names, {k: np.concatenate([f[k] for f in feeds]) for k in feeds[0]}, quiet)
    for index, name in enumerate(names):
        first, second = (np.asarray(run[index]) for run in alone)
        if first.ndim == 0 or first.shape[0] != 1:
            raise BatchRewriteError(f"output {name!r} {list(first.shape)} has no batch axis of 1")
        expected, got = np.concatenate([first, second]), np.asarray(together[index])
        if got.shape != expected.shape:
            raise BatchRewriteError(
                f"output {name!r}: a batch of 2 gave shape {list(got.shape)}, expected {list(expected.shape)}"
            )
        if expected.dtype.kind != "f":
            same = np.array_equal(got, expected)
            error, tolerance = float(not same), 0.0
        else:
            tolerance = TOLERANCE.get(expected.dtype.name, 1e-4)
            scale = max(1.0, float(np.abs(expected).max()))
            error = float(np.abs(got.astype(np.float64) - expected).max()) / scale
            same = error <= tolerance
        if not same:
            raise BatchRewriteError(
                f"output {name!r}: a batch of 2 differs from two single runs by {error:.3g} of its range "
                f"(tolerance {tolerance:g}): the graph mixes images of a batch"
            )


def dynamic_batch_session(
    path: Path, session: ort.InferenceSession, label: str
) -> ort.InferenceSession | None:
    """A session on `path` rewritten to a dynamic batch, with `session`'s options and providers; None if unsafe.

    The file is only read. Any failure (onnx not installed, rewrite refused, results differ) is one info
    line, and None tells the caller to keep looping over single images.
    """
    try:
        import onnx
    except ImportError:
        log.info("%s: batch axis stays fixed at 1 (the onnx package is not installed); batches run as a loop", label)
        return None
    try:
        data = make_batch_dynamic(onnx.load(str(path))).SerializeToString()
        providers = session.get_providers()
        options = session.get_provider_options()
        candidate = ort.InferenceSession(
            data,
            session.get_session_options(),
            providers=providers,
            provider_options=[options.get(name, {}) for name in providers],
        )
        verify_batching(session, candidate)
    except REWRITE_ERRORS as exc:
        reason = " ".join(str(exc).split())
        log.info("%s: batch axis stays fixed at 1 (%s); batches run as a loop", label, reason[:300])
        return None
    log.info("%s: batch axis made dynamic in memory (verified on a batch of 2)", label)
    return candidate
