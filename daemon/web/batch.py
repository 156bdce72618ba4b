"""Cross-request batching for the inference API: pools images of concurrent requests into worker jobs."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable, Hashable, Mapping, Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Any, Protocol

from daemon.boundary import attempt

log = logging.getLogger(__name__)

BatchCall = Callable[[list[Any], Mapping[str, Any]], Sequence[Any]]


class Submitter(Protocol):
    """What the coalescer needs from daemon.worker.Worker."""

    def submit(self, fn: Callable[[], Any]) -> Future[Any]: ...


@dataclass(eq=False)
class _Request:
    params: Mapping[str, Any]
    key: Hashable
    future: Future[list[Any]]
    results: list[Any]
    remaining: int
    failed: bool = False
    started: bool = False

    def start(self) -> bool:
        """Mark it running (so it can no longer be cancelled); False if its caller already gave up."""
        if not self.started:
            self.started = True
            if not self.future.set_running_or_notify_cancel():
                self.failed = True
        return not self.failed

    def deliver(self, index: int, result: Any) -> None:
        if self.failed:
            return
        self.results[index] = result
        self.remaining -= 1
        if self.remaining == 0:
            with contextlib.suppress(InvalidStateError):  # cancelled meanwhile: nobody waits for it
                self.future.set_result(self.results)

    def fail(self, exc: BaseException) -> None:
        if not self.failed:
            self.failed = True
            with contextlib.suppress(InvalidStateError):
                self.future.set_exception(exc)


@dataclass
class _Item:
    request: _Request
    index: int
    image: Any


@dataclass
class Stats:
    jobs: int = 0
    images: int = 0
    requests: int = 0
    largest_job: int = 0
    job_sizes: dict[int, int] = field(default_factory=dict)


class Coalescer:
    """Per-model queue of pending images; each worker job runs up to `max_images` of them in one call.

    Images of concurrent requests with the same parameters go into the same call, so requests that arrive
    while the worker is busy (with frames or a previous job) are served together. A job never takes more
    than `max_images`, and the worker runs one job, then looks at the stream queues again (daemon/worker.py
    JOBS_PER_TURN): HTTP gets a fair share of the device instead of all of it. Calls run on the worker thread.
    """

    def __init__(self, worker: Submitter, call: BatchCall, max_images: int, name: str = "") -> None:
        if max_images < 1:
            raise ValueError(f"max_images must be at least 1, got {max_images}")
        self.worker = worker
        self.call = call
        self.max_images = max_images
        self.name = name
        self.stats = Stats()
        self._pending: deque[_Item] = deque()
        self._lock = threading.Lock()
        self._scheduled = False

    def submit(self, images: Sequence[Any], params: Mapping[str, Any], key: Hashable = ()) -> Future[list[Any]]:
        """A future of one result per image, in order; `key` groups requests whose params are equal."""
        future: Future[list[Any]] = Future()
        if not images:
            future.set_result([])
            return future
        request = _Request(params, key, future, [None] * len(images), len(images))
        with self._lock:
            self.stats.requests += 1
            self._pending.extend(_Item(request, i, image) for i, image in enumerate(images))
            schedule = not self._scheduled
            self._scheduled = True
        if schedule:
            self.worker.submit(self._job)
        return future

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def fail_pending(self, exc: BaseException) -> None:
        """Fail every request still waiting (the server is stopping and the worker may never run them)."""
        with self._lock:
            items = list(self._pending)
            self._pending.clear()
            self._scheduled = False
        for item in items:
            item.request.fail(exc)

    def _take(self) -> list[_Item]:
        """Up to max_images pending items with the head's key, in arrival order; others keep their place."""
        with self._lock:
            if not self._pending:
                self._scheduled = False
                return []
            key = self._pending[0].request.key
            taken: list[_Item] = []
            kept: deque[_Item] = deque()
            while self._pending:
                item = self._pending.popleft()
                if len(taken) >= self.max_images or item.request.key != key:
                    kept.append(item)
                elif item.request.start():  # a cancelled request (timed out) is dropped, not computed
                    taken.append(item)
            self._pending = kept
            return taken

    def _job(self) -> None:
        """Runs on the worker thread: one model call for one group, then re-queue itself if more wait."""
        items = self._take()
        if items:
            self._record(len(items))
            self._run(items)
        with self._lock:
            again = bool(self._pending)
            self._scheduled = again
        if again:
            # behind whatever the worker has queued meanwhile: streams and other models keep their turn
            self.worker.submit(self._job)

    def _record(self, size: int) -> None:
        stats = self.stats
        stats.jobs += 1
        stats.images += size
        stats.largest_job = max(stats.largest_job, size)
        stats.job_sizes[size] = stats.job_sizes.get(size, 0) + 1

    def _call(self, items: list[_Item]) -> list[Any]:
        results = list(self.call([item.image for item in items], items[0].request.params))
        if len(results) != len(items):
            raise RuntimeError(f"model {self.name!r} returned {len(results)} results for {len(items)} images")
        return results

    def _run(self, items: list[_Item]) -> None:
        # the worker's per-step boundary: one bad request must not fail the others or the worker
        results, exc = attempt(self._call, items)
        if exc is not None:
            requests = list(dict.fromkeys(item.request for item in items))
            if len(requests) == 1:
                requests[0].fail(exc)
                return
            log.warning("api: model %s failed on a batch of %d requests; retrying one by one: %s",
                        self.name, len(requests), exc)
            for request in requests:
                self._run([item for item in items if item.request is request])
            return
        assert results is not None  # attempt gives a value or an error
        for item, result in zip(items, results, strict=True):
            item.request.deliver(item.index, result)
