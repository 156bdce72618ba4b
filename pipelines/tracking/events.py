"""Track events: `new`, `update` (consensus changed, zone entered or left), `end`, with zones and filters; and
`alert` at the first read of a known plate whose entry alerts (pipelines/tracking/alerts.py).

Pure: `EventGenerator.update` returns Event objects (a JSON-ready payload plus the best crop's pixels);
publishing them and writing snapshot files is the daemon's job.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import supervision as sv
from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipelines.jsonable import to_jsonable
from pipelines.labels import class_names
from pipelines.models import Image
from pipelines.tracking.alerts import AlertWatch, ConsensusFor, TrackAlerts, event_id
from pipelines.tracking.best import BestViews, Box, Child, best_child, crop, detects_children, quality
from pipelines.tracking.state import Rows, StageTrack, TrackState, track_consensus
from pipelines.tracking.tracker import Tracker

log = logging.getLogger(__name__)

EventType = Literal["new", "update", "end", "alert"]
_POSITIONS = {p.name for p in sv.Position}


class ZoneOptions(BaseModel):
    """A named polygon in source-image pixels."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., min_length=1, description="Zone name reported in events.")
    polygon: list[tuple[float, float]] = Field(
        ..., min_length=3, description="Corner points [[x, y], ...] in source-image pixels."
    )
    anchors: list[str] = Field(
        default_factory=lambda: ["BOTTOM_CENTER"],
        min_length=1,
        description="Box points that must all lie inside: " + ", ".join(sorted(_POSITIONS)) + ".",
    )

    @field_validator("anchors")
    @classmethod
    def _known_anchor(cls, value: list[str]) -> list[str]:
        bad = [a for a in value if a.upper() not in _POSITIONS]
        if bad:
            raise ValueError(f"unknown anchor {bad}; expected one of {sorted(_POSITIONS)}")
        return [a.upper() for a in value]

    def build(self) -> sv.PolygonZone:
        polygon = np.rint(np.asarray(self.polygon, dtype=np.float64)).astype(np.int64)
        if (polygon < 0).any():
            raise ValueError(f"zone {self.name!r}: polygon has negative coordinates {polygon.min(axis=0)}")
        return sv.PolygonZone(polygon, triggering_anchors=[sv.Position[a] for a in self.anchors])


class FilterOptions(BaseModel):
    """Which detections count: class names and minimum box size."""

    model_config = ConfigDict(extra="forbid")

    classes: list[str] | None = Field(
        default=None, description="Class names (or class ids as text) that count; null counts every class."
    )
    min_box_wh: tuple[float, float] = Field(default=(0.0, 0.0), description="Minimum box width and height in pixels.")
    min_area: float = Field(default=0.0, ge=0.0, description="Minimum box area in square pixels.")

    def mask(self, detections: sv.Detections) -> Rows:
        """Rows that pass the class and size filters."""
        xyxy = detections.xyxy.reshape(-1, 4)
        w, h = xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]
        keep = (w >= self.min_box_wh[0]) & (h >= self.min_box_wh[1]) & (w * h >= self.min_area)
        if self.classes is not None:
            allowed = set(self.classes)
            names = class_names(detections, missing="object").tolist()
            ids = detections.class_id if detections.class_id is not None else [None] * len(detections)
            keep &= np.array([n in allowed or str(c) in allowed for n, c in zip(names, ids, strict=True)], bool)
        return np.asarray(keep, dtype=bool)


