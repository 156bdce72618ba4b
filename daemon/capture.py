"""The capture thread: source -> Frame -> queue, with reconnect backoff, a stall watchdog and an fps cap."""

from __future__ import annotations

import logging
import random
import threading
import time
import traceback
from collections.abc import Callable
from enum import Enum

from daemon import registry
from daemon.frames import Frame
from daemon.motion import detector_for
from daemon.queues import FrameQueue
from daemon.service.stats import SourceStats, Stats
from daemon.sources.base import ReconnectOptions, Source, SourceError, SourceOptions, mask_credentials
from pipelines.preprocess import Image

log = logging.getLogger(__name__)

StateCallback = Callable[[str, str, str], None]  # (source_id, state, detail)
PUT_POLL_S = 0.2  # a blocked put wakes this often to notice stop()


class CaptureState(str, Enum):
    CONNECTING = "connecting"
    STREAMING = "streaming"
    RECONNECTING = "reconnecting"
    ENDED = "ended"
    FAILED = "failed"
    STOPPED = "stopped"


class Backoff:
    """Exponential backoff with jitter over consecutive failures; reset once frames flow again."""

    def __init__(self, options: ReconnectOptions, rng: random.Random | None = None) -> None:
        self.options = options
        self.failures = 0
        self._rng = rng or random.Random()

    def fail(self) -> float:
        """Count one failed attempt and return the wait before the next one, in seconds."""
        o = self.options
        base = min(o.initial_s * o.multiplier ** min(self.failures, 64), o.max_s)
        self.failures += 1
        return max(0.0, base * (1.0 + self._rng.uniform(-o.jitter, o.jitter)))

    @property
    def exhausted(self) -> bool:
        return self.options.max_attempts is not None and self.failures >= self.options.max_attempts

    def reset(self) -> None:
        self.failures = 0


class FpsLimiter:
    """The per-source `fps` cap: drops frames of paced sources (cameras must not be slowed down), and
    paces the others (fast files, folders), which then lose nothing."""

    def __init__(self, fps: float | None, drop: bool) -> None:
        self.interval = 1.0 / fps if fps else 0.0
        self.drop = drop
        self._due = 0.0

    def admit(self, now: float, stop: threading.Event) -> bool:
        """True to keep the frame; may wait (for pacing) until its turn or until stop is set."""
        if not self.interval:
            return True
        if now < self._due:
            if self.drop:
                return False
            if stop.wait(self._due - now):
                return False
            now = time.monotonic()
        # from the due time, not from now, so the average rate holds; but never bank a burst after a gap
        self._due = max(self._due + self.interval, now + self.interval / 2)
        return True


