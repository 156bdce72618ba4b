"""WebcamSource: a V4L2 camera (USB, CSI through v4l2) by index or /dev/videoN, with size, fps and fourcc."""

from __future__ import annotations

import logging
import math
import re
import threading
from typing import ClassVar

import cv2
from pydantic import Field, field_validator

from daemon.sources.base import Source, SourceError, SourceOptions
from daemon.sources.cvcapture import CvCapture
from pipelines.preprocess import Image

log = logging.getLogger(__name__)

_DEVICE_PATH = re.compile(r"^/dev/video\d+$")


class WebcamOptions(SourceOptions):
    device: int | str = Field(..., description="Camera index (0) or device path (/dev/video0).")
    width: int | None = Field(None, gt=0, description="Requested frame width; the driver may pick the nearest.")
    height: int | None = Field(None, gt=0, description="Requested frame height; the driver may pick the nearest.")
    camera_fps: float | None = Field(None, gt=0, description="Requested camera frame rate (CAP_PROP_FPS).")
    fourcc: str | None = Field(
        None, min_length=4, max_length=4, description="Requested pixel format, e.g. MJPG or YUYV."
    )
    stall_timeout_s: float | None = Field(
        5.0, gt=0, description="Reopen the camera when no frame arrived for this many seconds; unset: never."
    )

    @field_validator("device")
    @classmethod
    def _check_device(cls, device: int | str) -> int | str:
        if isinstance(device, str) and device.isdigit():
            return int(device)
        if isinstance(device, int) and device < 0:
            raise ValueError(f"expected a camera index >= 0, got {device}")
        if isinstance(device, str) and not _DEVICE_PATH.match(device):
            raise ValueError(f"expected an index or a /dev/videoN path, got {device!r}")
        return device


class WebcamSource(Source):
    """A local camera through OpenCV's V4L2 backend."""

    live: ClassVar[bool] = True
    Options: ClassVar[type[SourceOptions]] = WebcamOptions

    def __init__(self, options: SourceOptions) -> None:
        super().__init__(options)
        assert isinstance(options, WebcamOptions)
        self.opts = options
        self._cv: CvCapture | None = None
        self._lock = threading.Lock()

    def describe(self) -> str:
        return f"webcam:{self.options.id} {self.opts.device}"

    @property
    def stall_timeout_s(self) -> float | None:
        return self.opts.stall_timeout_s

    def open(self) -> None:
        cap = cv2.VideoCapture(self.opts.device, cv2.CAP_V4L2)
        if not cap.isOpened():
            cap.release()
            raise SourceError(
                f"source {self.options.id}: cannot open camera {self.opts.device} with V4L2 "
                "(missing, busy or no permission to the device)"
            )
        # fourcc first: the sizes and rates a camera offers depend on the pixel format
        if self.opts.fourcc:
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*self.opts.fourcc))
        for prop, value in (
            (cv2.CAP_PROP_FRAME_WIDTH, self.opts.width),
            (cv2.CAP_PROP_FRAME_HEIGHT, self.opts.height),
            (cv2.CAP_PROP_FPS, self.opts.camera_fps),
        ):
            if value is not None:
                cap.set(prop, value)
        capture = CvCapture(cap, f"camera {self.opts.device}")
        with self._lock:
            self._cv = capture
        self._log_settings(capture)

    def _log_settings(self, capture: CvCapture) -> None:
        width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fourcc = int(capture.get(cv2.CAP_PROP_FOURCC))
        code = "".join(chr((fourcc >> (8 * i)) & 0xFF) for i in range(4)) if fourcc > 0 else "?"
        log.info(
            "source %s: camera %s opened at %dx%d, %.3g fps, %s", self.options.id, self.opts.device,
            width, height, capture.get(cv2.CAP_PROP_FPS), code,
        )
        wanted = (self.opts.width, self.opts.height)
        if None not in wanted and wanted != (width, height):
            log.warning(
                "source %s: camera %s gives %dx%d instead of the requested %sx%s", self.options.id,
                self.opts.device, width, height, *wanted,
            )

    def read(self) -> tuple[Image, float | None] | None:
        capture = self._cv
        if capture is None:
            raise SourceError(f"source {self.options.id}: read() before open()")
        image = capture.read()
        if image is None:
            raise SourceError(f"source {self.options.id}: camera {self.opts.device} returned no frame")
        msec = capture.get(cv2.CAP_PROP_POS_MSEC)  # the driver's buffer timestamp, when it gives one
        return image, (msec / 1000.0 if math.isfinite(msec) and msec > 0 else None)

    def close(self) -> None:
        with self._lock:
            capture = self._cv
        if capture is not None:
            capture.close()
