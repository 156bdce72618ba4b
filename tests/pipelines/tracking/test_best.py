"""A track's best views: the full frame of its best crop, the plate box in it, and the best plate crop."""

from __future__ import annotations

import numpy as np
import supervision as sv

from pipelines.tracking.best import best_child, crop
from pipelines.tracking.events import Event, EventGenerator, EventOptions
from pipelines.tracking.tracker import Tracker

T0 = 1_700_000_000.0


def vehicle(frame: int, plate: tuple[float, float, float, float] | None, plate_score: float) -> sv.Detections:
    """One car growing frame by frame; a `plates` detect stage found `plate` in it (None: it did not run)."""
    side = 60 + 20 * frame
    children = None
    if plate is not None:
        children = sv.Detections(
            xyxy=np.asarray([plate], np.float32),
            confidence=np.asarray([plate_score], np.float32),
            class_id=np.zeros(1, int),
        )
    column = np.empty(1, dtype=object)
    column[0] = children
    dets = sv.Detections(
        xyxy=np.asarray([[50, 50, 50 + side, 50 + side]], np.float32),
        confidence=np.asarray([0.9], np.float32),
        class_id=np.zeros(1, int),
        data={"class_name": np.asarray(["car"], dtype=object), "plates": column},
    )
    dets.metadata["stages"] = {"plates": "detect"}
    return dets


def run(frames: list[tuple[tuple[float, float, float, float] | None, float]], image: np.ndarray | None) -> list[Event]:
    tracker = Tracker()
    generator = EventGenerator(tracker, EventOptions())
    events: list[Event] = []
    for index, (plate, score) in enumerate(frames):
        d = vehicle(index, plate, score)
        tracker.update("cam", d, index, timestamp=index / 30, wall_time=T0 + index)
        events += generator.update("cam", d, image)
    return events + generator.finish("cam")


def test_the_best_view_keeps_the_frame_the_box_and_the_best_plate() -> None:
    image = np.random.default_rng(3).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    frames = [((60, 60, 80, 70), 0.9), ((70, 100, 110, 115), 0.95), (None, 0.0), ((80, 120, 100, 126), 0.5)]
    end = run(frames, image)[-1]
    assert end.views is not None and end.views.image is image  # by reference, never a copy of the frame
    assert end.views.box == (50.0, 50.0, 170.0, 170.0)  # frame 3: the largest view of the car
    assert end.views.plate_box == (80.0, 120.0, 100.0, 126.0)  # the plate found on that frame
    np.testing.assert_array_equal(end.views.plate, image[100:115, 70:110])  # the best plate: frame 1's


def test_a_track_whose_plate_stage_found_nothing_has_no_plate_crop() -> None:
    image = np.zeros((300, 300, 3), np.uint8)
    end = run([(None, 0.0)] * 3, image)[-1]
    assert end.views is not None and end.views.plate is None and end.views.plate_box is None


def test_no_images_no_views() -> None:
    events = run([((60, 60, 80, 70), 0.9)] * 3, None)
    assert events and [e.views for e in events] == [None] * len(events)


def test_best_child_and_crop_helpers() -> None:
    d = vehicle(0, (10, 10, 30, 20), 0.8)
    child = best_child(d, 0)
    assert child is not None and child.box == (10.0, 10.0, 30.0, 20.0)
    image = np.arange(40 * 40 * 3, dtype=np.uint8).reshape(40, 40, 3)
    assert crop(image, (-5, -5, 10, 10)) is not None and crop(image, (50, 50, 60, 60)) is None
