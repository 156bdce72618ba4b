"""Events sink (type: events): every track event into the event store (<state_dir>/events.db), its snapshots
(annotated full frame, object crop, plate crop) and, with clips on, an MP4 clip of it; retention by age and size.

Files live under <dir>/<camera>/<event_id>/ (dir: <state_dir>/events unless set); /api/events serves them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from daemon.frames import Message
from daemon.history.rows import epoch
from daemon.history.store import EventStore
from daemon.service.stats import SinkStats
from daemon.sinks.base import MessageKind, Sink, SinkContext, SinkOptions
from daemon.sinks.clips import ClipOptions, ClipRecorder
from daemon.sinks.event_views import event_folder, write_views
from daemon.sinks.jpeg import SnapshotError
from pipelines.tracking.best import BestViews

log = logging.getLogger(__name__)

EVENTS_DB = "events.db"  # under state_dir: the web routes and pages open the same file


def _events_and_status() -> list[MessageKind]:
    return ["event", "status"]


class RetentionOptions(BaseModel):
    """How long events and their files are kept; the oldest go first."""

    model_config = ConfigDict(extra="forbid")

    max_age_days: float | None = Field(14.0, gt=0, description="Events last seen longer ago are deleted; null: kept.")
    max_bytes: int | None = Field(
        2 * 1024**3, ge=0, description="Snapshots and clips together; the oldest events go first. null: no bound."
    )
    interval_s: float = Field(60.0, gt=0, description="Seconds between retention passes.")


class EventsOptions(SinkOptions):
    kinds: list[MessageKind] = Field(
        default_factory=_events_and_status,
        description="Message kinds this sink receives; with clips on, `result` is added (the frames).",
    )
    queue_size: int = Field(
        64, ge=1, description="Messages buffered for this sink (results carry frames: keep it small)."
    )
    dir: str | None = Field(None, description="Folder for snapshots and clips; unset: <state_dir>/events.")
    quality: int = Field(90, ge=1, le=100, description="JPEG quality of the snapshots.")
    snapshots: bool = Field(True, description="Write snapshot.jpg (boxes drawn), crop.jpg and plate.jpg.")
    retention: RetentionOptions = Field(default_factory=RetentionOptions, description="What is kept, how long.")
    clips: ClipOptions = Field(default_factory=ClipOptions, description="MP4 clips of events.")

    @model_validator(mode="after")
    def _clips_need_frames(self) -> EventsOptions:
        if self.clips.enabled and "result" not in self.kinds:
            if "kinds" in self.model_fields_set:
                raise ValueError("clips.enabled needs the `result` kind in kinds: clips are made of its frames")
            self.kinds = [*self.kinds, "result"]
        return self


@dataclass
class EventCounters:
    recorded: int = 0
    snapshots: int = 0
    snapshot_errors: int = 0
    pruned_events: int = 0
    pruned_files: int = 0
    pruned_bytes: int = 0


class EventsSink(Sink):
    """Records events, writes their snapshots and clips. publish() runs on this sink's fan-out thread only."""

    Options: ClassVar[type[SinkOptions]] = EventsOptions

    def __init__(self, options: SinkOptions, context: SinkContext) -> None:
        if not isinstance(options, EventsOptions):
            raise TypeError(f"EventsSink needs EventsOptions, got {type(options).__name__}")
        super().__init__(options, context)
        self.opts = options
        self.root = Path(options.dir) if options.dir else Path(context.state_dir) / "events"
        self.db_path = Path(context.state_dir) / EVENTS_DB
        self.counters = EventCounters()
        self.clips = ClipRecorder(options.clips, self._clip_done) if options.clips.enabled else None
        self._store: EventStore | None = None
        self._stats: SinkStats | None = None
        self._next_housekeeping = 0.0

    @property
    def store(self) -> EventStore:
        if self._store is None:
            raise RuntimeError(f"events sink {self.options.id}: not started")
        return self._store

    def attach_stats(self, stats: SinkStats) -> None:
        self._stats = stats

    def start(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OSError(f"events sink {self.options.id}: cannot create {self.root}: {exc.strerror or exc}") from exc
        self._store = EventStore(self.db_path)
        self._housekeeping()

    def publish(self, msg: Message) -> None:
        if msg.kind == "result" and self.clips is not None and msg.result is not None:
            self.clips.frame(msg.result.frame)
        elif msg.kind == "event":
            self._event(msg)
        elif (
            msg.kind == "status"
            and self.clips is not None
            and msg.source_id is not None
            and (msg.payload.get("state") in ("ended", "failed"))
        ):
            self.clips.source_ended(msg.source_id)
        if time.monotonic() >= self._next_housekeeping:
            self._housekeeping()

    def _event(self, msg: Message) -> None:
        payload = msg.payload
        camera, event_id = str(payload.get("source_id")), str(payload.get("event_id"))
        folder = event_folder(self.root, camera, event_id)
        files = None
        if self.opts.snapshots and msg.result is not None:
            views = msg.result.extra.get("views")
            best = views if isinstance(views, BestViews) else None
            try:
                files = write_views(folder, payload, best, msg.result.extra.get("best_crop"), self.opts.quality)
                self.counters.snapshots += len(files.items())
            except SnapshotError as exc:  # a full disk loses the pictures, never the event
                self.counters.snapshot_errors += 1
                log.warning("events sink %s: event %s recorded without snapshots: %s", self.options.id, event_id, exc)
        self.store.record(payload, files)
        self.counters.recorded += 1
        if payload.get("type") == "end" and self.clips is not None:
            first, last = payload.get("first_seen"), payload.get("last_seen")
            if isinstance(first, str) and isinstance(last, str):
                self.clips.schedule(event_id, camera, epoch(first), epoch(last), folder / "clip.mp4")

    def _clip_done(self, event_id: str, path: Path) -> None:
        # on a clip writer thread: the store is thread-safe
        self.store.attach(event_id, "clip", path)

    def flush(self) -> None:
        """Called periodically: cut clips of cameras whose frames stopped, and run retention when due."""
        if self.clips is not None:
            self.clips.tick()
        if self._store is not None and time.monotonic() >= self._next_housekeeping:
            self._housekeeping()

    def _housekeeping(self) -> None:
        """Retention, then the counters into the store (GET /api/events/status) and the sink's stats."""
        retention = self.opts.retention
        self._next_housekeeping = time.monotonic() + retention.interval_s
        max_age = retention.max_age_days * 86400 if retention.max_age_days is not None else None
        report = self.store.prune(max_age, retention.max_bytes)
        self.counters.pruned_events += report.rows
        self.counters.pruned_files += report.files
        self.counters.pruned_bytes += report.bytes
        self.store.put_status(self.options.id, self.status())
        if self._stats is not None and self.clips is not None and self.clips.counters.disk_full:
            self._stats.last_error = "clips paused: disk full (below clips.min_free_bytes or ENOSPC)"

    def status(self) -> dict[str, Any]:
        """The sink's counters: events recorded, snapshots, retention, and clips (with the buffer's bytes)."""
        out: dict[str, Any] = {**asdict(self.counters), "stored_bytes": self.store.total_bytes()}
        if self.clips is not None:
            out["clips"] = {**self.clips.snapshot(), "buffered_bytes": self.clips.buffered_bytes}
        return out

    def close(self) -> None:
        """Cut the clips still due with what is buffered, wait for the writers, store the final counters."""
        if self.clips is not None:
            self.clips.close()
        if self._store is not None:
            self._housekeeping()
            self._store.close()
