"""GstSource (`type: gstreamer`): a camera decoded by a GStreamer pipeline (PyGObject + appsink), so that
hardware decoders (VA-API, NVDEC, Jetson) can do the work; a preset or the user's own pipeline string.

The pipeline always ends in `videoconvert ! videoscale ! video/x-raw,format=BGR[,width,height] ! appsink`
(scaling there, or in the hardware post-processor, is `decode_size`). Reconnect, the stall watchdog, the fps
cap and the states are the capture thread's (daemon/capture.py), as for every source. Credentials of a
preset's URL are handed to rtspsrc as properties (user-id, user-pw), so they never appear in the pipeline
description; every text that leaves this module goes through mask_credentials all the same.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from typing import Any, ClassVar, Literal, NamedTuple
from urllib.parse import unquote, urlsplit

import numpy as np
from pydantic import ConfigDict, Field, SecretStr, field_validator, model_validator

from daemon.sources.base import Source, SourceClosed, SourceError, SourceOptions, mask_credentials
from pipelines.preprocess import Image, as_image

log = logging.getLogger(__name__)

Preset = Literal["cpu", "vaapi", "nvdec", "jetson"]
APPSINK = "edgewatch_sink"
RTSPSRC = "edgewatch_src"
PULL_SLICE_S = 0.2  # a read waits in slices this long, so close() from another thread is noticed soon
# preset -> the decoder part after `rtspsrc ! rtph264depay ! h264parse`; {size} is the decoder-side scaling
DECODERS: dict[str, str] = {
    "cpu": "avdec_h264",
    "vaapi": "vaapih264dec ! vaapipostproc{size}",
    "nvdec": "nvh264dec",
    "jetson": "nvv4l2decoder ! nvvidconv ! video/x-raw,format=BGRx{caps}",
}


class GstOptions(SourceOptions):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)  # errors must not echo the URL

    url: str | None = Field(
        None, repr=False, description="rtsp:// URL for a preset; it may carry user:password@, never logged."
    )
    preset: Preset = Field(
        "cpu", description="Decoder for H.264 over RTSP: cpu (avdec_h264), vaapi, nvdec (nvh264dec), jetson."
    )
    pipeline: str | None = Field(
        None,
        repr=False,
        description="Instead of url and preset: a GStreamer pipeline producing raw video, e.g. 'filesrc "
        "location=a.mp4 ! qtdemux ! h264parse ! avdec_h264'; edgewatch appends the conversion and the appsink.",
    )
    transport: Literal["tcp", "udp"] = Field("tcp", description="RTP transport of a preset's rtspsrc.")
    latency_ms: int = Field(200, ge=0, le=10_000, description="rtspsrc jitter buffer, in milliseconds.")
    decode_size: tuple[int, int] | None = Field(
        None, description="[width, height] the pipeline scales frames to (in the decoder where it can)."
    )
    open_timeout_s: float = Field(10.0, gt=0, le=300, description="Give up when no first frame came in this long.")
    read_timeout_s: float = Field(15.0, gt=0, le=300, description="Give up on one read after this many seconds.")
    stall_timeout_s: float | None = Field(
        10.0, gt=0, description="Reconnect when no frame arrived for this many seconds; unset: never."
    )
    username: str | None = Field(None, repr=False, description="User name, when not given in the URL.")
    password: SecretStr | None = Field(None, description="Password, when not given in the URL; never logged.")

    @field_validator("url")
    @classmethod
    def _check_scheme(cls, url: str | None) -> str | None:
        if url is not None and not url.lower().startswith(("rtsp://", "rtsps://")):
            raise ValueError(f"expected a URL starting with rtsp:// or rtsps://, got {mask_credentials(url)[:60]!r}")
        return url

    @field_validator("decode_size")
    @classmethod
    def _check_size(cls, size: tuple[int, int] | None) -> tuple[int, int] | None:
        if size is not None and (min(size) < 16 or max(size) > 8192):
            raise ValueError(f"expected [width, height] between 16 and 8192 pixels, got {list(size)}")
        return size

    @model_validator(mode="after")
    def _check_one_input(self) -> GstOptions:
        if (self.url is None) == (self.pipeline is None):
            raise ValueError("set exactly one of url (with a preset) or pipeline")
        if self.password is not None and self.username is None:
            raise ValueError("password is set but username is not")
        if self.username is not None and self.url is not None and "@" in urlsplit(self.url).netloc:
            raise ValueError("credentials are given both in the URL and as username/password; keep one")
        return self


def describe_pipeline(options: GstOptions) -> str:
    """The gst-launch description: the preset's or the user's head, then conversion, scaling and the appsink.

    A preset's URL goes in without its userinfo; the credentials are set on rtspsrc as properties."""
    size = options.decode_size
    if options.pipeline is not None:
        head = options.pipeline.strip().rstrip("!").strip()
    else:
        assert options.url is not None
        parts = urlsplit(options.url)
        location = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
        decoder = DECODERS[options.preset].format(
            size=f" width={size[0]} height={size[1]}" if size else "",
            caps=f",width={size[0]},height={size[1]}" if size else "",
        )
        head = (
            f'rtspsrc name={RTSPSRC} location="{location}" protocols={options.transport} latency={options.latency_ms} '
            f"! rtph264depay ! h264parse ! {decoder}"
        )
    caps = "video/x-raw,format=BGR" + (f",width={size[0]},height={size[1]}" if size else "")
    # max-buffers=1 drop=true: a slow reader gets the newest frame, the queue behind it keeps its own policy
    return f"{head} ! videoconvert ! videoscale ! {caps} ! appsink name={APPSINK} max-buffers=1 drop=true sync=false"


