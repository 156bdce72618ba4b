"""What every source shares: the common Options fields and the open/read/close contract."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipelines.preprocess import Image

QueuePolicy = Literal["drop_oldest", "drop_newest", "block"]
Polygon = list[tuple[float, float]]
SkipHook = Callable[[str, str], None]  # (reason, log-safe detail): a frame the source could not deliver

# scheme://userinfo@ -- greedy up to the last "@" of the word: a raw "@" or "/" in a password must not leak
# its tail, and masking an "@" in a path too is the safe side
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^\s'\"]*@")


def mask_credentials(text: str) -> str:
    """Replace the userinfo of every URL in `text` with ***, e.g. rtsp://***@cam:554/stream."""
    return _USERINFO.sub(r"\g<scheme>***@", text)


class QueueOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    size: int = Field(8, ge=1, le=10_000, description="Frames the source's queue holds before its policy applies.")
    policy: QueuePolicy | None = Field(
        None,
        description="What happens when the queue is full: drop_oldest (default for live sources), "
        "drop_newest, or block the capture thread (default for files and folders: nothing lost).",
    )


class ReconnectOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    initial_s: float = Field(1.0, gt=0, description="First wait after a failure, in seconds.")
    max_s: float = Field(30.0, gt=0, description="Longest wait between attempts, in seconds.")
    multiplier: float = Field(2.0, ge=1.0, description="Each failed attempt multiplies the wait by this.")
    jitter: float = Field(0.2, ge=0.0, le=1.0, description="Random +- fraction added to each wait.")
    max_attempts: int | None = Field(
        None, ge=1, description="Give up (state failed) after this many failed attempts; unset: never."
    )


class MotionOptions(BaseModel):
    """A source's `motion:` section (daemon/motion.py); without it every frame goes to the detector."""

    model_config = ConfigDict(extra="forbid")

    width: int = Field(320, ge=32, le=1920, description="The grey frame is scaled down to this width first.")
    threshold: int = Field(
        25, ge=1, le=255, description="Grey-level change (0-255) from the background that counts a pixel as moving."
    )
    min_area: float = Field(
        0.002, gt=0, le=1, description="Smallest moving blob that counts as motion, as a fraction of the frame."
    )
    learning_rate: float = Field(
        0.05, gt=0, le=1, description="How fast the background absorbs a change (running-average weight per frame)."
    )
    keepalive_s: float = Field(
        2.0, gt=0, description="A still stream still sends one frame to the detector this often, in seconds."
    )
    masks: list[Polygon] = Field(
        default_factory=list,
        description="Polygons [[x, y], ...] in source pixels where motion is ignored (clocks, trees, flags).",
    )

    @field_validator("masks")
    @classmethod
    def _check_masks(cls, masks: list[Polygon]) -> list[Polygon]:
        for index, polygon in enumerate(masks):
            if len(polygon) < 3:
                raise ValueError(f"masks[{index}]: a polygon needs at least 3 [x, y] points, got {len(polygon)}")
        return masks


class SourceOptions(BaseModel):
    """Fields every source has; each plug-in's Options subclasses this and adds its own."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(
        ..., pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Unique source id; used in topics and file names."
    )
    type: str = Field(..., description="Source plug-in: file, rtsp, webcam, images, ffmpeg or gstreamer.")
    fps: float | None = Field(None, gt=0, description="Cap on frames per second taken from this source.")
    queue: QueueOptions = Field(default_factory=QueueOptions, description="The source's bounded frame queue.")
    reconnect: ReconnectOptions = Field(
        default_factory=ReconnectOptions, description="Backoff between reconnection attempts."
    )
    required: bool = Field(True, description="Whether /healthz reports unhealthy when this source is down.")
    motion: MotionOptions | None = Field(
        None,
        description="Motion gating: the detector runs on frames with motion, during live tracks and at "
        "keepalive_s otherwise; unset: on every frame.",
    )


class SourceError(RuntimeError):
    """A source could not open or read; the capture loop logs it, counts it and reconnects."""


class SourceClosed(SourceError):
    """read() found the source closed (by a stop or by the stall watchdog) before or while reading."""


class Source(ABC):
    """A stream of BGR frames. Implementations are used from one capture thread only."""

    live: ClassVar[bool] = True  # live sources default to drop_oldest and reconnect; finite ones block and end
    Options: ClassVar[type[SourceOptions]] = SourceOptions

    def __init__(self, options: SourceOptions) -> None:
        self.options = options
        self.on_skip: SkipHook | None = None  # set by the capture, which counts what the source skipped

    @abstractmethod
    def open(self) -> None:
        """Connect or open; raise SourceError with a clear reason (no credentials in it)."""

    @abstractmethod
    def read(self) -> tuple[Image, float | None] | None:
        """Next frame as (BGR image, pts seconds or None); None when a finite source has ended."""

    @abstractmethod
    def close(self) -> None:
        """Release the device, file or connection. Safe to call twice, and from another thread."""

    def describe(self) -> str:
        """A log-safe description of where frames come from (never with credentials)."""
        return f"{self.options.type}:{self.options.id}"

    def stream_info(self) -> dict[str, str | float]:
        """What the opened stream says about itself (codec, fps) where its backend tells; {} where it does not."""
        return {}

    @property
    def stall_timeout_s(self) -> float | None:
        """Longest gap between frames before the capture's watchdog forces a reconnect; None: no watchdog."""
        return None

    @property
    def paced(self) -> bool:
        """Whether read() already runs at the stream's own rate (cameras, realtime files): an fps cap then
        drops frames; otherwise (fast files, folders) the cap paces the reads and nothing is lost."""
        return self.live

    def skipped(self, reason: str, detail: str) -> None:
        """Report a frame the source had to skip (an unreadable image) and carried on without."""
        if self.on_skip is not None:
            self.on_skip(reason, detail)
