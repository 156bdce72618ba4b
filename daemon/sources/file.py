"""FileSource: a video file decoded with OpenCV's FFmpeg backend, paced at its own fps or as fast as possible."""

from __future__ import annotations

import logging
import math
import threading
import time
from pathlib import Path
from typing import ClassVar, Literal

import cv2
from pydantic import Field, model_validator

from daemon.sources.base import Source, SourceClosed, SourceError, SourceOptions
from daemon.sources.cvcapture import CvCapture, DecodeOptions, open_params, report_decoder
from pipelines.preprocess import Image

log = logging.getLogger(__name__)

FALLBACK_FPS = 25.0  # when the container does not say; only used for pts and pacing
MAX_LAG_S = 0.5  # realtime pacing behind by more than this restarts its clock instead of bursting


class FileOptions(DecodeOptions):
    path: str = Field(..., description="Video file to read (any container and codec FFmpeg decodes).")
    pace: Literal["realtime", "fast"] = Field(
        "realtime",
        description="realtime: deliver frames at the file's own fps, as a camera would; "
        "fast: as fast as decoding and the queue allow (an fps cap then paces it).",
    )
    loop: bool = Field(False, description="Start again at start_frame at the end instead of ending.")
    start_frame: int = Field(0, ge=0, description="First frame to deliver (0-based).")
    stop_frame: int | None = Field(
        None, gt=0, description="Stop before this frame (exclusive, 0-based); unset: the end of the file."
    )

    @model_validator(mode="after")
    def _check_range(self) -> FileOptions:
        if self.stop_frame is not None and self.stop_frame <= self.start_frame:
            raise ValueError(
                f"stop_frame ({self.stop_frame}) must be greater than start_frame ({self.start_frame})"
            )
        return self


class FileSource(Source):
    """Frames of one video file; read() returns None at the end (or loops), so the capture ends cleanly."""

    live: ClassVar[bool] = False
    Options: ClassVar[type[SourceOptions]] = FileOptions

    def __init__(self, options: SourceOptions) -> None:
        super().__init__(options)
        assert isinstance(options, FileOptions)
        self.opts = options
        self.fps = FALLBACK_FPS
        self._cv: CvCapture | None = None
        self._closed = threading.Event()  # wakes a pacing sleep on close()
        self._index = 0  # index in the file of the next frame to read
        self._pts_offset = 0.0  # added to the file's pts after each loop, so pts keep increasing
        self._last_pts: float | None = None
        self._pass_frames = 0  # frames delivered since the last (re)start: an empty pass must not spin
        self._clock: tuple[float, float] | None = None  # (monotonic, pts) of the pacing origin
        self._length_checked = False

    def stream_info(self) -> dict[str, str | float]:
        return self._cv.stream_info() if self._cv is not None else {}

    def describe(self) -> str:
        return f"file:{self.options.id} {self.opts.path}"

    @property
    def paced(self) -> bool:
        return self.opts.pace == "realtime"

    def open(self) -> None:
        path = Path(self.opts.path)
        if not path.is_file():
            raise SourceError(f"source {self.options.id}: video file {path} does not exist or is not a file")
        cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, open_params(self.opts))
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"source {self.options.id}: cannot decode video file {path} with FFmpeg")
        report_decoder(self.opts, cap)
        self._closed.clear()
        self._cv = CvCapture(cap, f"video file {path}")
        fps = self._cv.get(cv2.CAP_PROP_FPS)
        if math.isfinite(fps) and fps > 0:
            self.fps = fps
        else:
            log.warning("source %s: %s does not state its fps; assuming %g", self.options.id, path, FALLBACK_FPS)
        self._index = 0
        self._length_checked = False
        self._rewind()
        self._pts_offset, self._last_pts, self._clock = 0.0, None, None
        log.info("source %s: opened %s at %.3g fps (pace %s)", self.options.id, path, self.fps, self.opts.pace)

    def _rewind(self) -> None:
        assert self._cv is not None
        if self._index != self.opts.start_frame:  # not already there (a fresh open is at frame 0)
            self._cv.set(cv2.CAP_PROP_POS_FRAMES, self.opts.start_frame)
        self._index = self.opts.start_frame
        self._pass_frames = 0

    def read(self) -> tuple[Image, float | None] | None:
        if self._cv is None:
            raise SourceError(f"source {self.options.id}: read() before open()")
        while True:
            past_stop = self.opts.stop_frame is not None and self._index >= self.opts.stop_frame
            image = None if past_stop else self._cv.read()
            if image is not None:
                break
            if not past_stop:
                self._check_length()
            if not self.opts.loop or self._pass_frames == 0:
                return None
            self._rewind()
        file_pts = self._file_pts()
        if self._pass_frames == 0 and self._last_pts is not None:  # a new loop continues the timeline
            self._pts_offset = self._last_pts + 1.0 / self.fps - file_pts
        pts = self._pts_offset + file_pts
        self._index += 1
        self._pass_frames += 1
        self._last_pts = pts
        if self.opts.pace == "realtime":
            self._pace(pts)
        return image, pts

    def _check_length(self) -> None:
        """Warn (once per open) when decoding stopped well short of the frames the container declares:
        a cut or damaged file otherwise looks like a normal end."""
        assert self._cv is not None
        declared = self._cv.get(cv2.CAP_PROP_FRAME_COUNT)
        if self._length_checked or not math.isfinite(declared) or declared <= 0:
            return
        self._length_checked = True
        expected = min(declared, self.opts.stop_frame or declared) - self.opts.start_frame
        if self._pass_frames < expected - max(2.0, 0.01 * expected):  # counts from durations can be off by one
            log.warning(
                "source %s: %s ended after %d frame(s) but its container declares %d: the file is truncated "
                "or damaged", self.options.id, self.opts.path, self._pass_frames, int(expected),
            )

    def _file_pts(self) -> float:
        """The decoded frame's time in the file: the container's pts when it has them, else index / fps."""
        assert self._cv is not None
        msec = self._cv.get(cv2.CAP_PROP_POS_MSEC)
        if math.isfinite(msec) and (msec > 0 or self._index == self.opts.start_frame):
            return msec / 1000.0
        return self._index / self.fps

    def _pace(self, pts: float) -> None:
        now = time.monotonic()
        if self._clock is None:
            self._clock = (now, pts)
        delay = self._clock[0] + (pts - self._clock[1]) - now
        if delay < -MAX_LAG_S:  # the consumer held us up: go on from here rather than burst to catch up
            self._clock = (now, pts)
        elif delay > 0 and self._closed.wait(delay):
            raise SourceClosed(f"source {self.options.id}: closed")

    def close(self) -> None:
        self._closed.set()
        if self._cv is not None:
            self._cv.close()
