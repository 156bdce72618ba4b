"""FrameQueue: one bounded queue per source with an explicit full-queue policy and drop counters."""

from __future__ import annotations

import collections
import threading
import time

from daemon.frames import Frame
from daemon.service.stats import SourceStats
from daemon.sources.base import QueuePolicy


class FrameQueue:
    """Bounded FIFO between one capture thread (producer) and the worker (consumer).

    drop_oldest keeps the freshest frames for live cameras; drop_newest keeps the backlog; block makes the
    producer wait, so files and folders lose nothing. Every drop is counted in stats.dropped["queue_full"].
    """

    def __init__(self, size: int, policy: QueuePolicy, stats: SourceStats) -> None:
        self.size = size
        self.policy = policy
        self.stats = stats
        self._items: collections.deque[Frame] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self.on_put: list[threading.Event] = []  # consumers waiting on any of several queues

    def put(self, frame: Frame, timeout: float | None = None) -> bool:
        """Enqueue; returns False when the frame was dropped (or the queue is closed)."""
        with self._cond:
            if self._closed:
                return False
            if len(self._items) >= self.size:
                if self.policy == "drop_newest":
                    self.stats.dropped["queue_full"] += 1
                    return False
                if self.policy == "drop_oldest":
                    self._items.popleft()
                    self.stats.dropped["queue_full"] += 1
                elif not self._wait_for_room(timeout):
                    return False
            self._items.append(frame)
            self._cond.notify_all()
        for event in self.on_put:
            event.set()
        return True

    def _wait_for_room(self, timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while len(self._items) >= self.size and not self._closed:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            self._cond.wait(remaining if remaining is not None else 0.5)
        return not self._closed

    def get_nowait(self) -> Frame | None:
        with self._cond:
            if not self._items:
                return None
            frame = self._items.popleft()
            self._cond.notify_all()  # wake a blocked producer
            return frame

    def get(self, timeout: float | None = None) -> Frame | None:
        with self._cond:
            if not self._cond.wait_for(lambda: self._items or self._closed, timeout):
                return None
            if not self._items:
                return None
            frame = self._items.popleft()
            self._cond.notify_all()
            return frame

    def close(self) -> None:
        """Stop accepting frames and release a blocked producer; queued frames can still be drained."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for event in self.on_put:
            event.set()

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        return len(self._items)
