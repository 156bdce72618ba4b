"""suggest_family: the detector family whose decoder fits a model's output shapes."""

from __future__ import annotations

import pytest

from pipelines.detect.hint import suggest_family


@pytest.mark.parametrize(
    ("input_hw", "outputs", "starts"),
    [
        ((640, 640), [[1, 25200, 15]], "yolov5 with num_keypoints: 4 (2 classes"),
        ((320, 320), [[1, 6300, 15]], "yolov5 with num_keypoints: 4"),
        ((640, 640), [[1, 25200, 85]], "yolov5 (80 classes"),
        ((416, 416), [[1, 3549, 85]], "yolox (80 classes"),
        ((640, 640), [[1, 84, 8400]], "ultralytics (80 classes"),
        ((640, 640), [[1, 300, 6]], "ultralytics (end-to-end"),
        ((320, 320), [[1, 1600, 80], [1, 400, 80], [1, 100, 80], [1, 1600, 32], [1, 400, 32], [1, 100, 32]],
         "nanodet"),
    ],
)
def test_known_layouts(input_hw: tuple[int, int], outputs: list[list[int]], starts: str) -> None:
    hint = suggest_family(input_hw, outputs)
    assert hint is not None and hint.startswith(starts), hint


def test_unknown_layouts_give_no_hint() -> None:
    assert suggest_family((224, 224), [[1, 1000]]) is None
    assert suggest_family((640, 640), [[1, 1234, 7]]) is None
    assert suggest_family((640, 640), [[1, "n", 85]]) is None
