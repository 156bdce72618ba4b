"""The published JSON: a Result and its (nested) detections, and track events, as plain, stable, documented dicts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import supervision as sv

from daemon.frames import Frame, Message, Result, iso_utc
from pipelines.jsonable import to_jsonable
from pipelines.tracking.events import Event

SCHEMA_VERSION = 1


def result_payload(result: Result) -> dict[str, Any]:
    """One message per frame; README "Payload schema" documents every field."""
    frame = result.frame
    width, height = frame.resolution_wh
    payload: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "source_id": frame.source_id,
        "seq": frame.seq,
        "timestamp": iso_utc(frame.t_wall),
        "pipeline": result.pipeline,
        "width": width,
        "height": height,
        "detections": detection_records(result.detections),
    }
    if frame.pts is not None:
        payload["pts"] = round(frame.pts, 3)
    if result.timings_ms:
        payload["latency_ms"] = {k: round(v, 2) for k, v in result.timings_ms.items()}
    if result.stage_errors:
        payload["stage_errors"] = dict(result.stage_errors)
    if frame.motion is not None:  # daemon/motion.py: a gated frame was not inferred (no detections looked for)
        payload["motion"] = frame.motion
        payload["inferred"] = result.extra.get("inferred", True)
    return payload


def detection_records(detections: sv.Detections) -> list[dict[str, Any]]:
    """Each detection with its box, class and confidence, then its second-stage results."""
    n = len(detections)
    if n == 0:
        return []
    xyxy = np.round(detections.xyxy.astype(float), 1).tolist()
    confidence = detections.confidence.tolist() if detections.confidence is not None else [None] * n
    class_id = detections.class_id.tolist() if detections.class_id is not None else [None] * n
    names = detections.data.get("class_name")
    trackers = detections.tracker_id.tolist() if detections.tracker_id is not None else None
    stages: dict[str, str] = dict(detections.metadata.get("stages", {}))
    records = []
    for i in range(n):
        record: dict[str, Any] = {
            "bbox": xyxy[i],
            "class": str(names[i]) if names is not None else str(class_id[i]),
            "class_id": _opt_int(class_id[i]),
            "confidence": _opt_round(confidence[i]),
        }
        if trackers is not None:
            record["tracker_id"] = int(trackers[i])
        _add_geometry(record, detections, i)
        _add_stages(record, detections, stages, i)
        records.append(record)
    return records


def _opt_int(value: int | None) -> int | None:
    return None if value is None else int(value)


def _opt_round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)


def _add_geometry(record: dict[str, Any], detections: sv.Detections, i: int) -> None:
    for key in ("keypoints", "polygon"):
        value = detections.data.get(key)
        if value is not None and value[i] is not None:
            record[key] = np.round(np.asarray(value[i], dtype=float), 1).tolist()


def _add_stages(record: dict[str, Any], detections: sv.Detections, stages: dict[str, str], i: int) -> None:
    """Second-stage results under "stages" by name, plus Roboflow-style shortcuts for the first of each kind."""
    out: dict[str, Any] = {}
    for name, kind in stages.items():
        value = detections.data[name][i]
        if value is None:
            continue
        if kind == "detect":
            out[name] = detection_records(value)
        elif kind == "embed":
            out[name] = _embed_entry(detections, name, value, i)
            if "match" in out[name] and record.get("match") is None:  # the first match found, else null
                record["match"] = out[name]["match"]
        else:
            out[name] = to_jsonable(value, ndigits=4)
        if kind == "classify":
            record.setdefault("classification", out[name])
        elif kind == "ocr":
            record.setdefault("text", out[name].get("text"))
            record.setdefault("text_confidence", out[name].get("confidence"))
    if out:
        record["stages"] = out


def _embed_entry(detections: sv.Detections, name: str, value: object, i: int) -> dict[str, Any]:
    """An embed stage's gallery match (dict or None) and, only when its stage asks, the raw vector.

    pipelines/stages.py describes each embed stage in metadata["embed"]; without that the vector stays out.
    """
    info = detections.metadata.get("embed", {}).get(name, {})
    entry: dict[str, Any] = {}
    if info.get("publish_embedding"):
        entry["embedding"] = np.round(np.asarray(value, dtype=float), 5).tolist()
    key = info.get("match")
    if key is not None and key in detections.data:
        entry["match"] = to_jsonable(detections.data[key][i], ndigits=4)
    return entry


_TIMES = ("first_seen", "last_seen", "best_seen")  # epoch seconds in pipelines/tracking/events.py, ISO 8601 UTC here


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


@dataclass(frozen=True)
class EventLinks:
    """Which of a track's files the http: server serves (/api/events/<id>/...): snapshots when an events sink
    stores them and http: is on, the clip when that sink also makes clips."""

    files: bool = False
    clip: bool = False


def event_message(event: Event, frame: Frame, pipeline: str, links: EventLinks = EventLinks()) -> Message:
    """The fan-out message; its Result carries the best crop's pixels (extra["best_crop"]) for snapshots, and the
    best full frame and plate (extra["views"]: pipelines/tracking/best.py) for the events sink. An alert is an
    "alert" message. With `links`, the payload says where its snapshots (and, at `end`, its clip) are served."""
    extra: dict[str, object] = {"best_crop": event.best_crop, "views": event.views}
    result = Result(frame, pipeline, sv.Detections.empty(), extra=extra)
    payload = event_payload(event, frame, pipeline)
    if event.type == "alert":
        return Message("alert", event.source, alert_payload(payload, links.files), result)
    return Message("event", event.source, {**payload, **event_urls(payload, links)}, result)


def event_urls(payload: dict[str, Any], links: EventLinks) -> dict[str, str]:
    """snapshot_url, crop_url, plate_url (the events sink writes them as the event arrives) and, in the `end`
    event, clip_url (the clip is cut once the track ended plus post_capture): README "Event history"."""
    if not links.files:
        return {}
    base = f"/api/events/{payload['event_id']}"
    urls = {f"{kind}_url": f"{base}/{kind}.jpg" for kind in ("snapshot", "crop", "plate")}
    if links.clip and payload.get("type") == "end":
        urls["clip_url"] = f"{base}/clip.mp4"
    return urls


def alert_payload(payload: dict[str, Any], snapshot_urls: bool) -> dict[str, Any]:
    """An alert (README "Alerts"): the event fields of pipelines/tracking/alerts.py, then its track's snapshot URL
    (served from the event store, once the track's event is stored) or null."""
    url = f"/api/events/{payload['event_id']}/snapshot.jpg" if snapshot_urls else None
    return {**payload, "snapshot_url": url}
