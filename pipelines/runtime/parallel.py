"""Concurrent runs of one CPU session: a batch split into parts that run side by side, one thread each.

On a small CPU box one ONNX Runtime session with N intra-op threads scales badly on small models (YOLOX-nano on
2 cores, `edgewatch bench sessions`: 1 thread 66.5 fps, 2 threads 102.7 spinning and 84.1 not), while N
single-threaded runs of the same session side by side reach 130.5 fps (README "Configuration", "Benchmarks").
ORT's `run` is thread-safe and releases the GIL, so a batch is cut into `parallel_runs` parts and each part runs
on one core.

`pipelines/` starts no threads (DESIGN.md): whoever owns threads installs a `Runner` here (the daemon does,
daemon/inferpool.py). Without one, `parallel_runs: auto` resolves to 1 and ORT keeps its own thread pool,
so a library user of two_stage() loses nothing.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

import numpy as np

from pipelines.runtime.base import InferenceError, Tensor

T = TypeVar("T")
R = TypeVar("R")
A = TypeVar("A")
AUTO_MAX_RUNS = 4  # beyond four cores a box usually has other work (decode, several models): set it explicitly


class Runner(Protocol):
    """Runs thunks side by side and returns their results in order; the first exception raised is re-raised."""

    @property
    def workers(self) -> int:
        """How many thunks it can run at once (the caller's thread included)."""
        ...

    def run_all(self, thunks: Sequence[Callable[[], T]]) -> list[T]: ...


_runner: Runner | None = None
_inside = threading.local()  # set while a thread runs a part (no thread is started here)


def install(runner: Runner | None) -> None:
    """Make `runner` run the parts of every CPU session loaded from now on (None: none, back to sequential)."""
    global _runner
    _runner = runner


def installed() -> Runner | None:
    return _runner


def usable_cores() -> int:
    """CPUs this process may run on (a container's or systemd's CPUAffinity=, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def resolve_runs(requested: int | str, intra_op_threads: int | None, provider: str) -> int:
    """How many concurrent runs a session gets: 1 on a GPU or without a runner; `auto` = cores / intra threads."""
    if provider != "cpu" or _runner is None:
        return 1
    if isinstance(requested, int):
        return max(1, min(requested, _runner.workers))
    per_run = intra_op_threads or 1
    return max(1, min(usable_cores() // per_run, AUTO_MAX_RUNS, _runner.workers))


def split_rows(n: int, parts: int) -> list[tuple[int, int]]:
    """[start, stop) row ranges cutting n rows into at most `parts` near-equal parts, in order."""
    parts = max(1, min(parts, n))
    base, extra = divmod(n, parts)
    bounds, start = [], 0
    for index in range(parts):
        stop = start + base + (1 if index < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


def map_parts(fn: Callable[[Sequence[T]], list[R]], items: Sequence[T], parts: int) -> list[R]:
    """fn over `items` cut into at most `parts` runs side by side, results joined in order.

    Inside a part (a detector's part calling its session) everything runs on the part's own thread: a part that
    waited for the pool it runs on could wait for itself.
    """
    if _runner is None or parts < 2 or len(items) < 2 or getattr(_inside, "part", False):
        return fn(items)
    bounds = split_rows(len(items), parts)
    results = _runner.run_all([_part(fn, items[a:b]) for a, b in bounds])
    return [item for result in results for item in result]


def run_split(
    run: Callable[[dict[str, Tensor]], list[Tensor]], feeds: dict[str, Tensor], parts: int
) -> list[Tensor] | None:
    """`run` over `feeds` cut into row parts run side by side; None when an output has no batch axis to join."""
    n = next(iter(feeds.values())).shape[0]
    if _runner is None or getattr(_inside, "part", False):
        return run(feeds)
    bounds = split_rows(n, parts)
    results = _runner.run_all([_part(run, {k: v[a:b] for k, v in feeds.items()}) for a, b in bounds])
    for (a, b), outputs in zip(bounds, results, strict=True):
        if any(o.ndim == 0 or o.shape[0] != b - a for o in outputs):
            return None
    try:
        return [np.concatenate(column, axis=0) for column in zip(*results, strict=True)]
    except ValueError as exc:  # parts whose outputs differ beyond the batch axis (padded per part)
        raise InferenceError(f"parts of a split batch do not join: {exc}") from exc


def _part(fn: Callable[[A], R], arg: A) -> Callable[[], R]:
    def part() -> R:
        _inside.part = True
        try:
            return fn(arg)
        finally:
            _inside.part = False

    return part
