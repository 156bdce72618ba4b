"""The inference worker: fair pulls across sources, batching by size and time, isolation of bad frames."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
import supervision as sv

from daemon.config import BatchOptions
from daemon.frames import Frame, Result
from daemon.payload import result_payload
from daemon.queues import FrameQueue
from daemon.service.metrics import Metrics
from daemon.service.stats import Stats
from daemon.worker import JOBS_PER_TURN, Worker
from pipelines.build import build_pipeline
from pipelines.stages import FrameInfo, PipelineRun, PipelineSpec
from pipelines.tracking.events import Event
from tests.fixtures.track_scene import LevelReader, SceneDetector, scene


class RecordingPipeline:
    """Follows the Pipeline contract; records batches and fails on images marked bad (pixel 0 == 255)."""

    name = "recording"
    counters = None

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def run(self, images: Sequence[np.ndarray], frames: Sequence[FrameInfo] | None = None) -> PipelineRun:
        self.batches.append([f.source for f in frames or []])
        if any(int(img[0, 0, 0]) == 255 for img in images):
            raise ValueError("bad frame")
        return PipelineRun([sv.Detections(xyxy=np.array([[0, 0, 1, 1]], float), confidence=np.array([0.9]),
                                          class_id=np.array([0])) for _ in images])

    def finish(self, source: str) -> list[Event]:
        return []


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


def test_jobs_that_keep_coming_never_hold_frames_back_for_more_than_one_job() -> None:
    """Issue 16 item 3: HTTP clients re-submit work as fast as answers come; the streams still get every turn."""
    stats = Stats()
    queues = {"a": FrameQueue(100, "block", stats.source("a"))}
    events: list[str] = []
    worker = Worker(queues, RecordingPipeline(), lambda r: events.append("frame"), stats,
                    BatchOptions(max_size=1, timeout_ms=0))
    chain_done = threading.Event()

    def job(i: int) -> None:
        events.append("job")
        if i in (3, 20):
            queues["a"].put(frame("a", i))
            events.append("put")
        if i < 40:
            worker.submit(lambda: job(i + 1))  # the next request is already waiting when this one ends
        else:
            chain_done.set()

    worker.submit(lambda: job(0))
    worker.start()
    assert chain_done.wait(10)
    assert worker.stop(drain=True, timeout=5)
    puts = [i for i, e in enumerate(events) if e == "put"]
    frames = [i for i, e in enumerate(events) if e == "frame"]
    assert len(frames) == 2
    for put, done in zip(puts, frames, strict=True):
        assert events[put:done].count("job") <= JOBS_PER_TURN  # the job running when the frame came, at most


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


# -- with a tracking pipeline: FrameInfo in, track events and counters out --------------------------------------

def tracked_pipeline(reader: Any, name: str = "tracked") -> Any:
    spec = PipelineSpec.model_validate({
        "name": name, "detector": "cars", "stages": [{"name": "plate", "model": "reader"}],
        "tracking": {"tracker": {"frame_rate": 15.0}, "schedule": {"max_staleness": 1.0, "max_new_per_frame": 1}},
    })
    return build_pipeline(spec, {"cars": SceneDetector(), "reader": reader})


def scene_frame(source: str, seq: int, age: float = 0.0) -> Frame:
    now_wall, now_mono = time.time(), time.monotonic()
    image = scene(seq, (60, 120))[0]
    return Frame(source, seq, image, now_wall - age, now_mono - age, pts=seq / 15)


def tracked_worker(
    sources: list[str], policy: str = "block", reader: Any = None, metrics: Any = None
) -> tuple[Worker, dict[str, FrameQueue], list[tuple[Frame, Any]], Stats, Any]:
    stats = Stats()
    queues = {s: FrameQueue(100, policy, stats.source(s)) for s in sources}  # type: ignore[arg-type]
    reader = reader or LevelReader()
    events: list[tuple[Frame, Any]] = []
    worker = Worker(queues, tracked_pipeline(reader), lambda _r: None, stats, BatchOptions(max_size=3, timeout_ms=5),
                    metrics, emit_event=lambda f, e: events.append((f, e)))
    return worker, queues, events, stats, reader


def test_track_events_go_out_with_their_frame_and_counters_reach_stats_and_metrics() -> None:
    stats_for_metrics = Stats()
    metrics = Metrics(stats_for_metrics)
    worker, queues, events, stats, reader = tracked_worker(["a", "b"], metrics=metrics)
    for seq in range(20):
        for source in ("a", "b"):
            queues[source].put(scene_frame(source, seq))
    worker.start()
    assert worker.stop(drain=True, timeout=20)
    by_track: dict[tuple[str, int], list[str]] = {}
    for frame, event in events:
        assert frame.source_id == event.source
        by_track.setdefault((event.source, event.track_id), []).append(event.type)
    assert len(by_track) == 4  # two objects in each of two sources, all ended when the worker stopped
    assert all(types[0] == "new" and types[-1] == "end" for types in by_track.values())
    counts = stats.worker.second_stage["plate"]
    assert counts["classified"] == reader.crops and counts["skipped"] > reader.crops and counts["shed_new"] == 0
    assert stats.worker.events["end"] == 4 and stats.worker.tracks == 0
    calls = metrics.registry.get_sample_value("edgewatch_second_stage_calls_total", {"stage": "plate"})
    skips = metrics.registry.get_sample_value("edgewatch_second_stage_skips_total", {"stage": "plate"})
    assert (calls, skips) == (counts["classified"], counts["skipped"])


def test_a_finished_source_ends_its_tracks_once_its_queue_is_drained() -> None:
    worker, queues, events, _stats, _ = tracked_worker(["a", "b"])
    worker.start()
    for seq in range(10):
        queues["a"].put(scene_frame("a", seq))
        queues["b"].put(scene_frame("b", seq))
    worker.finish_source("a")
    deadline = time.monotonic() + 10
    while sum(e.type == "end" for _f, e in events) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    ended = [(f.source_id, f.seq) for f, e in events if e.type == "end"]
    assert ended == [("a", 9), ("a", 9)]  # after a's last frame, carried by it; b's tracks live on
    assert worker.stop(drain=True, timeout=10)
    assert sorted(f.source_id for f, e in events if e.type == "end") == ["a", "a", "b", "b"]


@pytest.mark.parametrize(("policy", "shed"), [("drop_oldest", True), ("block", False)])
def test_only_late_frames_of_dropping_queues_shed_second_stages(policy: str, shed: bool) -> None:
    worker, queues, _events, stats, _ = tracked_worker(["cam"], policy=policy)
    for seq in range(8):
        queues["cam"].put(scene_frame("cam", seq, age=5.0))  # five seconds old at dequeue
    worker.start()
    assert worker.stop(drain=True, timeout=10)
    counts = stats.worker.second_stage["plate"]
    assert (counts["stale_frames"] == 8) is shed and (counts["shed_new"] > 0) is shed


def test_a_swapped_pipeline_ends_the_old_tracks() -> None:
    worker, queues, events, _stats, _ = tracked_worker(["a"])
    worker.start()
    for seq in range(6):
        queues["a"].put(scene_frame("a", seq))
    deadline = time.monotonic() + 10
    while worker.stats.source("a").processed < 6 and time.monotonic() < deadline:
        time.sleep(0.01)
    worker.pipeline = tracked_pipeline(LevelReader(), name="reloaded")
    for seq in range(6, 9):
        queues["a"].put(scene_frame("a", seq))
    assert worker.stop(drain=True, timeout=10)
    types = [e.type for _f, e in events]
    ends = [i for i, t in enumerate(types) if t == "end"]
    news = [i for i, t in enumerate(types) if t == "new"]
    assert len(ends) == len(news) == 4 and ends[1] < news[2]  # the old pipeline's tracks ended before new ones


@pytest.mark.parametrize("added_back", [False, True])
def test_a_removed_source_ends_its_tracks_unless_it_comes_back(added_back: bool) -> None:
    worker, queues, events, stats, _ = tracked_worker(["a"])
    worker.start()
    for seq in range(6):
        queues["a"].put(scene_frame("a", seq))
    deadline = time.monotonic() + 10
    while stats.source("a").processed < 6 and time.monotonic() < deadline:
        time.sleep(0.01)
    worker.remove_queue("a")
    if added_back:  # a reload restarted it: the new stream's seq 0 ends the old tracks
        worker.add_queue("a", FrameQueue(100, "block", stats.source("a")))
        worker.queues["a"].put(scene_frame("a", 0))
    deadline = time.monotonic() + 5
    while sum(e.type == "end" for _f, e in events) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # time enough for a wrong extra `end` to show
    assert [(f.seq, e.type) for f, e in events if e.type == "end"] == [(0 if added_back else 5, "end")] * 2
    assert worker.stop(drain=True, timeout=10)


class HalfBrokenPipeline(RecordingPipeline):
    """Its detector works; a second stage's model fails on every batch (as Pipeline reports it)."""

    def run(self, images: Sequence[np.ndarray], frames: Sequence[FrameInfo] | None = None) -> PipelineRun:
        run = super().run(images, frames)
        return dataclasses.replace(run, stage_errors={"recording/plate": "CUDA failure: device lost"})


def test_a_failed_second_stage_is_counted_published_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    stats = Stats()
    metrics = Metrics(stats)
    queues = {"a": FrameQueue(100, "block", stats.source("a"))}
    results: list[Result] = []
    worker = Worker(queues, HalfBrokenPipeline(), results.append, stats, BatchOptions(max_size=1, timeout_ms=0),
                    metrics)
    for seq in range(5):
        queues["a"].put(frame("a", seq))
    worker.start()
    assert worker.stop(drain=True, timeout=5)
    assert len(results) == 5 and stats.source("a").processed == 5 and stats.worker.errors == 0
    payload = result_payload(results[0])
    assert payload["stage_errors"] == {"recording/plate": "CUDA failure: device lost"}
    assert len(payload["detections"]) == 1  # the first stage's detections still go out
    assert stats.worker.stage_errors["recording/plate"] == 5
    assert metrics.registry.get_sample_value("edgewatch_stage_errors_total", {"stage": "recording/plate"}) == 5
    assert caplog.text.count("second stage recording/plate failed") == 1  # not once per batch
