"""The event store's value types: EventFiles (what was written for an event), EventRow (one stored event), and
the facts a row keeps that are read out of an event payload (daemon/payload.py)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

FileKind = Literal["snapshot", "crop", "plate", "clip"]
FILE_KINDS: tuple[FileKind, ...] = ("snapshot", "crop", "plate", "clip")
FILE_NAMES: dict[FileKind, str] = {
    "snapshot": "snapshot.jpg",
    "crop": "crop.jpg",
    "plate": "plate.jpg",
    "clip": "clip.mp4",
}


@dataclass(frozen=True)
class EventFiles:
    """Files written for one event; None: not written (yet)."""

    snapshot: Path | None = None
    crop: Path | None = None
    plate: Path | None = None
    clip: Path | None = None

    def items(self) -> list[tuple[FileKind, Path]]:
        found = {"snapshot": self.snapshot, "crop": self.crop, "plate": self.plate, "clip": self.clip}
        return [(kind, path) for kind in FILE_KINDS if (path := found[kind]) is not None]


@dataclass(frozen=True)
class EventRow:
    """One track's event as stored: the facts of its latest payload and the paths of its files."""

    event_id: str
    camera: str
    label: str | None
    track_id: int | None
    plate: str | None
    agreement: float | None
    known_name: str | None
    known_list: str | None
    zones: tuple[str, ...]
    start: str  # UTC ISO 8601 (first_seen)
    end: str | None  # set by the `end` event
    start_ts: float
    end_ts: float | None
    last_type: str
    payload: dict[str, Any] = field(repr=False)
    files: EventFiles = field(default_factory=EventFiles)

    def url(self, kind: FileKind) -> str:
        return f"/api/events/{self.event_id}/{FILE_NAMES[kind]}"

    def to_json(self) -> dict[str, Any]:
        """The API's shape: the row's facts, URLs of the files that exist, and the latest payload."""
        return {
            "event_id": self.event_id,
            "camera": self.camera,
            "label": self.label,
            "track_id": self.track_id,
            "plate": self.plate,
            "agreement": self.agreement,
            "known": {"name": self.known_name, "list": self.known_list} if self.known_name else None,
            "zones": list(self.zones),
            "start": self.start,
            "end": self.end,
            "start_ts": self.start_ts,
            "end_ts": self.end_ts,
            "type": self.last_type,
            "ended": self.end is not None,
            "urls": {kind: self.url(kind) for kind, _ in self.files.items()},
            "payload": self.payload,
        }


@dataclass(frozen=True)
class Facts:
    """What a row keeps from one event payload (the columns that can be filtered or shown without the JSON)."""

    event_id: str
    camera: str
    label: str | None
    track_id: int | None
    plate: str | None
    agreement: float | None
    known_name: str | None
    known_list: str | None
    zones: tuple[str, ...]
    start: str
    start_ts: float
    type: str


class PayloadError(ValueError):
    """An event payload without the fields a row needs; the message names the field."""


def epoch(iso: str) -> float:
    """2026-11-22T10:02:13.417Z -> epoch seconds."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def facts(payload: Mapping[str, object]) -> Facts:
    """The row's columns from an event payload; PayloadError names a missing or malformed field."""
    event_id, camera, start = (_text(payload, key) for key in ("event_id", "source_id", "first_seen"))
    try:
        start_ts = epoch(start)
    except ValueError as exc:
        raise PayloadError(f"event {event_id}: first_seen {start!r} is not an ISO 8601 time") from exc
    plate, agreement, known = _plate(payload.get("stages"))
    label = payload.get("label")
    track = payload.get("track_id")
    zones = payload.get("entered_zones") or payload.get("zones") or []
    return Facts(
        event_id=event_id,
        camera=camera,
        label=str(label) if label is not None else None,
        track_id=int(track) if isinstance(track, int) else None,
        plate=plate,
        agreement=agreement,
        known_name=_opt_str(known, "name"),
        known_list=_opt_str(known, "list"),
        zones=tuple(str(z) for z in zones) if isinstance(zones, list) else (),
        start=start,
        start_ts=start_ts,
        type=_text(payload, "type"),
    )


def _text(payload: Mapping[str, object], key: str) -> str:
    value = payload.get(key)
    if not isinstance(value, str) or not value:
        raise PayloadError(f"event payload field {key!r}: expected a non-empty string, got {value!r}")
    return value


def _opt_str(mapping: Mapping[str, object] | None, key: str) -> str | None:
    value = mapping.get(key) if mapping is not None else None
    return str(value) if value is not None else None


def _plate(stages: object) -> tuple[str | None, float | None, Mapping[str, object] | None]:
    """The first stage consensus with a text: (text, agreement, known-list match or None)."""
    if not isinstance(stages, Mapping):
        return None, None, None
    for consensus in stages.values():
        if isinstance(consensus, Mapping) and isinstance(consensus.get("text"), str):
            agreement = consensus.get("agreement")
            known = consensus.get("known")
            return (
                str(consensus["text"]),
                float(agreement) if isinstance(agreement, int | float) else None,
                known if isinstance(known, Mapping) else None,
            )
    return None, None, None


def dumps(payload: Mapping[str, object]) -> str:
    return json.dumps(payload, separators=(",", ":"), default=str)
