"""One track per vehicle: duplicate boxes of a class group, labels as votes, a track found again by its plate."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest
import supervision as sv

from pipelines.tracking.consensus import ConsensusOptions, PlateFormat
from pipelines.tracking.events import Event, EventOptions
from pipelines.tracking.identity import duplicate_rows
from pipelines.tracking.layer import Tracking, TrackingOptions
from pipelines.tracking.schedule import ScheduleOptions
from pipelines.tracking.tracker import UNTRACKED, Tracker, TrackerOptions

T0 = 1_700_000_000.0
FPS = 15.0
UK = PlateFormat(name="uk", pattern=r"[A-Z]{2}[0-9]{2}[A-Z]{3}")
Obj = tuple[list[float], str, float]  # (xyxy, class, confidence)


def dets(objects: Sequence[Obj]) -> sv.Detections:
    n = len(objects)
    return sv.Detections(
        xyxy=np.asarray([o[0] for o in objects], np.float32).reshape(-1, 4),
        confidence=np.asarray([o[2] for o in objects], np.float32),
        class_id=np.zeros(n, int),
        data={"class_name": np.asarray([o[1] for o in objects], dtype=object)},
    )


def box(x: float, y: float = 100.0, w: float = 150.0, h: float = 40.0) -> list[float]:
    return [x, y, x + w, y + h]


@pytest.mark.parametrize(
    ("objects", "keep", "owner"),
    [
        pytest.param([(box(0), "car", 0.9), (box(2), "truck", 0.8)], [True, False], [-1, 0], id="car and truck"),
        pytest.param([(box(2), "truck", 0.6), (box(0), "car", 0.9)], [False, True], [1, -1], id="the confident one"),
        pytest.param([(box(0), "car", 0.9), (box(2), "person", 0.8)], [True, True], [-1, -1], id="other group"),
        pytest.param([(box(0), "car", 0.9), (box(60), "bus", 0.8)], [True, True], [-1, -1], id="little overlap"),
        pytest.param(
            [(box(0), "car", 0.9), (box(1), "bus", 0.7), (box(2), "truck", 0.5)], [True, False, False], [-1, 0, 0],
            id="three labels of one vehicle",
        ),
    ],
)
def test_duplicate_rows_of_a_class_group(objects: list[Obj], keep: list[bool], owner: list[int]) -> None:
    found = duplicate_rows(dets(objects), [["car", "truck", "bus"]], 0.7)
    assert found.keep.tolist() == keep and found.owner.tolist() == owner


def test_a_vehicle_reported_as_car_and_truck_is_one_track_whose_label_is_voted() -> None:
    tracker = Tracker()
    for frame in range(6):
        objects = [(box(10 * frame), "car", 0.9), (box(10 * frame + 2), "truck", 0.6)]
        tracked = tracker.update("cam", dets(objects), frame, timestamp=frame / FPS)
        assert len(tracked) == 1  # the duplicate box is not tracked (nor published)
    (track,) = tracker.tracks("cam").values()
    label = track.label()
    assert label is not None and label["class"] == "car" and label["agreement"] == pytest.approx(0.6)
    assert {t["class"] for t in label["top"]} == {"car", "truck"}  # the truck reads voted too


def test_without_duplicates_the_input_itself_is_tracked() -> None:
    d = dets([(box(0), "car", 0.9), (box(300), "truck", 0.8)])
    assert Tracker().update("cam", d, 0) is d


def test_class_groups_can_be_switched_off() -> None:
    tracker = Tracker(TrackerOptions(class_groups=[]))
    tracked = tracker.update("cam", dets([(box(0), "car", 0.9), (box(2), "truck", 0.8)]), 0)
    assert len(tracked) == 2


Scene = Callable[[int], Sequence[tuple[Obj, str]]]  # frame -> [(object, what its crop reads)]


def play(scene: Scene, frames: int, tracker: dict[str, Any] | None = None,
         events: dict[str, Any] | None = None) -> tuple[list[Event], list[list[int]]]:
    """Tracking with an OCR stage that reads what the scene says; events and each frame's tracker ids."""
    tracking = Tracking(TrackingOptions(
        tracker=TrackerOptions(frame_rate=FPS, **(tracker or {})),
        schedule=ScheduleOptions(consensus=ConsensusOptions(formats=[UK], settle_requires_format=True)),
        events=EventOptions(**(events or {})),
    ))
    out: list[Event] = []
    ids: list[list[int]] = []
    for frame in range(frames):
        objects = scene(frame)
        d = dets([o for o, _text in objects])
        d = tracking.track("cam", d, frame, timestamp=frame / FPS, wall_time=T0 + frame / FPS)
        mask = tracking.select("cam", d, "plate")
        reads = [{"text": text, "confidence": 0.95} if m else None for m, (_o, text) in zip(mask, objects, strict=True)]
        tracking.update("cam", d, "plate", reads)
        out += tracking.events("cam", d)
        ids.append([int(t) for t in (d.tracker_id if d.tracker_id is not None else [])])
    return out + tracking.finish("cam"), ids


