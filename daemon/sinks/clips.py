"""Event clips: per camera a bounded ring buffer of recent frames, and on each ended event a clip of
[first_seen - pre_capture, last_seen + post_capture] encoded by a bounded pool of writer threads.

The buffer keeps frames as JPEG bytes at a capped rate and width (a 1280x720 frame is 2.7 MB raw and ~150 kB as
JPEG), bounded by seconds and by bytes, so a long run never grows it. The events sink's own fan-out thread
feeds it; encoding happens on the writer threads, never on the frame path or another sink's thread.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from daemon.frames import Frame
from daemon.sinks.clips_encode import DiskFullError, EncodeOptions, Shot, encode_clip
from pipelines.models import Image

log = logging.getLogger(__name__)

ClipDone = Callable[[str, Path], None]  # (event_id, clip path): called on a writer thread


class ClipOptions(BaseModel):
    """Clips of events, from a ring buffer of each camera's recent frames."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(False, description="Write an MP4 clip of each event (needs the `result` kind: frames).")
    pre_capture: float = Field(5.0, ge=0.0, le=60.0, description="Seconds before the event's first sighting.")
    post_capture: float = Field(5.0, ge=0.0, le=60.0, description="Seconds after the event's last sighting.")
    fps: float = Field(10.0, gt=0.0, le=60.0, description="Frame rate cap of the buffer and the clips.")
    max_width: int = Field(1280, ge=64, description="Frames wider than this are scaled down before buffering.")
    jpeg_quality: int = Field(85, ge=10, le=100, description="Quality of the buffered frames.")
    buffer_seconds: float = Field(
        60.0,
        gt=0.0,
        description="Seconds each camera's buffer holds: an event longer than this minus pre and "
        "post capture gets a clip of its last part (counted as truncated).",
    )
    buffer_max_bytes: int = Field(64 * 1024 * 1024, ge=1024, description="Bytes each camera's buffer may hold.")
    writers: int = Field(1, ge=1, le=8, description="Clip writer threads (encoding uses CPU: keep it small).")
    max_pending: int = Field(8, ge=1, description="Clips waiting for a writer; beyond this a clip is skipped.")
    max_clip_bytes: int = Field(50 * 1024 * 1024, ge=1024, description="A clip is cut short at this size.")
    min_free_bytes: int = Field(
        256 * 1024 * 1024, ge=0, description="Below this much free disk space no clip is written (the rest runs)."
    )
    crf: int = Field(28, ge=0, le=51, description="H.264 quality (lower: better and larger).")
    preset: str = Field(
        "ultrafast", pattern=r"^[a-z]+$", description="libx264 preset: ultrafast: least CPU; veryfast: half the bytes."
    )


@dataclass
class ClipCounters:
    written: int = 0
    bytes: int = 0
    failed: int = 0
    skipped_busy: int = 0  # more clips waiting than max_pending
    skipped_disk_full: int = 0  # free space under min_free_bytes, or ENOSPC while writing
    truncated: int = 0  # the event's start had left the buffer
    empty: int = 0  # no frames in the window (no `result` messages reach the sink?)
    disk_full: bool = False
    encode_seconds: float = 0.0
    video_seconds: float = 0.0


class RingBuffer:
    """One camera's recent frames as JPEG shots, bounded by age (seconds) and total bytes."""

    def __init__(self, max_seconds: float, max_bytes: int) -> None:
        self.max_seconds, self.max_bytes = max_seconds, max_bytes
        self._shots: deque[Shot] = deque()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._shots)

    def push(self, shot: Shot) -> None:
        self._shots.append(shot)
        self.bytes += len(shot.jpeg)
        while self._shots and (
            shot.t - self._shots[0].t > self.max_seconds or (self.bytes > self.max_bytes and len(self._shots) > 1)
        ):
            self.bytes -= len(self._shots.popleft().jpeg)

    @property
    def oldest(self) -> float | None:
        return self._shots[0].t if self._shots else None

    @property
    def newest(self) -> float | None:
        return self._shots[-1].t if self._shots else None

    def window(self, start: float, end: float) -> list[Shot]:
        return [s for s in self._shots if start <= s.t <= end]


@dataclass(order=True)
class _Due:
    end: float  # wall time the clip's window ends (last_seen + post_capture)
    event_id: str = field(compare=False)
    camera: str = field(compare=False)
    start: float = field(compare=False)
    path: Path = field(compare=False)


