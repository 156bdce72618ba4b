"""Crops: padding, aspect, corner ordering, perspective rectification, mapping back to source pixels, batching."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest
import supervision as sv

from daemon.bench.scenes import place_plate, plate_corners, render_plate
from pipelines.crops import (
    Crop,
    CropOptions,
    batches,
    crop_box,
    crop_detection,
    detections_to_source,
    large_enough,
    order_corners,
    rectify,
    translation,
)

TL_TR_BR_BL = np.array([[10, 20], [110, 25], [108, 60], [12, 55]], dtype=np.float32)


def gradient_image(w: int = 200, h: int = 120) -> np.ndarray:
    xs, ys = np.meshgrid(np.arange(w), np.arange(h))
    return np.dstack([xs % 256, ys % 256, (xs + ys) % 256]).astype(np.uint8)


@pytest.mark.parametrize("perm", list(itertools.permutations(range(4))))
def test_order_corners_any_input_order(perm: tuple[int, ...]) -> None:
    np.testing.assert_array_equal(order_corners(TL_TR_BR_BL[list(perm)]), TL_TR_BR_BL)


@pytest.mark.parametrize("angle", [-30.0, -10.0, 0.0, 7.0, 25.0, 40.0])
def test_order_corners_rotated_plates(angle: float) -> None:
    quad = plate_corners((300, 200), (160, 46), angle, 0.1)
    shuffled = quad[[2, 0, 3, 1]]
    np.testing.assert_allclose(order_corners(shuffled), quad)


@pytest.mark.parametrize(
    ("options", "expected_xyxy"),
    [
        (CropOptions(), (50, 40, 90, 60)),
        (CropOptions(padding=0.25), (40, 35, 100, 65)),
        (CropOptions(padding_px=3), (47, 37, 93, 63)),
        (CropOptions(padding=0.25, padding_px=2), (38, 33, 102, 67)),
        (CropOptions(aspect="square_expand"), (50, 30, 90, 70)),
    ],
)
def test_crop_box_padding_and_transform(options: CropOptions, expected_xyxy: tuple[int, ...]) -> None:
    image = gradient_image()
    crop, transform = crop_box(image, np.array([50, 40, 90, 60], dtype=np.float32), options)
    x1, y1, x2, y2 = expected_xyxy
    assert crop.shape[:2] == (y2 - y1, x2 - x1)
    np.testing.assert_array_equal(crop, image[y1:y2, x1:x2])
    np.testing.assert_allclose(transform, translation(x1, y1))


def test_crop_box_outside_picture_is_filled_and_keeps_offset() -> None:
    image = gradient_image()
    crop, transform = crop_box(image, np.array([-10, -5, 30, 20]), CropOptions(pad_value=7))
    assert crop.shape[:2] == (25, 40)
    assert (crop[:5] == 7).all() and (crop[:, :10] == 7).all()
    np.testing.assert_array_equal(crop[5:, 10:], image[0:20, 0:30])
    located = Crop(crop, 0, 0, transform).to_source(np.array([[10.0, 5.0]]))
    np.testing.assert_allclose(located, [[0.0, 0.0]])


def test_square_pad_centres_the_crop_and_maps_back() -> None:
    image = gradient_image()
    crop, transform = crop_box(image, np.array([50, 40, 90, 60]), CropOptions(aspect="square_pad", pad_value=0))
    assert crop.shape[:2] == (40, 40)
    np.testing.assert_array_equal(crop[10:30], image[40:60, 50:90])
    assert (crop[:10] == 0).all() and (crop[30:] == 0).all()
    np.testing.assert_allclose(Crop(crop, 0, 0, transform).to_source(np.array([0.0, 10.0])), [50.0, 40.0])


def test_rectify_recovers_a_warped_plate() -> None:
    plate = render_plate("AB123CD", (160, 46))
    scene = np.full((300, 400, 3), 90, dtype=np.uint8)
    quad = plate_corners((200, 150), (160, 46), 8.0, 0.1)
    place_plate(scene, plate, quad)
    crop, transform = rectify(scene, quad[[3, 1, 0, 2]], CropOptions())
    assert abs(crop.shape[1] - 160) <= 2 and abs(crop.shape[0] - 46) <= 2
    back = cv2.resize(crop, (160, 46))
    inner = (slice(6, 40), slice(6, 154))  # edges blend with the background
    score = cv2.matchTemplate(back[inner], plate[inner], cv2.TM_CCOEFF_NORMED).max()
    assert score > 0.9
    mapped = Crop(crop, 0, 0, transform).to_source(np.array([[0, 0], [crop.shape[1], crop.shape[0]]], np.float32))
    np.testing.assert_allclose(mapped, quad[[0, 2]], atol=1.0)


@pytest.mark.parametrize(
    ("options", "shape_hw"),
    [
        (CropOptions(rectify_aspect=4.0), (46, 184)),
        (CropOptions(padding=0.1), (55, 192)),
        (CropOptions(aspect="square_pad"), (160, 160)),
    ],
)
def test_rectify_size_options(options: CropOptions, shape_hw: tuple[int, int]) -> None:
    quad = np.array([[10, 10], [170, 10], [170, 56], [10, 56]], dtype=np.float32)
    crop, _ = rectify(gradient_image(300, 100), quad, options)
    assert crop.shape[:2] == shape_hw


def test_crop_detection_uses_keypoints_only_when_asked() -> None:
    image = gradient_image(400, 300)
    quad = plate_corners((200, 150), (160, 46), 10.0)
    dets = sv.Detections(
        xyxy=np.array([[*quad.min(0), *quad.max(0)]], dtype=np.float32),
        confidence=np.array([0.9], dtype=np.float32),
        class_id=np.array([0]),
        data={"keypoints": quad[None]},
    )
    boxed = crop_detection(image, dets, 0, 3, CropOptions())
    rectified = crop_detection(image, dets, 0, 3, CropOptions(rectify_keypoints=True))
    assert boxed.parent == rectified.parent == 3
    box_hw = np.ptp(quad, axis=0)[::-1]
    assert np.abs(np.array(boxed.image.shape[:2]) - box_hw).max() <= 1
    assert abs(rectified.image.shape[1] - 160) <= 2 and abs(rectified.image.shape[0] - 46) <= 2


@pytest.mark.parametrize(
    "corners",
    [
        np.full((4, 2), 50.0, dtype=np.float32),  # collapsed to a point
        np.array([[10, 10], [60, 10], [110, 10], [160, 10]], dtype=np.float32),  # a line
        np.array([[10, 10], [np.nan, 10], [60, 40], [10, 40]], dtype=np.float32),
    ],
)
def test_unusable_keypoints_fall_back_to_the_box(corners: np.ndarray) -> None:
    image = gradient_image(400, 300)
    dets = sv.Detections(
        xyxy=np.array([[20, 30, 120, 70]], dtype=np.float32), class_id=np.array([0]), data={"keypoints": corners[None]}
    )
    crop = crop_detection(image, dets, 0, 0, CropOptions(rectify_keypoints=True))
    np.testing.assert_array_equal(crop.image, image[30:70, 20:120])


def test_child_detections_map_back_to_source_pixels() -> None:
    image = gradient_image(400, 300)
    parent = sv.Detections(xyxy=np.array([[100, 50, 300, 250]], dtype=np.float32), class_id=np.array([0]))
    crop = crop_detection(image, parent, 0, 0, CropOptions(padding_px=10))
    child = sv.Detections(
        xyxy=np.array([[20, 30, 60, 50]], dtype=np.float32),
        class_id=np.array([1]),
        data={
            "keypoints": np.array([[[20, 30], [60, 30], [60, 50], [20, 50]]], dtype=np.float32),
            "class_name": np.array(["plate"]),
        },
    )
    mapped = detections_to_source(child, crop)
    np.testing.assert_allclose(mapped.xyxy, [[110, 70, 150, 90]])
    np.testing.assert_allclose(mapped.data["keypoints"][0, 0], [110, 70])
    assert mapped.data["class_name"][0] == "plate"
    x1, y1, x2, y2 = mapped.xyxy[0].astype(int)
    np.testing.assert_array_equal(crop.image[30:50, 20:60], image[y1:y2, x1:x2])


@pytest.mark.parametrize(
    ("count", "size", "expected"),
    [(0, 4, []), (3, 4, [3]), (8, 4, [4, 4]), (9, 4, [4, 4, 1]), (5, 1, [1, 1, 1, 1, 1])],
)
def test_batches(count: int, size: int, expected: list[int]) -> None:
    items = list(range(count))
    got = list(batches(items, size))
    assert [len(b) for b in got] == expected
    assert [x for b in got for x in b] == items


def test_batches_rejects_zero() -> None:
    with pytest.raises(ValueError, match="max_batch_size"):
        list(batches([1], 0))


def test_large_enough() -> None:
    boxes = np.array([[0, 0, 10, 10], [0, 0, 3, 50], [5, 5, 9, 20]], dtype=np.float32)
    assert large_enough(boxes, 4).tolist() == [True, False, True]
