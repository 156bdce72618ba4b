"""Track events as the daemon publishes them: the JSON payload (README "Track events") and the fan-out Message."""

from __future__ import annotations

from typing import Any

import supervision as sv

from daemon.frames import Frame, Message, Result, iso_utc
from daemon.payload import SCHEMA_VERSION
from pipelines.events import Event

_TIMES = ("first_seen", "last_seen", "best_seen")  # epoch seconds in pipelines/events.py, ISO 8601 UTC here


def event_payload(event: Event, frame: Frame, pipeline: str) -> dict[str, Any]:
    """One event: its source, the frame during which it fired (seq, timestamp) and the pipeline come first."""
    body = {key: value for key, value in event.payload.items() if key != "source"}
    for key in _TIMES:
        if isinstance(body.get(key), int | float):
            body[key] = iso_utc(float(body[key]))
    for key in ("score", "label_agreement"):
        if isinstance(body.get(key), float):
            body[key] = round(body[key], 4)
    return {
        "schema": SCHEMA_VERSION,
        "source_id": event.source,
        "seq": frame.seq,
        "timestamp": iso_utc(frame.t_wall),
        "pipeline": pipeline,
        **body,
    }


def event_message(event: Event, frame: Frame, pipeline: str) -> Message:
    """The fan-out message; its Result carries the best crop's pixels (extra["best_crop"]) for snapshots."""
    result = Result(frame, pipeline, sv.Detections.empty(), extra={"best_crop": event.best_crop})
    return Message("event", event.source, event_payload(event, frame, pipeline), result)
