"""What every source shares: the common Options fields and the open/read/close contract."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

QueuePolicy = Literal["drop_oldest", "drop_newest", "block"]


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


class SourceOptions(BaseModel):
    """Fields every source has; each plug-in's Options subclasses this and adds its own."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(
        ..., pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Unique source id; used in topics and file names."
    )
    type: str = Field(..., description="Source plug-in: file, rtsp, webcam, images or ffmpeg.")
    fps: float | None = Field(None, gt=0, description="Cap on frames per second taken from this source.")
    queue: QueueOptions = Field(default_factory=QueueOptions, description="The source's bounded frame queue.")
    reconnect: ReconnectOptions = Field(
        default_factory=ReconnectOptions, description="Backoff between reconnection attempts."
    )
    required: bool = Field(True, description="Whether /healthz reports unhealthy when this source is down.")


class SourceError(RuntimeError):
    """A source could not open or read; the capture loop logs it, counts it and reconnects."""


class Source(ABC):
    """A stream of BGR frames. Implementations are used from one capture thread only."""

    live: ClassVar[bool] = True  # live sources default to drop_oldest and reconnect; finite ones block and end
    Options: ClassVar[type[SourceOptions]] = SourceOptions

    def __init__(self, options: SourceOptions) -> None:
        self.options = options

    @abstractmethod
    def open(self) -> None:
        """Connect or open; raise SourceError with a clear reason (no credentials in it)."""

    @abstractmethod
    def read(self) -> tuple[np.ndarray, float | None] | None:
        """Next frame as (BGR image, pts seconds or None); None when a finite source has ended."""

    @abstractmethod
    def close(self) -> None:
        """Release the device, file or connection. Safe to call twice, and from another thread."""

    def describe(self) -> str:
        """A log-safe description of where frames come from (never with credentials)."""
        return f"{self.options.type}:{self.options.id}"
