"""Cross-request batching: pooled images, job size bound, parameter groups, isolation, fair turns with streams."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest
import supervision as sv

from daemon.config import BatchOptions
from daemon.frames import Frame
from daemon.queues import FrameQueue
from daemon.service.stats import Stats
from daemon.web.batch import Coalescer
from daemon.worker import Worker
from pipelines.stages import FrameInfo, NoopPipeline, PipelineRun


class Doubler:
    """A batch call following the model contract: one result per input, recorded per call; negatives fail."""

    def __init__(self, log: list[str] | None = None) -> None:
        self.calls: list[tuple[list[int], dict[str, Any]]] = []
        self.log = log

    def __call__(self, items: list[int], params: Mapping[str, Any]) -> list[int]:
        self.calls.append((list(items), dict(params)))
        if self.log is not None:
            self.log.append("http")
        if any(i < 0 for i in items):
            raise ValueError(f"negative input in {items}")
        return [i * 2 * int(params.get("factor", 1)) for i in items]


@pytest.fixture
def worker() -> Any:
    w = Worker({}, NoopPipeline(), lambda r: None, Stats(), BatchOptions(max_size=4))
    w.start()
    yield w
    w.stop(drain=True, timeout=5)


def hold(worker: Worker) -> threading.Event:
    """Keep the worker busy until the returned event is set (requests pile up meanwhile)."""
    release, busy = threading.Event(), threading.Event()

    def job() -> None:
        busy.set()
        release.wait(10)

    worker.submit(job)
    assert busy.wait(5)
    return release


@pytest.mark.parametrize(
    ("sizes", "max_images", "expected_calls"),
    [
        ([1, 1, 1, 1], 8, [4]),  # four requests arriving together: one model call
        ([3, 2, 4], 4, [4, 4, 1]),  # never more than max_images per call; requests may span calls
        ([5], 2, [2, 2, 1]),  # one large request is split into fair-sized jobs
    ],
)
def test_pending_requests_are_pooled_up_to_the_bound(
    worker: Worker, sizes: list[int], max_images: int, expected_calls: list[int]
) -> None:
    call = Doubler()
    coalescer = Coalescer(worker, call, max_images=max_images, name="m")
    release = hold(worker)
    starts = np.cumsum([0, *sizes])
    futures = [coalescer.submit(list(range(a, a + n)), {}) for a, n in zip(starts, sizes, strict=False)]
    assert coalescer.pending() == sum(sizes)
    release.set()
    results = [f.result(5) for f in futures]
    assert results == [[2 * i for i in range(a, a + n)] for a, n in zip(starts, sizes, strict=False)]
    assert [len(items) for items, _ in call.calls] == expected_calls
    assert coalescer.stats.largest_job == max(expected_calls)


def test_different_parameters_never_share_a_call(worker: Worker) -> None:
    call = Doubler()
    coalescer = Coalescer(worker, call, max_images=8)
    release = hold(worker)
    a = coalescer.submit([1, 2], {"factor": 1}, key=("factor", 1))
    b = coalescer.submit([3], {"factor": 10}, key=("factor", 10))
    c = coalescer.submit([4], {"factor": 1}, key=("factor", 1))
    release.set()
    assert (a.result(5), b.result(5), c.result(5)) == ([2, 4], [60], [8])
    assert sorted(items for items, _ in call.calls) == [[1, 2, 4], [3]]


def test_a_failing_request_does_not_fail_the_others(worker: Worker) -> None:
    call = Doubler()
    coalescer = Coalescer(worker, call, max_images=8)
    release = hold(worker)
    good, bad, other = coalescer.submit([1], {}), coalescer.submit([-1, 5], {}), coalescer.submit([7], {})
    release.set()
    assert good.result(5) == [2] and other.result(5) == [14]
    with pytest.raises(ValueError, match="negative"):
        bad.result(5)
    assert worker.alive
    assert coalescer.submit([3], {}).result(5) == [6]


def test_empty_request_needs_no_job(worker: Worker) -> None:
    call = Doubler()
    assert Coalescer(worker, call, max_images=2).submit([], {}).result(1) == []
    assert call.calls == []


def test_cancelled_requests_are_not_computed(worker: Worker) -> None:
    call = Doubler()
    coalescer = Coalescer(worker, call, max_images=8)
    release = hold(worker)
    gone, kept = coalescer.submit([1, 2], {}), coalescer.submit([3], {})
    assert gone.cancel()  # the HTTP request timed out or its client went away
    release.set()
    assert kept.result(5) == [6]
    assert call.calls == [([3], {})]
    coalescer.fail_pending(RuntimeError("late"))  # nothing left; a cancelled future is never touched again


def test_fail_pending_answers_waiting_requests(worker: Worker) -> None:
    coalescer = Coalescer(worker, Doubler(), max_images=2)
    release = hold(worker)
    future = coalescer.submit([1, 2, 3], {})
    coalescer.fail_pending(RuntimeError("stopping"))
    with pytest.raises(RuntimeError, match="stopping"):
        future.result(1)
    release.set()


class LoggingPipeline(NoopPipeline):
    def __init__(self, log: list[str]) -> None:
        super().__init__("logging")
        self.log = log

    def run(self, images: Sequence[np.ndarray], frames: Sequence[FrameInfo] | None = None) -> PipelineRun:
        self.log.append("frames")
        return PipelineRun([sv.Detections.empty() for _ in images])


def test_http_jobs_take_turns_with_stream_batches() -> None:
    """With streams busy, the worker runs one bounded HTTP job between two frame batches: neither starves."""
    log: list[str] = []
    stats = Stats()
    queue = FrameQueue(100, "block", stats.source("cam"))
    for seq in range(12):
        queue.put(Frame("cam", seq, np.zeros((4, 4, 3), np.uint8), time.time(), time.monotonic()))
    worker = Worker({"cam": queue}, LoggingPipeline(log), lambda r: None, stats, BatchOptions(max_size=2, timeout_ms=0))
    coalescer = Coalescer(worker, Doubler(log), max_images=2)
    futures = [coalescer.submit([i], {}) for i in range(6)]  # 6 images queued before the worker starts
    worker.start()
    assert [f.result(10) for f in futures] == [[2 * i] for i in range(6)]
    assert worker.stop(drain=True, timeout=10)
    assert log[:6] == ["frames", "http"] * 3
    assert log.count("frames") == 12 and log.count("http") == 3  # one frame per batch: a single source
