"""The threads that run parts of one batch side by side (pipelines/runtime/parallel.py's Runner), made once.

The inference worker runs the first part on its own thread and waits for the others, so a box with N usable
cores gets N - 1 helper threads here, idle unless the worker is inside a split batch.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from pipelines.runtime import parallel

T = TypeVar("T")


class ThreadRunner:
    """parallel.Runner on a thread pool: part 0 on the caller's thread, the rest on the pool."""

    def __init__(self, workers: int) -> None:
        self._workers = max(1, workers)
        self._pool = ThreadPoolExecutor(max_workers=max(1, self._workers - 1), thread_name_prefix="infer-part")

    @property
    def workers(self) -> int:
        return self._workers

    def run_all(self, thunks: Sequence[Callable[[], T]]) -> list[T]:
        futures: list[Future[T]] = [self._pool.submit(thunk) for thunk in thunks[1:]]
        try:
            first = thunks[0]()
        finally:  # never leave a part running on a buffer the caller is about to reuse
            done = [f.exception() for f in futures]
        for error in done:
            if error is not None:
                raise error
        return [first] + [f.result() for f in futures]


_lock = threading.Lock()


def install() -> parallel.Runner:
    """The process's runner, made on first call (idempotent): as many parts at once as usable cores."""
    with _lock:
        runner = parallel.installed()
        if runner is None:
            runner = ThreadRunner(parallel.usable_cores())
            parallel.install(runner)
        return runner