def credentials(options: GstOptions) -> tuple[str, str] | None:
    """(user, password) for rtspsrc's user-id and user-pw, from the URL or the fields; None without any."""
    if options.url is not None:
        parts = urlsplit(options.url)
        if parts.username is not None:
            return unquote(parts.username), unquote(parts.password or "")
    if options.username is not None:
        return options.username, options.password.get_secret_value() if options.password is not None else ""
    return None


class _Gi(NamedTuple):
    gst: Any
    video: Any
    glib: Any


@functools.cache
def _gi() -> _Gi:
    """Gst, GstVideo and GLib, Gst initialised once (imported here: other sources never need PyGObject)."""
    try:
        import gi

        gi.require_version("Gst", "1.0")
        gi.require_version("GstVideo", "1.0")
        from gi.repository import GLib, Gst, GstVideo
    except (ImportError, ValueError) as exc:
        raise SourceError(
            f"GStreamer is not available to this Python ({exc}): pip install PyGObject (needs the Debian packages "
            "libgirepository1.0-dev libcairo2-dev) and apt-get install gstreamer1.0-plugins-good gstreamer1.0-libav"
        ) from None
    Gst.init(None)
    return _Gi(Gst, GstVideo, GLib)


class GstSource(Source):
    """One GStreamer pipeline. close() from another thread stops it; a read blocked on it returns within
    PULL_SLICE_S."""

    live: ClassVar[bool] = True
    Options: ClassVar[type[SourceOptions]] = GstOptions

    def __init__(self, options: SourceOptions) -> None:
        super().__init__(options)
        assert isinstance(options, GstOptions)
        self.opts = options
        self._pipeline: Any = None
        self._sink: Any = None
        self._lock = threading.Lock()
        self._closed = False
        self._pending: tuple[Image, float | None] | None = None  # the first frame, pulled by open()

    def describe(self) -> str:
        where = self.opts.url if self.opts.url is not None else self.opts.pipeline or ""
        return f"gstreamer:{self.options.id} {mask_credentials(where)}"

    @property
    def stall_timeout_s(self) -> float | None:
        return self.opts.stall_timeout_s

    def open(self) -> None:
        gst = _gi().gst
        description = describe_pipeline(self.opts)
        log.info("source %s: GStreamer pipeline %s", self.options.id, mask_credentials(description))
        try:
            pipeline = gst.parse_launch(description)
        except _gi().glib.Error as exc:  # a missing element or a syntax error, named by GStreamer
            raise SourceError(f"{self.describe()}: cannot build the pipeline: {mask_credentials(str(exc))}") from None
        self._set_credentials(pipeline)
        with self._lock:
            self._pipeline, self._sink, self._closed = pipeline, pipeline.get_by_name(APPSINK), False
        if pipeline.set_state(gst.State.PLAYING) == gst.StateChangeReturn.FAILURE:
            self._bus_error(pipeline)
            raise SourceError(f"{self.describe()}: the pipeline refused to start")
        first = self._pull(self.opts.open_timeout_s)
        if first is None:
            raise SourceError(f"{self.describe()}: no frame within open_timeout_s={self.opts.open_timeout_s:g}s")
        self._pending = first
        log.info(
            "source %s: streaming %dx%d through GStreamer (%s)",
            self.options.id,
            first[0].shape[1],
            first[0].shape[0],
            self.opts.preset if self.opts.pipeline is None else "own pipeline",
        )

    def _set_credentials(self, pipeline: Any) -> None:
        found = credentials(self.opts)
        if found is None:
            return
        src = pipeline.get_by_name(RTSPSRC)
        if src is None:
            raise SourceError(f"{self.describe()}: username/password need a preset (its rtspsrc), not a pipeline")
        src.set_property("user-id", found[0])
        src.set_property("user-pw", found[1])

    def read(self) -> tuple[Image, float | None] | None:
        with self._lock:
            if self._closed:
                raise SourceClosed(f"{self.describe()} is closed")
            if self._pipeline is None:
                raise SourceError(f"{self.describe()}: read() before open()")
        pending, self._pending = self._pending, None
        if pending is not None:
            return pending
        item = self._pull(self.opts.read_timeout_s)
        if item is None:
            raise SourceError(
                f"{self.describe()}: no frame within read_timeout_s={self.opts.read_timeout_s:g}s or the stream ended"
            )
        return item

    def _pull(self, timeout_s: float) -> tuple[Image, float | None] | None:
        """The next frame within timeout_s; None on a timeout; SourceError on a pipeline error or EOS."""
        gst = _gi().gst
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                if self._closed:
                    raise SourceClosed(f"{self.describe()} is closed")
                sink, pipeline = self._sink, self._pipeline
            sample = sink.emit("try-pull-sample", int(PULL_SLICE_S * gst.SECOND))
            if sample is not None:
                return self._frame(gst, sample)
            self._bus_error(pipeline)
            if sink.get_property("eos"):  # an appsink at its end returns at once: say so, do not spin
                raise SourceError(f"{self.describe()}: the stream ended")
            if time.monotonic() >= deadline:
                return None

    def _frame(self, gst: Any, sample: Any) -> tuple[Image, float | None]:
        info = _gi().video.VideoInfo.new_from_caps(sample.get_caps())
        width, height, stride = info.width, info.height, info.stride[0]
        buffer = sample.get_buffer()
        ok, mapped = buffer.map(gst.MapFlags.READ)
        if not ok:
            raise SourceError(f"{self.describe()}: cannot map a frame's buffer")
        try:
            rows = np.frombuffer(mapped.data, np.uint8, count=stride * height).reshape(height, stride)
            image = rows[:, : width * 3].reshape(height, width, 3).copy()  # rows may be padded to 4 bytes
        finally:
            buffer.unmap(mapped)
        pts = None if buffer.pts == gst.CLOCK_TIME_NONE else buffer.pts / gst.SECOND
        return as_image(image), pts

    def _bus_error(self, pipeline: Any) -> None:
        """Raise SourceError for an error or end-of-stream message waiting on the pipeline's bus."""
        gst = _gi().gst
        message = pipeline.get_bus().pop_filtered(gst.MessageType.ERROR | gst.MessageType.EOS)
        if message is None:
            return
        if message.type == gst.MessageType.EOS:
            raise SourceError(f"{self.describe()}: the stream ended")
        error, _debug = message.parse_error()
        raise SourceError(f"{self.describe()}: GStreamer: {mask_credentials(error.message)}")

    def close(self) -> None:
        with self._lock:
            pipeline, self._closed = self._pipeline, True
            self._pipeline = self._sink = None
            self._pending = None
        if pipeline is not None:
            pipeline.set_state(_gi().gst.State.NULL)  # thread-safe; a pull in progress returns at once