class Capture:
    """One thread reading one source into its queue, until stop(), the end of a finite source, or
    max_attempts failed reconnections. States: connecting, streaming, reconnecting, ended, failed, stopped."""

    def __init__(self, source: Source, queue: FrameQueue, stats: SourceStats,
                 on_state: StateCallback | None = None, rng: random.Random | None = None) -> None:
        self.source = source
        self.queue = queue
        self.stats = stats
        self.on_state = on_state
        self.source_id = source.options.id
        self.done = threading.Event()  # set when the thread has exited (ended, failed or stopped)
        self.state: CaptureState | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()  # state, error counts and stall marks: the watchdog writes them too
        self._thread: threading.Thread | None = None
        self._watchdog: threading.Thread | None = None
        self._seq = 0
        self._session = 0  # increments at every open, so the watchdog never closes a later connection
        # when the read in progress began; None outside read(). Time blocked in a full queue or in the fps
        # cap's pacing is not the camera's fault, so only reads count towards a stall.
        self._read_started: float | None = None
        self._stalled_session = -1
        self._backoff = Backoff(source.options.reconnect, rng)
        self._limiter = FpsLimiter(source.options.fps, drop=source.paced)
        self._motion = detector_for(source.options.motion)  # cheap, so here rather than on the worker
        source.on_skip = self._on_skip

    # -- control ----------------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"capture-{self.source_id}", daemon=True)
        self._thread.start()
        stall = self.source.stall_timeout_s
        if stall is not None:
            self._watchdog = threading.Thread(target=self._watch, args=(stall,), name=f"stall-{self.source_id}",
                                              daemon=True)
            self._watchdog.start()

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop reading (even from within a blocked read or put); True when the thread exited in time."""
        self._stop.set()
        self.source.close()  # thread-safe by contract; makes a blocked read return
        if self._thread is None:
            self.done.set()
            return True
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("source %s: capture thread did not stop within %.1fs", self.source_id, timeout)
            return False
        return True

    # -- the thread -------------------------------------------------------------------------------------
    def _run(self) -> None:
        self._set_state(CaptureState.CONNECTING, self.source.describe())
        try:
            while not self._stop.is_set():
                outcome, detail = self._session_once()
                if outcome == "ended":
                    self._set_state(CaptureState.ENDED, "end of source")
                    return
                if outcome == "stopped":
                    return
                if not self.source.live:  # a file or folder that fails will fail again
                    self._set_state(CaptureState.FAILED, detail)
                    return
                delay = self._backoff.fail()
                if self._backoff.exhausted:
                    self._set_state(CaptureState.FAILED, f"{detail}; gave up after "
                                    f"{self._backoff.failures} failed attempt(s)")
                    return
                self._set_state(CaptureState.RECONNECTING, f"{detail}; retrying in {delay:.1f}s")
                log.info("source %s: reconnecting in %.1fs (attempt %d)", self.source_id, delay,
                         self._backoff.failures + 1)
                if self._stop.wait(delay):
                    return
                self.stats.reconnects += 1
        finally:
            if self.state not in (CaptureState.ENDED, CaptureState.FAILED):
                self._set_state(CaptureState.STOPPED, "stopped")
            self.done.set()

    def _session_once(self) -> tuple[str, str]:
        """Open the source and read until it ends, fails or stop() is called: ("ended" | "stopped" |
        "error", detail)."""
        with self._lock:
            self._session += 1
        opened = False
        try:
            self.source.open()
            opened = True
            first = True
            while not self._stop.is_set():
                self._read_started = time.monotonic()
                item = self.source.read()
                self._read_started = None
                if item is None:
                    return "ended", ""
                self._deliver(*item, first=first)
                first = False
            return "stopped", ""
        except Exception as exc:  # isolation boundary: log (credential-free), count, reconnect
            if self._stop.is_set():
                return "stopped", ""
            return "error", self._failed(exc, "read" if opened else "open")
        finally:
            with self._lock:
                self._read_started = None
            self.source.close()

    def _deliver(self, image: Image, pts: float | None, first: bool) -> None:
        now = time.monotonic()
        self.stats.last_frame_mono = now
        self.stats.captured += 1
        self.stats.capture_rate.tick(now)
        if first:
            self._backoff.reset()
            self._set_state(CaptureState.STREAMING, self.source.describe())
        if not self._limiter.admit(now, self._stop):
            if not self._stop.is_set():
                self.stats.dropped["fps_cap"] += 1
            return
        # stamped after the cap: a paced frame counts as captured when it is let through
        stamp = time.monotonic()
        motion = self._motion.check(image, stamp if pts is None else pts) if self._motion is not None else None
        frame = Frame(self.source_id, self._seq, image, time.time(), stamp, pts, motion)
        self._seq += 1
        if self.queue.policy != "block":
            self.queue.put(frame)  # a drop is counted by the queue
            return
        while not self._stop.is_set() and not self.queue.put(frame, timeout=PUT_POLL_S):
            if self.queue.closed:  # the app closed it: nobody will read what we capture
                self._stop.set()

    def _failed(self, exc: Exception, reason: str) -> str:
        """Log and count a failed session; returns its log-safe description."""
        with self._lock:
            if self._stalled_session == self._session:
                return self.stats.last_error  # the watchdog has already logged and counted it
        detail = mask_credentials(str(exc) if isinstance(exc, SourceError) else f"{type(exc).__name__}: {exc}")
        if isinstance(exc, SourceError):
            log.warning("source %s: %s", self.source_id, detail)
        else:  # a bug rather than a camera problem: keep the traceback, masked like everything else
            log.warning("source %s: unexpected %s", self.source_id, mask_credentials(traceback.format_exc()))
        self._count_error(reason, detail)
        return detail

    def _count_error(self, reason: str, detail: str) -> None:
        with self._lock:
            self.stats.errors += 1
            self.stats.errors_by_reason[reason] += 1
            self.stats.last_error = detail

    def _on_skip(self, reason: str, detail: str) -> None:
        self._count_error(reason, mask_credentials(detail))

    def _set_state(self, state: CaptureState, detail: str) -> None:
        with self._lock:
            if state == self.state:
                return
            self.state = state
            self.stats.set_state(state.value)
        log.info("source %s: %s (%s)", self.source_id, state.value, detail)
        if self.on_state is not None:
            self.on_state(self.source_id, state.value, detail)

    # -- the stall watchdog -----------------------------------------------------------------------------
    def _watch(self, timeout: float) -> None:
        period = min(1.0, timeout / 4)
        while not self._stop.wait(period):
            with self._lock:
                started = self._read_started
                if started is None or self._stalled_session == self._session:
                    continue
                age = time.monotonic() - started
                if age <= timeout:
                    continue
                self._stalled_session = self._session
            detail = f"stalled: no frame for {age:.1f}s (stall_timeout_s={timeout:g}); reconnecting"
            log.warning("source %s: %s", self.source_id, detail)
            self._count_error("stall", detail)
            self._set_state(CaptureState.RECONNECTING, detail)
            self.source.close()  # the blocked read returns and the capture thread reconnects


def make_capture(options: SourceOptions, stats: Stats | SourceStats,
                 on_state: StateCallback | None = None) -> Capture:
    """Build the source named by options.type, its queue (policy: queue.policy, else drop_oldest for
    live sources and block for finite ones) and the capture thread that joins them (not started)."""
    cls = registry.resolve("source", options.type)
    if not isinstance(options, cls.Options):
        options = cls.Options.model_validate(options.model_dump())
    source: Source = cls(options)
    source_stats = stats.source(options.id) if isinstance(stats, Stats) else stats
    policy = options.queue.policy or ("drop_oldest" if source.live else "block")
    return Capture(source, FrameQueue(options.queue.size, policy, source_stats), source_stats, on_state)
