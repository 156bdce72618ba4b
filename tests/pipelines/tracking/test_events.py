"""Track events: new -> update* -> end, zones entered and left, filters, best crop, JSON payloads."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest
import supervision as sv
from pydantic import ValidationError

from pipelines.tracking.events import Event, EventGenerator, EventOptions, FilterOptions, ZoneOptions
from pipelines.tracking.schedule import ScheduleOptions, Scheduler
from pipelines.tracking.tracker import Tracker

T0 = 1_700_000_000.0
GATE = ZoneOptions(name="gate", polygon=[(205, 0), (405, 0), (405, 400), (205, 400)])
Scene = Callable[[int], Sequence[tuple[list[float], str, float]]]  # frame -> [(xyxy, class, confidence)]


def car_at(x: float, y: float = 100.0, w: float = 100.0, h: float = 50.0) -> list[float]:
    return [x, y, x + w, y + h]


def detections(objects: Sequence[tuple[list[float], str, float]]) -> sv.Detections:
    n = len(objects)
    return sv.Detections(
        xyxy=np.asarray([o[0] for o in objects], np.float32).reshape(-1, 4),
        confidence=np.asarray([o[2] for o in objects], np.float32),
        class_id=np.zeros(n, int),
        data={"class_name": np.asarray([o[1] for o in objects], dtype=object)},
    )


def run(
    scene: Scene,
    frames: int,
    options: EventOptions | None = None,
    image: np.ndarray | None = None,
    stage: Callable[[int], Any] | None = None,
) -> list[Event]:
    """Tracker (+ an optional scheduled stage) + events over a scripted scene; finish at the end."""
    tracker = Tracker()
    scheduler = Scheduler(tracker, ScheduleOptions(reinfer_interval=1))
    generator = EventGenerator(tracker, options or EventOptions(zones={"cam": [GATE]}))
    events: list[Event] = []
    for frame in range(frames):
        d = detections(scene(frame))
        tracker.update("cam", d, frame, timestamp=frame / 30, wall_time=T0 + frame)
        if stage is not None:
            mask = scheduler.select("cam", d, "plate")
            scheduler.update("cam", d, "plate", [stage(frame) if m else None for m in mask])
        events += generator.update("cam", d, image)
    return events + generator.finish("cam")


def summary(events: Sequence[Event]) -> list[tuple[str, int, list[str]]]:
    return [(e.type, round(e.payload["last_seen"] - T0), e.payload["changes"]) for e in events]


def test_new_zone_entered_left_end() -> None:
    events = run(lambda f: [(car_at(10 * f), "car", 0.9)], 60)  # bottom centre x = 10 f + 50
    assert summary(events) == [
        ("new", 1, ["new"]),
        ("update", 17, ["zone_entered:gate"]),  # inside from frame 16 (x=210), counted after 2 frames
        ("update", 37, ["zone_left:gate"]),  # outside from frame 36 (x=410)
        ("end", 59, ["end"]),
    ]
    assert events[1].payload["zones"] == ["gate"] and events[2].payload["zones"] == []
    assert events[3].payload["entered_zones"] == ["gate"]


@pytest.mark.parametrize(("zone_frames", "zone_events"), [(1, 6), (2, 0)])
def test_zone_hysteresis(zone_frames: int, zone_events: int) -> None:
    xs = [100, 100, 160, 150, 160, 150, 160, 150, 100, 100]  # the bottom centre jitters across x = 205
    events = run(
        lambda f: [(car_at(xs[f]), "car", 0.9)], len(xs), EventOptions(zones={"cam": [GATE]}, zone_frames=zone_frames)
    )
    changes = [c for e in events for c in e.payload["changes"] if c.startswith("zone_")]
    assert len(changes) == zone_events


def test_lost_track_ends_without_finish() -> None:
    events = run(lambda f: [(car_at(10 * f), "car", 0.9)] if f < 10 else [], 60)
    assert summary(events)[-1] == ("end", 9, ["end"])
    assert [e.type for e in events].count("end") == 1


@pytest.mark.parametrize(
    ("options", "scene", "new_at"),
    [
        (FilterOptions(classes=["car"]), lambda f: [(car_at(5 * f), "person", 0.9)], None),
        (FilterOptions(classes=["car", "bus"]), lambda f: [(car_at(5 * f), "bus", 0.9)], 1),
        (FilterOptions(classes=["0"]), lambda f: [(car_at(5 * f), "bus", 0.9)], 1),  # class ids as text
        (FilterOptions(min_box_wh=(120, 40)), lambda f: [(car_at(5 * f), "car", 0.9)], None),
        (FilterOptions(min_area=6000), lambda f: [(car_at(5 * f, w=100 + 5 * f), "car", 0.9)], 4),  # grows
    ],
)
def test_filters_decide_which_tracks_make_events(options: FilterOptions, scene: Scene, new_at: int | None) -> None:
    events = run(scene, 10, EventOptions(filters=options))
    if new_at is None:
        assert events == []
    else:
        assert summary(events)[0] == ("new", new_at, ["new"]) and events[-1].type == "end"


def test_required_zone_and_min_frames() -> None:
    events = run(
        lambda f: [(car_at(10 * f), "car", 0.9)], 30, EventOptions(zones={"cam": [GATE]}, required_zones=["gate"])
    )
    assert summary(events)[0] == ("new", 17, ["new", "zone_entered:gate"])
    events = run(lambda f: [(car_at(10 * f), "car", 0.9)], 30, EventOptions(min_frames=5))
    assert summary(events)[0] == ("new", 5, ["new"])


def test_updates_only_on_meaningful_change() -> None:
    texts = ["AB12CDE"] * 12 + ["XY34ZQW"] * 30  # reads change: the consensus flips once outvoted

    def plate(frame: int) -> dict[str, Any]:
        return {"text": texts[frame], "confidence": 0.9, "char_confidences": [0.9] * 7}

    events = run(lambda f: [(car_at(500, 300), "car", 0.9)], 40, EventOptions(), stage=plate)
    assert [(kind, changes) for kind, _, changes in summary(events)] == [
        ("new", ["new"]),
        ("update", ["consensus:plate"]),  # settled: AB12CDE
        ("update", ["consensus:plate"]),  # unsettled again once enough XY34ZQW reads arrive
        ("update", ["consensus:plate"]),  # settled: XY34ZQW
        ("end", ["end"]),
    ]
    plates = [e.payload["stages"]["plate"] for e in events[1:4]]
    assert [(p["text"], p["settled"]) for p in plates] == [("AB12CDE", True), ("AB12CDE", False), ("XY34ZQW", True)]
    assert events[-1].payload["stages"]["plate"]["settled"] is True


def test_best_crop_is_the_largest_confident_view() -> None:
    image = np.random.default_rng(1).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    sizes = [(60, 0.9), (80, 0.5), (120, 0.8), (100, 0.95), (70, 0.99)]  # quality = confidence * side
    events = run(
        lambda f: [(car_at(50 + f, 60, *(sizes[f][0],) * 2), "car", sizes[f][1])], len(sizes), EventOptions(), image
    )
    end = events[-1].payload
    assert end["box"] == [52.0, 60.0, 172.0, 180.0] and end["score"] == pytest.approx(0.8) and end["best_frame"] == 2
    np.testing.assert_array_equal(events[-1].best_crop, image[60:180, 52:172])
    assert end["last_box"] == [54.0, 60.0, 124.0, 130.0]


def test_best_crop_is_clipped_to_the_image() -> None:
    image = np.zeros((100, 100, 3), np.uint8)
    events = run(lambda f: [(car_at(-20 + f, 80, 60, 60), "car", 0.9)], 3, EventOptions(), image)
    assert events[-1].best_crop is not None and events[-1].best_crop.shape == (
        20,
        41,
        3,
    )  # frame 1's view: x -19..41, y 80..140


def test_payload_is_json_and_complete() -> None:
    events = run(
        lambda f: [(car_at(10 * f), "car", 0.9), (car_at(10 * f, 300), "bus", 0.8)],
        25,
        stage=lambda f: {"text": "AB12CDE", "confidence": np.float32(0.9), "char_confidences": [0.9] * 7},
    )
    for event in events:
        payload = json.loads(json.dumps(event.payload))
        assert payload["type"] == event.type and payload["source"] == "cam"
        assert payload["event_id"] == f"cam-{event.track_id}-{round(payload['first_seen'] * 1000)}"
        assert set(payload) >= {
            "label",
            "label_agreement",
            "score",
            "box",
            "first_seen",
            "last_seen",
            "frames",
            "zones",
            "entered_zones",
            "changes",
            "stages",
        }
    labels = {e.payload["track_id"]: e.payload["label"] for e in events}
    assert sorted(labels.values()) == ["bus", "car"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "z", "polygon": [(0, 0), (1, 1)]}, "at least 3 items"),
        ({"name": "z", "polygon": [(0, 0), (10, 0), (0, 10)], "anchors": ["MIDDLE"]}, "unknown anchor"),
        ({"name": "", "polygon": [(0, 0), (10, 0), (0, 10)]}, "at least 1 character"),
    ],
)
def test_zone_options_validation(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ZoneOptions(**fields)


def test_zone_with_negative_points_names_the_zone() -> None:
    with pytest.raises(ValueError, match="zone 'left': polygon has negative coordinates"):
        EventGenerator(
            Tracker(), EventOptions(zones={"cam": [ZoneOptions(name="left", polygon=[(-5, 0), (10, 0), (0, 10)])]})
        )


def test_zone_anchors_all_must_be_inside() -> None:
    zone = ZoneOptions(name="z", polygon=[(0, 0), (100, 0), (100, 100), (0, 100)], anchors=["top_left", "center"])
    d = detections([(car_at(10, 10, 50, 50), "car", 0.9), (car_at(80, 10, 50, 50), "car", 0.9)])
    assert zone.build().trigger(d).tolist() == [True, False]
