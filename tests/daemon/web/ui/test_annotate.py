"""Labels and drawings of the live view: class, track id, plate text and known-list badge, on a copy."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
import supervision as sv

from daemon.frames import Frame, Result
from daemon.web.ui.annotate import draw, label

PLATE = {"text": "AB12CDE", "agreement": 0.9}


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({"class": "car"}, "car"),
        ({"class": "car", "tracker_id": 4}, "car #4"),
        ({"class": "car", "tracker_id": 4, "stages": {"plates.consensus": PLATE}}, "car #4 AB12CDE"),
        (
            {
                "class": "car",
                "stages": {"plates.consensus": {**PLATE, "known": {"name": "depot van", "list": "allow"}}},
            },
            "car AB12CDE [depot van]",
        ),
        (
            {"class": "van", "stages": {"plates.consensus": {**PLATE, "known": {"name": "stolen", "list": "deny"}}}},
            "van AB12CDE [DENY stolen]",
        ),
        (
            {"class": "car", "stages": {"plates": [{"class": "single", "stages": {"text": {"text": "XY34ZQW"}}}]}},
            "car XY34ZQW",
        ),  # a child's reading when the parent has none of its own
        ({"class": "car", "stages": {"plates.consensus": {"text": ""}}}, "car"),
    ],
)
def test_label(record: dict[str, Any], expected: str) -> None:
    assert label(record) == expected


def test_draw_scales_and_never_touches_the_frame() -> None:
    image = np.full((400, 800, 3), 90, np.uint8)
    before = image.copy()
    plates = np.empty(1, dtype=object)  # filled by hand: numpy would unpack a Detections given in a list
    plates[0] = sv.Detections(xyxy=np.array([[150, 200, 250, 230]], np.float32))
    detections = sv.Detections(
        xyxy=np.array([[100, 100, 400, 300]], np.float32),
        confidence=np.array([0.8]),
        class_id=np.array([2]),
        tracker_id=np.array([3]),
        data={"class_name": np.array(["car"]), "plates": plates},
        metadata={"stages": {"plates": "detect"}},
    )
    drawn = draw(Result(Frame("cam", 0, image, time.time(), time.monotonic()), "p", detections), max_width=400)
    assert drawn.shape == (200, 400, 3)
    assert np.array_equal(image, before)
    assert (drawn != 90).any(axis=2).sum() > 500  # boxes and a label were drawn
    assert (drawn[100:116, 75:125] != 90).any()  # the plate's box, scaled by one half
