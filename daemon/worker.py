"""The inference worker: pulls fairly across source queues, batches frames, runs the pipeline, emits Results.

One worker per process because the accelerator is one device; ONNX Runtime releases the GIL while it
computes, so capture and sink threads keep running meanwhile. Other work for the same device (HTTP
inference requests) is submitted as jobs and interleaved with frame batches so neither starves: one job per
turn (JOBS_PER_TURN), then the stream queues again.
daemon/trackhooks.py gives the pipeline each frame's FrameInfo and sends the track events of a tracking one.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Protocol

from daemon.boundary import attempt
from daemon.config import BatchOptions
from daemon.frames import Frame, Result
from daemon.motion import MotionGate
from daemon.queues import FrameQueue
from daemon.service.stats import Stats
from daemon.trackhooks import EmitEvent, TrackHooks
from pipelines.stages import PipelineLike, PipelineRun

log = logging.getLogger(__name__)

# Worker jobs (HTTP API requests, at most one worker batch of images each) run between two looks at the
# stream queues: frames and the API alternate, so under any API load each frame batch waits for one job at most.
JOBS_PER_TURN = 1


class Observer(Protocol):
    """Optional metrics hooks (daemon/service/metrics.py implements them)."""

    def observe_inference(self, stage: str, seconds: float) -> None: ...

    def observe_batch(self, size: int) -> None: ...

    def second_stage(self, calls: int, skips: int, stage: str = "second") -> None: ...


class Worker:
    """Runs in its own thread; start(), then stop(drain=True) after the sources have stopped."""

    def __init__(
        self,
        queues: dict[str, FrameQueue],
        pipeline: PipelineLike,
        emit: Callable[[Result], None],
        stats: Stats,
        batch: BatchOptions,
        observer: Observer | None = None,
        emit_event: EmitEvent | None = None,
    ) -> None:
        self.queues = queues
        self.pipeline = pipeline
        self.emit = emit
        self.stats = stats
        self.batch = batch
        self.observer = observer
        self.tracks = TrackHooks(stats, emit_event, observer)
        self.detect_off: frozenset[str] = frozenset()  # detect/set OFF (daemon/control/): read, not run
        self.on_detect_off: Callable[[Frame], None] | None = None  # such a frame, e.g. for the live view
        self.motion = MotionGate(emit, stats)  # motion-gated sources: which frames the pipeline runs on
        self._wake = threading.Event()
        for q in queues.values():
            q.on_put.append(self._wake)
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
        self._rr = 0  # round-robin start index, advanced every pull so no source is always first
        self._stop = threading.Event()
        self._drain = True
        self._thread = threading.Thread(target=self._loop, name="worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, drain: bool = True, timeout: float | None = None) -> bool:
        """Stop after (optionally) processing what the queues still hold; True if it finished in time."""
        self._drain = drain
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def submit(self, fn: Callable[[], Any]) -> Future[Any]:
        """Run fn on the worker thread, interleaved fairly with frame batches (used by the HTTP API)."""
        future: Future[Any] = Future()
        self._jobs.put((fn, future))
        self._wake.set()
        return future

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def add_queue(self, source_id: str, frame_queue: FrameQueue) -> None:
        """A source started by a reload; the next round-robin pass includes it."""
        frame_queue.on_put.append(self._wake)
        self.queues[source_id] = frame_queue

    def remove_queue(self, source_id: str) -> None:
        self.tracks.finish_source(source_id, self.queues.pop(source_id, None))
        self._wake.set()

    def finish_source(self, source_id: str) -> None:
        """The source's stream is over (any thread): once its queue is empty, its tracks end."""
        self.tracks.finish_source(source_id, self.queues.get(source_id))
        self._wake.set()

    def _loop(self) -> None:
        while True:
            batch = self._collect()
            if batch:
                self._process(batch)
            # the share: one job, then the stream queues again, busy or idle; jobs that keep arriving
            # (HTTP clients) cannot hold the frames back for longer than one job (at most one worker batch)
            self._run_jobs(limit=JOBS_PER_TURN)
            self.tracks.finish_pending(self.queues)
            if self._stop.is_set() and (not self._drain or not any(len(q) for q in self.queues.values())):
                break
        self._run_jobs(limit=None)
        self.tracks.finish_all()

    def _collect(self) -> list[Frame]:
        """Up to batch.max_size frames, one per source per round, waiting at most timeout_ms to fill."""
        max_size = self.batch.max_size
        batch: list[Frame] = []
        deadline: float | None = None
        while len(batch) < max_size:
            self._wake.clear()
            got = self._take_round(max_size - len(batch))
            batch.extend(got)
            now = time.monotonic()
            if got and deadline is None:
                deadline = now + self.batch.timeout_ms / 1000.0
            if len(batch) >= max_size or (got and self.batch.timeout_ms == 0):
                break
            if got:
                continue
            if not batch:
                if self._stop.is_set() or not self._jobs.empty() or self.tracks.pending:
                    break
                self._wake.wait(0.1)
                self.stats.worker.last_progress_mono = time.monotonic()  # idle is not wedged
                continue
            remaining = (deadline or now) - now
            if remaining <= 0 or self._stop.is_set():
                break
            self._wake.wait(remaining)
        return batch

    def _take_round(self, limit: int) -> list[Frame]:
        ids = list(self.queues)
        if not ids:
            return []
        start = self._rr % len(ids)
        self._rr += 1
        out: list[Frame] = []
        for sid in ids[start:] + ids[:start]:
            if len(out) >= limit:
                break
            source_queue = self.queues.get(sid)  # a reload may have removed it since the list was taken
            frame = source_queue.get_nowait() if source_queue is not None else None
            if frame is not None and sid in self.detect_off:  # taken so capture and the live view go on
                self.stats.source(sid).dropped["detect_off"] += 1
                if self.on_detect_off is not None:
                    attempt(self.on_detect_off, frame)
            elif frame is not None:
                out.append(frame)
        return out

    def _process(self, batch: list[Frame]) -> None:
        t0 = time.monotonic()
        pipeline = self.pipeline  # a reload may swap it: one batch sees one pipeline
        batch = self.motion.select(batch, pipeline)  # gated frames are published without inference
        if not batch:
            return
        run, error = attempt(self.tracks.run, pipeline, batch, t0, self.queues)
        if error is not None or run is None:
            log.error("pipeline %s failed on a batch of %d; retrying frame by frame: %s",
                      pipeline.name, len(batch), error, exc_info=error)
            self._process_one_by_one(batch, pipeline)
            return
        self._finish(batch, run, t0, pipeline)

    def _process_one_by_one(self, batch: list[Frame], pipeline: PipelineLike) -> None:
        for frame in batch:
            t0 = time.monotonic()
            run, error = attempt(self.tracks.run, pipeline, [frame], t0, self.queues)
            if error is not None or run is None:
                self._frame_failed(frame, f"pipeline failed: {error}")
                continue
            self._finish([frame], run, t0, pipeline)

    def _frame_failed(self, frame: Frame, reason: str) -> None:
        source = self.stats.source(frame.source_id)
        source.errors += 1
        source.dropped["error"] += 1
        source.last_error = reason
        self.stats.worker.errors += 1
        log.error("source %s frame %d dropped: %s", frame.source_id, frame.seq, reason)

    def _finish(self, batch: list[Frame], run: PipelineRun, t0: float, pipeline: PipelineLike) -> None:
        t1 = time.monotonic()
        infer_ms = (t1 - t0) * 1000.0
        worker = self.stats.worker
        worker.batches += 1
        worker.frames += len(batch)
        worker.last_batch_size = len(batch)
        worker.batch_sizes[len(batch)] += 1
        worker.infer_ms_total += infer_ms
        for path, ms in run.timings_ms.items():
            worker.stage_ms_total[path] = worker.stage_ms_total.get(path, 0.0) + ms
        worker.last_progress_mono = t1
        if self.observer is not None:
            self.observer.observe_inference(pipeline.name, t1 - t0)
            self.observer.observe_batch(len(batch))
        stage_errors = dict(run.stage_errors)
        for path, why in stage_errors.items():
            self._stage_failed(path, why)
        for frame, detections in zip(batch, run.detections, strict=True):
            source = self.stats.source(frame.source_id)
            source.processed += 1
            source.detections += len(detections)
            source.process_rate.tick(t1)
            timings = {"queue": (t0 - frame.t_mono) * 1000.0, "infer": infer_ms}
            result = Result(frame, pipeline.name, detections, timings, stage_errors=stage_errors)
            _, error = attempt(self.emit, result)  # one unpublishable result costs only itself
            if error is not None:
                self._frame_failed(frame, f"result not published: {error}")
        self.tracks.after_run(pipeline, run, batch)

    def _stage_failed(self, path: str, why: str) -> None:
        errors = self.stats.worker.stage_errors
        errors[path] += 1
        count = errors[path]
        # a broken model fails on every batch: say so the first time and then every 100th, not 30 times a second
        if count == 1 or count % 100 == 0:
            log.warning("second stage %s failed (%d batch(es) so far); its crops get no result: %s", path, count, why)

    def _run_jobs(self, limit: int | None) -> None:
        done = 0
        while limit is None or done < limit:
            try:
                fn, future = self._jobs.get_nowait()
            except queue.Empty:
                return
            done += 1
            if not future.set_running_or_notify_cancel():
                continue
            value, error = attempt(fn)  # a bad request fails its own future, never the worker
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(value)

