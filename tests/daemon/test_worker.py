"""The inference worker: fair pulls across sources, batching by size and time, isolation of bad frames."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import supervision as sv

from daemon.config import BatchOptions
from daemon.frames import Frame, Result
from daemon.queues import FrameQueue
from daemon.stats import Stats
from daemon.worker import Worker


class RecordingPipeline:
    """Follows the Pipeline contract; records batches and fails on images marked bad (pixel 0 == 255)."""

    name = "recording"

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def run(self, images: Sequence[np.ndarray], keys: Sequence[str] | None = None) -> list[sv.Detections]:
        self.batches.append(list(keys or []))
        if any(int(img[0, 0, 0]) == 255 for img in images):
            raise ValueError("bad frame")
        return [sv.Detections(xyxy=np.array([[0, 0, 1, 1]], float), confidence=np.array([0.9]),
                              class_id=np.array([0])) for _ in images]


def frame(source: str, seq: int, bad: bool = False) -> Frame:
    image = np.zeros((4, 4, 3), np.uint8)
    if bad:
        image[0, 0, 0] = 255
    return Frame(source, seq, image, time.time(), time.monotonic())


def make(sources: list[str], batch: BatchOptions, size: int = 100) -> tuple[Worker, dict[str, FrameQueue],
                                                                           RecordingPipeline, list[Result], Stats]:
    stats = Stats()
    queues = {s: FrameQueue(size, "block", stats.source(s)) for s in sources}
    pipeline = RecordingPipeline()
    results: list[Result] = []
    worker = Worker(queues, pipeline, results.append, stats, batch)
    return worker, queues, pipeline, results, stats


def test_pulls_fairly_across_sources() -> None:
    worker, queues, pipeline, results, _ = make(["a", "b", "c"], BatchOptions(max_size=3, timeout_ms=50))
    for i in range(30):
        queues["a"].put(frame("a", i))
    for i in range(3):
        queues["b"].put(frame("b", i))
        queues["c"].put(frame("c", i))
    worker.start()
    assert worker.stop(drain=True, timeout=10)
    # the first three batches each take one frame from every source, although "a" has ten times more queued
    assert [sorted(b) for b in pipeline.batches[:3]] == [["a", "b", "c"]] * 3
    assert len(results) == 36
    assert [r.frame.seq for r in results if r.frame.source_id == "a"] == list(range(30))  # order kept


def test_batches_up_to_max_size() -> None:
    worker, queues, pipeline, _results, stats = make(["a"], BatchOptions(max_size=4, timeout_ms=1000))
    for i in range(10):
        queues["a"].put(frame("a", i))
    worker.start()
    assert worker.stop(drain=True, timeout=10)
    assert [len(b) for b in pipeline.batches] == [4, 4, 2]
    assert stats.worker.batch_sizes == {4: 2, 2: 1}


def test_partial_batch_leaves_after_timeout() -> None:
    worker, queues, pipeline, results, _ = make(["a"], BatchOptions(max_size=8, timeout_ms=30))
    worker.start()
    queues["a"].put(frame("a", 0))
    deadline = time.monotonic() + 5
    while not results and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(results) == 1 and pipeline.batches == [["a"]]  # did not wait for 8 frames
    assert worker.stop(drain=True, timeout=5)


def test_a_bad_frame_costs_only_itself() -> None:
    worker, queues, _pipeline, results, stats = make(["a", "b"], BatchOptions(max_size=4, timeout_ms=50))
    queues["a"].put(frame("a", 0))
    queues["a"].put(frame("a", 1, bad=True))
    queues["b"].put(frame("b", 0))
    queues["b"].put(frame("b", 1))
    worker.start()
    assert worker.stop(drain=True, timeout=10)
    assert sorted((r.frame.source_id, r.frame.seq) for r in results) == [("a", 0), ("b", 0), ("b", 1)]
    assert stats.sources["a"].dropped["error"] == 1 and stats.sources["a"].errors == 1
    assert stats.worker.errors == 1


def test_jobs_run_on_the_worker_thread_between_batches() -> None:
    worker, queues, _, results, _ = make(["a"], BatchOptions(max_size=2, timeout_ms=0))
    worker.start()
    seen: list[str] = []
    future = worker.submit(lambda: seen.append(threading.current_thread().name) or 42)
    assert future.result(timeout=5) == 42
    assert seen == ["worker"]
    failing = worker.submit(lambda: 1 / 0)
    try:
        failing.result(timeout=5)
        raise AssertionError("expected ZeroDivisionError")
    except ZeroDivisionError:
        pass
    queues["a"].put(frame("a", 0))
    assert worker.stop(drain=True, timeout=5)
    assert len(results) == 1  # the failed job did not stop the worker


def test_stop_without_drain_leaves_queued_frames() -> None:
    worker, queues, _, results, _ = make(["a"], BatchOptions(max_size=1, timeout_ms=0))
    blocker = threading.Event()
    for i in range(5):
        queues["a"].put(frame("a", i))
    worker.submit(lambda: blocker.wait(5))  # runs right after the first batch and holds the worker
    worker.start()
    stopper = threading.Thread(target=worker.stop, kwargs={"drain": False, "timeout": 5})
    deadline = time.monotonic() + 5
    while not results and time.monotonic() < deadline:
        time.sleep(0.01)
    stopper.start()
    time.sleep(0.1)
    blocker.set()
    stopper.join(5)
    assert not worker.alive
    assert len(results) == 1 and len(queues["a"]) == 4


def test_result_timings_are_recorded() -> None:
    worker, queues, _, results, _ = make(["a"], BatchOptions(max_size=1, timeout_ms=0))
    queues["a"].put(frame("a", 0))
    worker.start()
    assert worker.stop(drain=True, timeout=5)
    timings: dict[str, Any] = results[0].timings_ms
    assert set(timings) == {"queue", "infer"} and timings["queue"] >= 0
