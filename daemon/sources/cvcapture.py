"""CvCapture: a cv2.VideoCapture that one thread reads while another may close it at any moment; and the
options of the sources that decode with OpenCV's FFmpeg backend (file, rtsp)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Literal

import cv2
from pydantic import Field

from daemon.sources.base import SourceClosed, SourceOptions
from pipelines.preprocess import Image, as_image

log = logging.getLogger(__name__)

HwDecode = Literal["off", "any", "vaapi"]
HW_DECODE: dict[str, int] = {
    "off": cv2.VIDEO_ACCELERATION_NONE,
    "any": cv2.VIDEO_ACCELERATION_ANY,
    "vaapi": cv2.VIDEO_ACCELERATION_VAAPI,
}


class DecodeOptions(SourceOptions):
    """Options of a source decoded by OpenCV's FFmpeg backend."""

    hw_decode: HwDecode = Field(
        "off",
        description="Ask OpenCV's FFmpeg backend for hardware decoding: any (what the build and the box have) or "
        "vaapi (Intel/AMD). Falls back to the CPU, with a warning, where the OpenCV build or the box has none "
        "(the opencv-python wheel usually has none: the gstreamer source's presets are the way to NVDEC/VA-API).",
    )


def open_params(options: DecodeOptions) -> list[int]:
    """cv2.VideoCapture parameters for the options (none when hardware decoding is off)."""
    if options.hw_decode == "off":
        return []
    return [cv2.CAP_PROP_HW_ACCELERATION, HW_DECODE[options.hw_decode]]


def report_decoder(options: DecodeOptions, cap: cv2.VideoCapture) -> None:
    """Say which decoder runs when hardware decoding was asked for: a silent CPU fallback costs cameras."""
    if options.hw_decode == "off":
        return
    used = int(cap.get(cv2.CAP_PROP_HW_ACCELERATION))
    if used == cv2.VIDEO_ACCELERATION_NONE:
        log.warning("source %s: hw_decode %s asked for, but OpenCV decodes on the CPU (its FFmpeg build or this "
                    "box has no such decoder)", options.id, options.hw_decode)
    else:
        log.info("source %s: hardware decoding (OpenCV acceleration %d)", options.id, used)


class CvCapture:
    """Serialises release() against read(): OpenCV frees the decoder in release(), so releasing while
    another thread is inside read() would crash the process.

    close() from another thread marks the capture closed; when a read is in flight it calls `interrupt`
    (which should make that read return soon, e.g. by shutting down its socket) and leaves the release
    to the reading thread, which does it as soon as read() returns.
    """

    def __init__(self, cap: cv2.VideoCapture, label: str, interrupt: Callable[[], None] | None = None) -> None:
        self._cap = cap
        self._label = label  # log-safe name of the stream, used in error messages
        self._interrupt = interrupt
        self._lock = threading.Lock()
        self._reading = False
        self._closed = False

    def read(self) -> Image | None:
        """The next decoded frame, or None when the backend returned none (end of file, lost stream)."""
        with self._lock:
            if self._closed:
                raise SourceClosed(f"{self._label} is closed")
            self._reading = True
        try:
            ok, image = self._cap.read()
        finally:
            with self._lock:
                self._reading = False
                closed = self._closed
        if closed:
            self._cap.release()  # close() came while we were reading and left the release to us
            raise SourceClosed(f"{self._label} was closed while reading")
        return as_image(image) if ok and image is not None else None

    def get(self, prop: int) -> float:
        """A capture property; call it from the reading thread only."""
        with self._lock:
            return 0.0 if self._closed else float(self._cap.get(prop))

    def stream_info(self) -> dict[str, str | float]:
        """The stream's codec (FourCC) and declared fps, for `edgewatch doctor`."""
        fourcc = int(self.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode("ascii", "replace").strip("\0 ")
        return {"codec": fourcc or "unknown", "fps": round(self.get(cv2.CAP_PROP_FPS), 3)}

    def set(self, prop: int, value: float) -> bool:
        with self._lock:
            return False if self._closed else bool(self._cap.set(prop, value))

    def close(self) -> None:
        """Idempotent and safe from any thread; makes an in-flight read return when `interrupt` can."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._reading:
                # under the lock: the reader cannot release (and so close the sockets) until we are done
                if self._interrupt is not None:
                    self._interrupt()
                return
        self._cap.release()

    @property
    def closed(self) -> bool:
        return self._closed
