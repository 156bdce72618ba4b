"""Track events as published: ISO times, the frame that fired them, the pipeline, and the snapshot crop."""

from __future__ import annotations

import numpy as np

from daemon.frames import Frame
from daemon.payload import event_message, event_payload
from pipelines.tracking.events import Event

PAYLOAD = {
    "event_id": "gate-7-1700000000000", "type": "update", "source": "gate", "track_id": 7, "label": "car",
    "label_agreement": 0.9, "score": 0.8, "box": [1.0, 2.0, 30.0, 40.0], "best_frame": 12,
    "best_seen": 1_700_000_000.5, "last_box": [2.0, 2.0, 31.0, 40.0], "first_seen": 1_700_000_000.0,
    "last_seen": 1_700_000_001.25, "frames": 15, "zones": [], "entered_zones": [], "changes": ["consensus:plate"],
    "stages": {"plate": {"text": "AB12CDE", "agreement": 1.0, "settled": True}},
}


def frame(seq: int = 15) -> Frame:
    return Frame("gate", seq, np.zeros((48, 64, 3), np.uint8), 1_700_000_001.25, 5.0)


def test_event_payload_names_source_frame_and_pipeline_with_iso_times() -> None:
    payload = event_payload(Event("update", "gate", 7, dict(PAYLOAD)), frame(), "plates")
    assert list(payload)[:5] == ["schema", "source_id", "seq", "timestamp", "pipeline"]
    assert (payload["source_id"], payload["seq"], payload["pipeline"]) == ("gate", 15, "plates")
    assert payload["timestamp"] == payload["last_seen"] == "2023-11-14T22:13:21.250Z"
    assert payload["first_seen"] == "2023-11-14T22:13:20.000Z" and payload["best_seen"] == "2023-11-14T22:13:20.500Z"
    assert "source" not in payload and payload["stages"] == PAYLOAD["stages"] and payload["best_frame"] == 12


def test_event_message_carries_the_best_crop_for_snapshots() -> None:
    crop = np.full((10, 20, 3), 7, np.uint8)
    msg = event_message(Event("end", "gate", 7, {**PAYLOAD, "type": "end"}, crop), frame(), "plates")
    assert (msg.kind, msg.source_id, msg.payload["type"]) == ("event", "gate", "end")
    assert msg.result is not None and msg.result.extra["best_crop"] is crop and msg.result.frame.seq == 15