class EventOptions(BaseModel):
    """When tracks produce events, and which zones each source has."""

    model_config = ConfigDict(extra="forbid")

    zones: dict[str, list[ZoneOptions]] = Field(default_factory=dict, description="Zones by source id.")
    filters: FilterOptions = Field(default_factory=FilterOptions, description="Detections that can start events.")
    required_zones: list[str] = Field(
        default_factory=list, description="When set, a track gets its `new` event only once inside one of these."
    )
    min_frames: int = Field(default=1, ge=1, description="Frames a track must be seen before its `new` event.")
    zone_frames: int = Field(
        default=2, ge=1, description="Frames in a row inside (or outside) before a zone counts as entered (or left)."
    )
    plate_wait_s: float = Field(
        default=0.0,
        ge=0.0,
        description="Seconds a track's `new` event may wait for its OCR text to settle, so that it carries the "
        "plate (and a box around a part of a plate, which never settles, often ends before it is announced); "
        "0: `new` as soon as min_frames are seen.",
    )
    label_min_frames: int = Field(
        default=5, ge=1, description="Frames a track's class vote needs before a change of label is an `update`."
    )
    label_min_agreement: float = Field(
        default=0.6, ge=0.0, le=1.0,
        description="Vote share a new label needs before its change is an `update` (a label that flips between "
        "car and truck from frame to frame changes nothing).",
    )


@dataclass
class Event:
    """One track event (or alert): `payload` is JSON-ready; `best_crop` is the best crop's BGR pixels (or None), `views`
    the full frame and plate for snapshots (None when the generator got no images)."""

    type: EventType
    source: str
    track_id: int
    payload: dict[str, Any]
    best_crop: Image | None = None
    views: BestViews | None = None


@dataclass
class _Best:
    quality: float = -1.0
    score: float = 0.0
    box: list[float] = field(default_factory=list)
    frame: int = -1
    seen: float = 0.0
    crop: Image | None = None
    image: Image | None = None  # the full frame of `crop`, by reference
    plate_box: Box | None = None  # the plate in `image`
    plate_quality: float = -1.0
    plate: Image | None = None  # the best plate crop on any frame
    nested: bool = False  # a detect stage looks for children (plates) in this track's box

    def views(self, reads_text: bool) -> BestViews | None:
        if self.image is None or len(self.box) != 4:
            return None
        x1, y1, x2, y2 = self.box
        # a track that reads text in its own box (a plate detector's box) is its own plate
        own = reads_text and not self.nested
        plate = self.plate if self.plate is not None else (self.crop if own else None)
        return BestViews(self.image, (x1, y1, x2, y2), self.plate_box, plate)


@dataclass
class _EventTrack:
    eligible: bool = False
    announced: bool = False
    zones: set[str] = field(default_factory=set)
    streak: dict[str, int] = field(default_factory=dict)
    entered_zones: list[str] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)
    sent: dict[str, Any] = field(default_factory=dict)
    best: _Best = field(default_factory=_Best)
    alerts: TrackAlerts = field(default_factory=TrackAlerts)


def _read_text(stage: StageTrack) -> bool:
    """The stage is an OCR stage and read some text."""
    return stage.kind == "text" and stage.votes is not None and len(stage.votes) > 0


def _settled(consensus: Any) -> bool:
    return isinstance(consensus, Mapping) and bool(consensus.get("settled"))


def _known(track: TrackState) -> dict[str, str] | None:
    """{name, list} of the known entry the first settled text vote of the track matched (events carry it beside
    `label`, so a subscriber needs no nested lookup); None: no settled text matched a known entry."""
    for consensus in track_consensus(track).values():
        if _settled(consensus) and consensus.get("known"):
            return {"name": consensus["known"]["name"], "list": consensus["known"]["list"]}
    return None


def settled_value(consensus: Any) -> Any:
    """What counts as a meaningful change of a stage result: the settled text or class, else None."""
    if isinstance(consensus, Mapping) and consensus.get("settled"):
        known = consensus.get("known")
        return consensus.get("text", consensus.get("class")), known["name"] if known else None
    return None


