"""class_names: names when the detector gave them, else class ids, else the caller's placeholder."""

from __future__ import annotations

import numpy as np
import pytest
import supervision as sv

BOX = np.array([[0.0, 0.0, 1.0, 1.0], [1.0, 1.0, 2.0, 2.0]])


@pytest.mark.parametrize(
    ("detections", "missing", "expected"),
    [
        (sv.Detections(xyxy=BOX, class_id=np.array([2, 5]), data={"class_name": np.array(["car", "bus"])}), "",
         ["car", "bus"]),
        (sv.Detections(xyxy=BOX, class_id=np.array([2, 5])), "", ["2", "5"]),
        (sv.Detections(xyxy=BOX), "object", ["object", "object"]),
        (sv.Detections.empty(), "", []),
    ],
)
def test_class_names(detections: sv.Detections, missing: str, expected: list[str]) -> None:
    from pipelines.labels import class_names

    assert class_names(detections, missing=missing).tolist() == expected
