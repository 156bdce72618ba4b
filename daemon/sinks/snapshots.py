"""Snapshot sink: writes each track event's best crop as a JPEG file named by source, time, track and type."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from daemon.frames import Message
from daemon.sinks.base import MessageKind, Sink, SinkContext, SinkOptions
from daemon.sinks.jpeg import snapshot_name, write_jpeg

log = logging.getLogger(__name__)

EventType = Literal["new", "update", "end"]


def _events_only() -> list[MessageKind]:
    return ["event"]


def _every_event_type() -> list[EventType]:
    return ["new", "update", "end"]


class SnapshotOptions(SinkOptions):
    kinds: list[MessageKind] = Field(
        default_factory=_events_only, description="Message kinds this sink receives; only events have crops."
    )
    dir: str | None = Field(None, description="Folder for the JPEG files; unset: <state_dir>/snapshots.")
    quality: int = Field(90, ge=1, le=100, description="JPEG quality, 1-100.")
    events: list[EventType] = Field(
        default_factory=_every_event_type, min_length=1, description="Event types that get a file."
    )


class SnapshotSink(Sink):
    """Writes <dir>/<source>_<UTC time>_<track id>_<event type>.jpg per event that carries a best crop."""

    Options: ClassVar[type[SinkOptions]] = SnapshotOptions

    def __init__(self, options: SinkOptions, context: SinkContext) -> None:
        if not isinstance(options, SnapshotOptions):
            raise TypeError(f"SnapshotSink needs SnapshotOptions, got {type(options).__name__}")
        super().__init__(options, context)
        self.opts = options
        self.dir = Path(options.dir) if options.dir else Path(context.state_dir) / "snapshots"
        self.written = 0

    def start(self) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OSError(f"snapshot sink {self.options.id}: cannot create {self.dir}: {exc.strerror or exc}") from exc

    def publish(self, msg: Message) -> None:
        if msg.kind != "event" or msg.payload.get("type") not in self.opts.events or msg.result is None:
            return
        crop = msg.result.extra.get("best_crop")
        if not isinstance(crop, np.ndarray) or crop.size == 0:
            return  # the track's best box lay outside the picture: nothing to save
        path = write_jpeg(self.dir / snapshot_name(msg.payload), crop, self.opts.quality)
        self.written += 1
        log.debug("snapshot sink %s: wrote %s", self.options.id, path)

    def close(self) -> None:
        """Every file is complete when publish returns: nothing to flush."""
