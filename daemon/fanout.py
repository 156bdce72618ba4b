"""Sink fan-out: one small bounded queue and one thread per sink, so a slow or broken sink hurts only itself."""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable

from daemon.frames import Message
from daemon.service.stats import SinkStats, Stats
from daemon.sinks.base import Sink

log = logging.getLogger(__name__)

_STOP = None  # wakes a sink thread that waits on an empty queue
_POLL_S = 0.25  # how often an idle sink thread looks at flush, connection state and close


class _Throttle:
    """Lets one log line through per interval and counts what it held back."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._next = 0.0
        self._held = 0
        self._lock = threading.Lock()

    def allow(self) -> int | None:
        """None when this line should be skipped; otherwise how many were skipped since the last one."""
        now = time.monotonic()
        with self._lock:
            if now < self._next:
                self._held += 1
                return None
            self._next = now + self.interval_s
            held, self._held = self._held, 0
            return held


def _describe(exc: BaseException) -> str:
    # Sinks keep credentials out of their exception messages; the fan-out only adds the type.
    return f"{type(exc).__name__}: {exc}"[:300]


class _SinkRunner:
    """The queue and thread in front of one sink. Only this thread calls publish/flush/close."""

    def __init__(self, sink: Sink, stats: SinkStats, flush_every_s: float, warn_every_s: float) -> None:
        self.sink = sink
        self.stats = stats
        sink.attach_stats(stats)
        self.flush_every_s = flush_every_s
        self.queue: queue.Queue[Message | None] = queue.Queue(maxsize=sink.options.queue_size)
        self.kinds = frozenset(sink.options.kinds)
        self.thread = threading.Thread(target=self._run, name=f"sink-{sink.options.id}", daemon=True)
        self.start_failed = False
        self.closing = threading.Event()
        self.abandon = threading.Event()  # the close deadline passed: stop draining
        self.finished = threading.Event()
        self._drop_lock = threading.Lock()  # submit() may be called from several threads
        self._drop_log = _Throttle(warn_every_s)
        self._fail_log = _Throttle(warn_every_s)

    @property
    def name(self) -> str:
        return self.sink.options.id

    def start(self) -> None:
        error = self._call("start", self.sink.start)
        if error is not None:  # one sink failing to start must not stop the others
            self.start_failed = self.stats.start_failed = True
            self.stats.last_error = f"start failed: {_describe(error)}"
            self.stats.connected = False
            log.error("sink %s failed to start, it will receive nothing: %s", self.name, _describe(error))
            self.finished.set()
            return
        self.stats.connected = self.sink.connected
        self.thread.start()

    def offer(self, msg: Message) -> None:
        if self.start_failed or self.closing.is_set():
            self._count_drop("sink %s is not running: message dropped (%d more since last warning)")
            return
        try:
            self.queue.put_nowait(msg)
        except queue.Full:
            self._count_drop("sink %s is too slow: queue full, message dropped (%d more since last warning)")
            return
        self.stats.queue_depth = self.queue.qsize()

    def _count_drop(self, template: str) -> None:
        with self._drop_lock:
            self.stats.dropped += 1
        held = self._drop_log.allow()
        if held is not None:
            log.warning(template, self.name, held)

    def _run(self) -> None:
        last_flush = time.monotonic()
        while True:
            try:
                msg = self.queue.get(timeout=_POLL_S)
            except queue.Empty:
                msg = None
            self.stats.queue_depth = self.queue.qsize()
            if msg is not None:
                if self.abandon.is_set():
                    self._count_drop("sink %s did not drain in time: message dropped (%d more since last warning)")
                else:
                    self._publish(msg)
            now = time.monotonic()
            if now - last_flush >= self.flush_every_s:  # idle too: flush() also does time-based work
                self._call("flush", self.sink.flush)
                last_flush = now
            self.stats.connected = self.sink.connected
            if msg is None and self.closing.is_set() and self.queue.empty():
                break
        self._call("flush", self.sink.flush)
        self._call("close", self.sink.close)
        self.stats.connected = False
        self.finished.set()

    def _publish(self, msg: Message) -> None:
        if self._call("publish", lambda: self.sink.publish(msg)) is None and not self.sink.counts_deliveries:
            self.stats.published += 1

    def _call(self, what: str, action: Callable[[], None]) -> Exception | None:
        """Run one sink method (`what` names it in logs); its failure is logged and counted here, never raised."""
        try:
            action()
        except Exception as exc:  # isolation boundary: the per-sink call (start, publish, flush, close)
            self._failed(what, exc)
            return exc
        return None

    def _failed(self, what: str, exc: Exception) -> None:
        self.stats.failed += 1
        self.stats.last_error = _describe(exc)
        held = self._fail_log.allow()
        if held is not None:
            log.warning(
                "sink %s: %s failed (%d more failures since last warning): %s", self.name, what, held,
                self.stats.last_error,
            )

    def request_close(self) -> None:
        self.closing.set()
        if self.thread.ident is None and not self.start_failed:  # never started: nothing to drain or close
            self.finished.set()
            return
        with contextlib.suppress(queue.Full):  # a full queue keeps the thread busy; it sees `closing` when empty
            self.queue.put_nowait(_STOP)


class Fanout:
    """Routes each Message to every sink that wants its kind, without ever blocking the caller.

    Each sink has its own bounded queue (options.queue_size) and thread. A full queue drops the message
    for that sink only and counts it in SinkStats.dropped; a raising sink is counted in SinkStats.failed.
    Each sink's flush() runs every `flush_every_s`, busy or idle: file sinks reach the disk regularly under
    steady traffic, and sinks with work due by the clock get it done when no message comes (a JSONL interval
    flush after the last line, the clip of an event whose camera stopped sending frames). Warnings about drops
    and failures are rate-limited to one per `warn_every_s` per sink, with a count of those held back.
    """

    def __init__(
        self, sinks: list[Sink], stats: Stats, flush_every_s: float = 1.0, warn_every_s: float = 10.0
    ) -> None:
        ids = [s.options.id for s in sinks]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"sink ids must be unique; repeated: {', '.join(duplicates)}")
        self._runners = [
            _SinkRunner(sink, stats.sink(sink.options.id), flush_every_s, warn_every_s) for sink in sinks
        ]
        self.unfinished: list[str] = []  # sinks whose thread was still busy when close() gave up

    def start(self) -> list[str]:
        """Start every sink and its thread; returns the ids of sinks whose start() raised."""
        for runner in self._runners:
            runner.start()
        return self.failed_to_start

    @property
    def failed_to_start(self) -> list[str]:
        return [r.name for r in self._runners if r.start_failed]

    def submit(self, msg: Message) -> None:
        """Queue msg for every sink that takes its kind; never blocks (full queues drop and count)."""
        for runner in self._runners:
            if msg.kind in runner.kinds:
                runner.offer(msg)

    def close(self, timeout: float = 5.0) -> bool:
        """Drain, flush and close every sink within `timeout` seconds in all; True when all finished.

        Sinks drain in parallel. A sink still busy at the deadline is left to its daemon thread (the
        rest of its queue is dropped and counted) and named in the log and in `self.unfinished`.
        """
        deadline = time.monotonic() + timeout
        for runner in self._runners:
            runner.request_close()
        for runner in self._runners:
            runner.finished.wait(max(0.0, deadline - time.monotonic()))
        self.unfinished = [r.name for r in self._runners if not r.finished.is_set()]
        for runner in self._runners:
            if not runner.finished.is_set():
                runner.abandon.set()
        if self.unfinished:
            log.warning(
                "sinks did not finish within %.1fs and were abandoned: %s", timeout, ", ".join(self.unfinished)
            )
        return not self.unfinished
