"""Alerts as published: an "alert" message with ISO times and, when the web UI serves event files, the snapshot URL."""

from __future__ import annotations

import numpy as np
import pytest

from daemon.frames import Frame
from daemon.payload import EventLinks, event_message
from pipelines.tracking.events import Event

ALERT = {
    "alert_id": "gate-7-1700000000000/plate/deny/stolen", "event_id": "gate-7-1700000000000", "type": "alert",
    "state": "raised", "source": "gate", "track_id": 7, "label": "car", "stage": "plate", "plate": "XY34ZQW",
    "confidence": 0.93, "known": {"name": "stolen", "list": "deny", "plate": "XY34ZQW", "distance": 0},
    "settled": False, "first_seen": 1_700_000_000.0, "last_seen": 1_700_000_001.25, "box": [1.0, 2.0, 30.0, 40.0],
}


@pytest.mark.parametrize(
    ("files", "url"), [(False, None), (True, "/api/events/gate-7-1700000000000/snapshot.jpg")]
)
def test_alert_message(files: bool, url: str | None) -> None:
    crop = np.full((10, 20, 3), 7, np.uint8)
    frame = Frame("gate", 15, np.zeros((48, 64, 3), np.uint8), 1_700_000_001.25, 5.0)
    msg = event_message(Event("alert", "gate", 7, dict(ALERT), crop), frame, "plates", EventLinks(files=files))
    assert (msg.kind, msg.source_id) == ("alert", "gate")
    payload = dict(msg.payload)
    assert {"schema", "run", "source_id", "seq", "timestamp", "pipeline"} <= set(payload) and "source" not in payload
    assert payload["first_seen"] == "2023-11-14T22:13:20.000Z" and payload["last_seen"] == payload["timestamp"]
    assert payload["snapshot_url"] == url
    assert {k: payload[k] for k in ("plate", "known", "confidence", "event_id")} == {
        k: ALERT[k] for k in ("plate", "known", "confidence", "event_id")
    }
    assert msg.result is not None and msg.result.extra["best_crop"] is crop


@pytest.mark.parametrize(
    ("kind", "links", "urls"),
    [
        ("new", EventLinks(), set()),
        ("new", EventLinks(files=True, clip=True), {"snapshot_url", "crop_url", "plate_url"}),
        ("end", EventLinks(files=True), {"snapshot_url", "crop_url", "plate_url"}),
        ("end", EventLinks(files=True, clip=True), {"snapshot_url", "crop_url", "plate_url", "clip_url"}),
    ],
)
def test_event_messages_say_where_their_files_are_served(kind: str, links: EventLinks, urls: set[str]) -> None:
    frame = Frame("gate", 15, np.zeros((48, 64, 3), np.uint8), 1_700_000_001.25, 5.0)
    msg = event_message(Event(kind, "gate", 7, {**ALERT, "type": kind}, None), frame, "plates", links)  # type: ignore[arg-type]
    payload = dict(msg.payload)
    assert msg.kind == "event" and {k for k in payload if k.endswith("_url")} == urls
    for key in urls:
        kind_name = key.removesuffix("_url")
        assert payload[key] == f"/api/events/gate-7-1700000000000/{kind_name}.{'mp4' if kind_name == 'clip' else 'jpg'}"