class EventGenerator:
    """Turns tracks into new -> update* -> end events, per source.

    Call `update` once after every Tracker.update of a source (it also turns the tracks that update
    ended into `end` events), and `finish` when the source's stream ends.
    """

    def __init__(
        self, tracker: Tracker, options: EventOptions | None = None, consensus_for: ConsensusFor | None = None
    ) -> None:
        """consensus_for: each stage's consensus options, whose known lists say which reads alert; None: no alerts."""
        self.tracker = tracker
        self.options = options or EventOptions()
        self._zones = {source: [(z.name, z.build()) for z in zones] for source, zones in self.options.zones.items()}
        self._state: dict[tuple[str, int], _EventTrack] = {}
        self._watch = AlertWatch(consensus_for)
        self._orphans: dict[str, list[dict[str, Any]]] = {}  # per source: alerts of tracks folded into others
        self.counts: dict[str, int] = {"new": 0, "update": 0, "end": 0, "alert": 0}

    def update(self, source: str, detections: sv.Detections, image: Image | None = None) -> list[Event]:
        """Events for one frame, after Tracker.update (and the stages) ran on these detections.

        image: the frame, to keep the best crop's pixels for snapshots; None keeps only its box and score.
        """
        inside = {name: zone.trigger(detections) for name, zone in self._zones.get(source, [])}
        passes = self.options.filters.mask(detections)
        frame = self.tracker.frame_index(source)
        nested = detects_children(detections)
        events = [self._alert(payload, None) for payload in self._orphans.pop(source, [])]
        for row, track in self.tracker.rows(source, detections):
            if track is None:
                continue
            state = self._state.setdefault((source, track.track_id), _EventTrack())
            self._update_best(state.best, track, frame, image, best_child(detections, row))
            state.best.nested = state.best.nested or nested
            self._update_zones(state, {name: bool(hits[row]) for name, hits in inside.items()})
            state.eligible = state.eligible or bool(passes[row])
            if state.eligible:  # the class and size filters apply to alerts too; zones do not
                events += [self._alert(p, state.best.crop) for p in self._watch.update(state.alerts, track)]
            event = self._decide(state, track)
            if event is not None:
                events.append(event)
        for track in self.tracker.ended(source):
            events.extend(self._end(track))
        return events

    def announced(self, source: str, track_id: int) -> bool:
        """Whether the track has had its `new` event."""
        state = self._state.get((source, track_id))
        return state is not None and state.announced

    def forget(self, source: str, track_id: int) -> None:
        """Drop what is kept about a track that was folded into another one before it was announced (its raised
        alerts end with the source's next frame: the track that took it in alerts under its own event id)."""
        state = self._state.pop((source, track_id), None)
        if state is not None:
            self._orphans.setdefault(source, []).extend(state.alerts.end())

    def finish(self, source: str) -> list[Event]:
        """End every track of a source (stream over): their `end` events."""
        events: list[Event] = []
        for track in self.tracker.finish(source):
            events.extend(self._end(track))
        return events

    def _end(self, track: TrackState) -> list[Event]:
        state = self._state.pop((track.source, track.track_id), None)
        if state is None:
            return []
        alerts = [self._alert({**p, "last_seen": track.last_seen}, None) for p in state.alerts.end()]
        return alerts + self._end_events(state, track)

    def _end_events(self, state: _EventTrack, track: TrackState) -> list[Event]:
        if state.announced:
            return [self._event("end", state, track, ["end"])]
        # held for its plate until it ended: a vehicle whose plate was never found still gets its events; one
        # that read text that never settled was a part of a plate (a box of its own) and ends unannounced
        if self._ready(state, track) and not any(_read_text(st) for st in track.stages.values()):
            state.announced = True
            new = self._event("new", state, track, ["new", *state.changes])
            return [new, self._event("end", state, track, ["end"])]
        return []

    def _ready(self, state: _EventTrack, track: TrackState) -> bool:
        """Eligible, seen min_frames, and inside a required zone if there are any."""
        required = self.options.required_zones
        ready = state.eligible and track.frames >= self.options.min_frames
        return ready and not (required and not set(required) & set(state.entered_zones))

    def _update_best(
        self, best: _Best, track: TrackState, frame: int, image: Image | None, child: Child | None
    ) -> None:
        if image is not None and child is not None and child.quality > best.plate_quality:
            best.plate_quality, best.plate = child.quality, crop(image, child.box)
        # Confident and large wins: a sharp close-up beats a confident speck.
        score = quality(track.confidence, track.area)
        if score <= best.quality:
            return
        best.quality, best.score, best.frame, best.seen = score, track.confidence, frame, track.last_seen
        best.box = [round(float(v), 1) for v in track.xyxy]
        if image is not None:
            best.crop = crop(image, [float(v) for v in track.xyxy])
            best.image, best.plate_box = image, child.box if child is not None else None

    def _update_zones(self, state: _EventTrack, now_inside: dict[str, bool]) -> None:
        for name, inside in now_inside.items():
            if inside == (name in state.zones):
                state.streak[name] = 0
                continue
            state.streak[name] = state.streak.get(name, 0) + 1
            if state.streak[name] < self.options.zone_frames:
                continue
            state.streak[name] = 0
            if inside:
                state.zones.add(name)
                state.changes.append(f"zone_entered:{name}")
                if name not in state.entered_zones:
                    state.entered_zones.append(name)
            else:
                state.zones.discard(name)
                state.changes.append(f"zone_left:{name}")

    def _decide(self, state: _EventTrack, track: TrackState) -> Event | None:
        values = {name: settled_value(c) for name, c in track_consensus(track).items()}
        values["label"] = self._label(track, state)
        for name, value in values.items():
            if state.announced and value != state.sent.get(name):
                state.changes.append("label" if name == "label" else f"consensus:{name}")
        if not state.announced:
            if not self._ready(state, track):
                return None
            if self.tracker.awaits_relink(track) or self._awaits_plate(track):
                return None  # may be a lost track found again, or its plate is not read yet: wait for it
            state.announced = True
            state.sent = values
            return self._event("new", state, track, ["new", *state.changes])
        if not state.changes:
            return None
        state.sent = values
        return self._event("update", state, track, state.changes)

    def _awaits_plate(self, track: TrackState) -> bool:
        """The track reads text that has not settled, and is younger than plate_wait_s."""
        if track.last_clock - track.first_clock >= self.options.plate_wait_s:
            return False
        return any(st.kind == "text" and not _settled(st.consensus) for st in track.stages.values())

    def _label(self, track: TrackState, state: _EventTrack) -> Any:
        """The label to compare with the one sent: the vote's winner, but after `new` only once the vote settled
        on it (min frames and share), so that a label flipping between classes sends nothing."""
        label = track.label()
        if label is None:
            return None
        o = self.options
        settled = label["reads"] >= o.label_min_frames and label["agreement"] >= o.label_min_agreement
        return label["class"] if settled or not state.announced else state.sent.get("label")

    def _alert(self, payload: dict[str, Any], crop: Image | None) -> Event:
        self.counts["alert"] += 1
        log.debug("source %s track %d: alert %s %s", payload["source"], payload["track_id"], payload["state"],
                  payload["known"]["name"])
        return Event("alert", payload["source"], payload["track_id"], payload, crop)

    def _event(self, kind: EventType, state: _EventTrack, track: TrackState, changes: list[str]) -> Event:
        label = track.label()
        best = state.best
        payload = {
            "event_id": event_id(track),
            "type": kind,
            "source": track.source,
            "track_id": track.track_id,
            "label": label["class"] if label else None,
            "label_agreement": label["agreement"] if label else None,
            "known": _known(track),
            "score": best.score,
            "box": best.box,
            "best_frame": best.frame,
            "best_seen": best.seen,
            "last_box": [round(float(v), 1) for v in track.xyxy],
            "first_seen": track.first_seen,
            "last_seen": track.last_seen,
            "frames": track.frames,
            "zones": sorted(state.zones),
            "entered_zones": list(state.entered_zones),
            "changes": list(changes),
            # label and text consensus only: embeddings and nested detections do not belong in an event
            "stages": {name: to_jsonable(c) for name, c in track_consensus(track).items() if isinstance(c, Mapping)},
        }
        state.changes = []
        self.counts[kind] += 1
        log.debug("source %s track %d: %s %s", track.source, track.track_id, kind, changes)
        reads_text = any(st.kind == "text" for st in track.stages.values())
        return Event(kind, track.source, track.track_id, payload, best.crop, best.views(reads_text))
