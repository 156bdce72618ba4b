"""What a stage can feed: checking a model's input against it, with errors that name file, stage and mismatch."""

from __future__ import annotations

from collections.abc import Sequence

from pipelines.runtime.base import ModelLoadError, RuntimeLike, TensorInfo, model_label


def check_input(
    runtime: RuntimeLike,
    family: str,
    *,
    rank: int = 4,
    channels: int | None = 3,
    channel_axis: int = 1,
    dtypes: Sequence[str] = ("float32", "float16"),
    num_inputs: int | None = 1,
) -> TensorInfo:
    """The model's first input, after checking it is what the `family` stage can feed.

    Raises ModelLoadError "stage X: model FILE expects input [..] float16 but the yolox stage needs
    [N,3,H,W] float32" so that a model given to the wrong stage fails at load, not on the first frame.
    """
    label = model_label(runtime.stage, runtime.path)
    if num_inputs is not None and len(runtime.inputs) != num_inputs:
        names = [i.name for i in runtime.inputs]
        raise ModelLoadError(f"{label} has inputs {names} but the {family} stage needs {num_inputs} input(s)")
    info = runtime.inputs[0]
    shape_ok = len(info.shape) == rank and (
        channels is None or info.shape[channel_axis] in (channels, None) or isinstance(info.shape[channel_axis], str)
    )
    if not shape_ok or info.dtype.name not in dtypes:
        raise ModelLoadError(
            f"{label} expects input {info.name} {format_shape(info.shape)} {info.dtype.name} but the "
            f"{family} stage needs {_needed_shape(rank, channels, channel_axis)} {' or '.join(dtypes)}"
        )
    return info


def _needed_shape(rank: int, channels: int | None, channel_axis: int) -> str:
    """ "[N,3,H,W]"-style text for what a stage feeds."""
    dims = ["N"] + (["H", "W"] if rank == 4 else ["D"] * max(0, rank - 2))
    if rank >= 2:
        dims.insert(channel_axis % rank, "C" if channels is None else str(channels))
    return "[" + ",".join(dims[:rank]) + "]"


def format_shape(shape: Sequence[int | str | None]) -> str:
    return "[" + ",".join("?" if d is None else str(d) for d in shape) + "]"