def streams(events: Sequence[Event]) -> dict[str, list[str]]:
    by_id: dict[str, list[str]] = {}
    for event in events:
        by_id.setdefault(event.payload["event_id"], []).append(event.type)
    return by_id


def behind_post(frame: int) -> list[tuple[Obj, str]]:
    """A car passing behind a post for 10 frames: the detector loses it, ByteTrack starts a new id after."""
    x = 8.0 * frame if frame < 20 else 8.0 * frame + 300  # it comes out further on than ByteTrack predicts
    return [] if 20 <= frame < 30 else [((box(x), "plate", 0.9), "AB12CDE")]


def test_a_plate_found_again_continues_its_track() -> None:
    events, ids = play(behind_post, 50)
    assert list(streams(events).values()) == [["new", "update", "end"]]  # one event stream, not two
    assert ids[-1] == [events[0].track_id]  # once its plate settled, the new box carries the old track's id
    assert events[-1].payload["stages"]["plate"]["text"] == "AB12CDE" and events[-1].payload["frames"] == 38


def test_without_relinking_the_plate_is_published_twice() -> None:
    events, _ids = play(behind_post, 50, tracker={"relink_seconds": 0})
    assert list(streams(events).values()) == [["new", "update", "end"], ["new", "update", "end"]]


def test_a_lost_track_waits_relink_seconds_before_it_ends() -> None:
    gone = [((box(0), "plate", 0.9), "AB12CDE")]
    events, _ids = play(lambda f: gone if f < 10 else [], 100, tracker={"relink_seconds": 3.0})
    end = [e for e in events if e.type == "end"]
    assert len(end) == 1 and end[0].payload["last_seen"] == pytest.approx(T0 + 9 / FPS)
    # ended by the tracker at 3 s after it was last seen (frame 9 + 45), not by finish()
    assert [e.type for e in events] == ["new", "update", "end"]


def test_another_plate_is_another_vehicle() -> None:
    def scene(frame: int) -> list[tuple[Obj, str]]:
        x = 8.0 * frame if frame < 20 else 8.0 * frame + 300
        return [] if 20 <= frame < 30 else [((box(x), "plate", 0.9), "AB12CDE" if frame < 20 else "XY34ZQW")]

    events, _ids = play(scene, 50)
    texts = [e.payload["stages"]["plate"]["text"] for e in events if e.type == "end"]
    assert sorted(texts) == ["AB12CDE", "XY34ZQW"] and len(streams(events)) == 2


def test_a_part_of_the_plate_beside_it_is_folded_in() -> None:
    """A text detector splits the plate into two boxes for a while: the second box reads a part of the plate."""
    def scene(frame: int) -> list[tuple[Obj, str]]:
        whole = ((box(5.0 * frame), "text", 0.9), "AB12CDE")
        part = ((box(5.0 * frame + 160, w=60), "text", 0.8), "CDE")
        return [whole, part] if 10 <= frame < 25 else [whole]

    events, ids = play(scene, 40)
    assert list(streams(events).values()) == [["new", "update", "end"]]
    assert all(len([i for i in frame if i != UNTRACKED]) == 1 for frame in ids[2:])  # one tracked box per frame


def label_scene(labels: str) -> Scene:
    names = {"c": "car", "t": "truck", "b": "bus"}
    return lambda f: [((box(4.0 * f), names[labels[f]], 0.8), "")]


@pytest.mark.parametrize(
    ("labels", "label_updates", "final"),
    [
        pytest.param("cctctctctctctctccccc", 0, "car", id="car and truck flip-flopping: no events"),
        pytest.param("ccccttttttttttttttttt", 1, "truck", id="a settled change of label: one update"),
        pytest.param("ccccctbtbtbcccccccccc", 0, "car", id="three labels never settle on another one"),
    ],
)
def test_label_updates_only_after_the_vote_settles(labels: str, label_updates: int, final: str) -> None:
    events, _ids = play(label_scene(labels), len(labels))
    changes = [c for e in events if e.type == "update" for c in e.payload["changes"]]
    assert changes.count("label") == label_updates and events[-1].payload["label"] == final