class ClipRecorder:
    """Buffers frames per camera; cuts and encodes each ended event's clip once its window has passed.

    Not thread-safe: frame(), schedule(), source_ended() and tick() run on the events sink's thread only.
    """

    def __init__(self, options: ClipOptions, on_done: ClipDone) -> None:
        self.options = options
        self.on_done = on_done
        self.counters = ClipCounters()
        self._buffers: dict[str, RingBuffer] = {}
        self._last_t: dict[str, float] = {}
        self._due: list[_Due] = []
        self._warned: set[str] = set()  # cameras whose clips had no frames
        self._ended: set[str] = set()  # cameras whose source ended: no frame will close a clip's window
        self._pool = ThreadPoolExecutor(max_workers=options.writers, thread_name_prefix="clip-writer")
        self._pending = 0
        self._lock = threading.Lock()  # counters and _pending are also written by the writer threads
        self._encode = EncodeOptions(options.fps, options.crf, options.preset, options.max_clip_bytes)

    def buffer(self, camera: str) -> RingBuffer:
        found = self._buffers.get(camera)
        if found is None:
            found = self._buffers[camera] = RingBuffer(self.options.buffer_seconds, self.options.buffer_max_bytes)
        return found

    def snapshot(self) -> dict[str, Any]:
        """The counters at one instant (writer threads update them)."""
        with self._lock:
            return asdict(self.counters)

    @property
    def buffered_bytes(self) -> int:
        return sum(b.bytes for b in list(self._buffers.values()))  # read by the metrics scrape too

    def frame(self, frame: Frame) -> None:
        """Buffer a frame (at most `fps` per second per camera), then cut the clips whose window has passed."""
        self._ended.discard(frame.source_id)  # it streams again (a reload restarted it)
        last = self._last_t.get(frame.source_id)
        if last is None or frame.t_wall - last >= 1.0 / self.options.fps - 1e-6:
            self._last_t[frame.source_id] = frame.t_wall
            self.buffer(frame.source_id).push(Shot(frame.t_wall, self._jpeg(frame.image)))
        self.tick(camera=frame.source_id, now=frame.t_wall)

    def _jpeg(self, image: Image) -> bytes:
        height, width = image.shape[:2]
        if width > self.options.max_width:
            size = (self.options.max_width, max(2, round(height * self.options.max_width / width)))
            image = np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.options.jpeg_quality])
        if not ok:
            raise ValueError(f"clip buffer: cannot encode a frame of shape {image.shape} as JPEG")
        return bytes(data.tobytes())

    def schedule(self, event_id: str, camera: str, first_seen: float, last_seen: float, path: Path) -> None:
        """The event ended: its clip is cut once frames past last_seen + post_capture have arrived."""
        start = first_seen - self.options.pre_capture
        self._due.append(_Due(last_seen + self.options.post_capture, event_id, camera, start, path))
        self._due.sort()
        if camera in self._ended:  # the `end` events of a source's last tracks come after its `ended` status
            self.tick(camera=camera, now=float("inf"))

    def source_ended(self, camera: str) -> None:
        """No more frames will come: cut the camera's clips now with what the buffer has, and those of events
        that end later (the worker ends a source's tracks once it has run the frames still queued)."""
        self._ended.add(camera)
        self.tick(camera=camera, now=float("inf"))

    def tick(self, camera: str | None = None, now: float | None = None) -> None:
        """Cut the clips whose window ended before `now` (a frame's time; None: the wall clock, with a grace of
        post_capture more, for a camera whose frames stopped)."""
        keep: list[_Due] = []
        for due in self._due:
            if camera is not None and due.camera != camera:
                keep.append(due)
                continue
            limit = now if now is not None else time.time() - self.options.post_capture
            if due.end <= limit:
                self._cut(due)
            else:
                keep.append(due)
        self._due = keep

    def _cut(self, due: _Due) -> None:
        buffer = self.buffer(due.camera)
        shots = buffer.window(due.start, due.end)
        if not shots:
            with self._lock:
                self.counters.empty += 1
            # once per camera at warning level: without `result` messages every event would say it again
            level = logging.DEBUG if due.camera in self._warned else logging.WARNING
            self._warned.add(due.camera)
            log.log(
                level,
                "clip of event %s: no frames of %s in its window (does the pipeline publish_results?)",
                due.event_id,
                due.camera,
            )
            return
        if buffer.oldest is not None and buffer.oldest > due.start + 1.0 / self.options.fps:
            with self._lock:
                self.counters.truncated += 1
        if self._low_disk(due.path):
            return
        with self._lock:
            if self._pending >= self.options.max_pending:
                self.counters.skipped_busy += 1
                log.warning("clip of event %s skipped: %d clips already wait for a writer", due.event_id, self._pending)
                return
            self._pending += 1
        self._pool.submit(self._write, due, shots)

    def _low_disk(self, path: Path) -> bool:
        folder = path.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        free = shutil.disk_usage(folder).free
        full = free < self.options.min_free_bytes
        with self._lock:
            if full and not self.counters.disk_full:
                log.error(
                    "clips paused: %d bytes free under %s, below min_free_bytes %d (events and snapshots go on)",
                    free,
                    folder,
                    self.options.min_free_bytes,
                )
            elif not full and self.counters.disk_full:
                log.info("clips resumed: %d bytes free under %s", free, folder)
            self.counters.disk_full = full
            if full:
                self.counters.skipped_disk_full += 1
        return full

    def _write(self, due: _Due, shots: list[Shot]) -> None:
        """On a writer thread: encode, then hand the path to on_done. Failures are logged and counted here."""
        started = time.perf_counter()
        try:
            size = encode_clip(shots, due.path, self._encode)
            self.on_done(due.event_id, due.path)
        except DiskFullError as exc:
            with self._lock:
                self.counters.skipped_disk_full += 1
                self.counters.disk_full = True
            log.error("clips paused: %s", exc)
        except Exception as exc:  # a writer thread's boundary: one bad clip must not stop the others
            with self._lock:
                self.counters.failed += 1
            log.error("clip of event %s failed: %s: %s", due.event_id, type(exc).__name__, exc)
        else:
            with self._lock:
                self.counters.written += 1
                self.counters.bytes += size
                self.counters.encode_seconds += time.perf_counter() - started
                self.counters.video_seconds += shots[-1].t - shots[0].t + 1.0 / self.options.fps
        finally:
            with self._lock:
                self._pending -= 1

    def close(self, timeout: float = 30.0) -> None:
        """Cut every scheduled clip with what is buffered, wait up to `timeout` for the writers."""
        for camera in {d.camera for d in self._due}:
            self.source_ended(camera)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self._pending == 0:
                    break
            time.sleep(0.05)
        self._pool.shutdown(wait=False, cancel_futures=True)
