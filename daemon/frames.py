"""The value types that travel between stages: Frame (capture -> worker) and Result (worker -> sinks), and the run id.

The run id makes (run, source_id, seq) unique forever: seq counts from 0 whenever a source's capture starts
(a daemon start, or a reload that restarts it), so every such start also gets a new run id (begin_run()).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone

import supervision as sv

from pipelines.preprocess import Image


def new_run_id() -> str:
    """Sortable by start time and unique: UTC start second plus 32 random bits, e.g. 20261204T150532Z-9f3a61c2."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(4)


_run = new_run_id()  # one daemon per process: the process's start is the run's start


def current_run() -> str:
    return _run


def begin_run() -> str:
    """A new run id, for when a source's seq starts again at 0 while the process keeps running (a reload)."""
    global _run
    _run = new_run_id()
    return _run


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded picture from one source, stamped when it was captured."""

    source_id: str
    seq: int  # per-source counter starting at 0, never reused within a run
    image: Image  # HxWx3 uint8 BGR
    t_wall: float  # epoch seconds at capture (for the published timestamp)
    t_mono: float  # time.monotonic() at capture (for ages and latencies)
    pts: float | None = None  # stream presentation time in seconds, when the source knows it
    motion: str | None = None  # daemon/motion.py: "moving", "still" or "keepalive"; None: the source is not gated
    # the run this frame's seq counts in, fixed at capture: frames in flight across a reload keep theirs
    run: str = field(default_factory=current_run, kw_only=True)

    @property
    def resolution_wh(self) -> tuple[int, int]:
        return int(self.image.shape[1]), int(self.image.shape[0])

    def age(self, now: float | None = None) -> float:
        return (time.monotonic() if now is None else now) - self.t_mono


def iso_utc(t_wall: float) -> str:
    """ISO 8601 UTC with milliseconds and a Z suffix, the format every payload uses."""
    return datetime.fromtimestamp(t_wall, tz=timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z"
    )


@dataclass(slots=True)
class Result:
    """What the worker produced for one frame; sinks turn it into their own format."""

    frame: Frame
    pipeline: str
    detections: sv.Detections
    timings_ms: dict[str, float] = field(default_factory=dict)
    extra: dict[str, object] = field(default_factory=dict)  # e.g. "best_crop": an event's crop (snapshots)
    stage_errors: dict[str, str] = field(default_factory=dict)  # stage path -> why it has no results here


@dataclass(frozen=True, slots=True)
class Message:
    """A unit of work for a sink: a topic kind, the source it concerns and a JSON-ready payload.

    kind is one of: "result" (per-frame detections), "status" (source state, retained),
    "event" (track events), "alert" (known plates), "stats" (periodic counters, retained); those carry "run" in
    their payload, added here so that no producer can leave it out (the frame's run when there is a frame, else
    the current one).
    """

    kind: str
    source_id: str | None
    payload: Mapping[str, object]
    result: Result | None = None  # the full Result for sinks that need pixels (snapshots, video)

    def __post_init__(self) -> None:
        if self.kind in RUN_KINDS and "run" not in self.payload:
            run = self.result.frame.run if self.result is not None else current_run()
            schema = {"schema": self.payload["schema"]} if "schema" in self.payload else {}
            object.__setattr__(self, "payload", {**schema, "run": run, **self.payload})  # frozen: set once, here


RUN_KINDS = frozenset({"result", "status", "event", "alert", "stats"})  # README "Payload schema"; not control messages
