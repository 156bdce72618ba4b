"""Class names of a Detections: the one place that decides between data["class_name"] and class ids."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import supervision as sv


def class_names(detections: sv.Detections, missing: str = "") -> npt.NDArray[np.str_]:
    """data["class_name"] when the detector gave names, else the class ids as strings, else `missing`."""
    names = detections.data.get("class_name")
    if names is not None:
        return np.asarray(names).astype(str)
    if detections.class_id is not None:
        return detections.class_id.astype(int).astype(str)
    return np.full(len(detections), missing, dtype=object).astype(str)
