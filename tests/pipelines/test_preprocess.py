"""Preprocessing: letterbox placement and its inverse, normalisation, channel order, picture formats."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.preprocess import (
    Letterbox,
    Normalizer,
    as_bgr,
    hwc_to_tensor,
    letterbox_batch,
    multiple_of,
    placement,
)


@pytest.mark.parametrize(
    ("source_wh", "input_wh", "mode", "scale_xy", "offset_xy"),
    [
        ((640, 480), (416, 416), "top_left", (0.65, 0.65), (0, 0)),
        ((640, 480), (416, 416), "center", (0.65, 0.65), (0, 52)),
        ((480, 640), (320, 320), "center", (0.5, 0.5), (40, 0)),
        ((640, 480), (320, 320), "stretch", (0.5, 2 / 3), (0, 0)),
        ((100, 50), (64, 64), "top_left", (0.64, 0.64), (0, 0)),
        ((32, 32), (64, 64), "center", (2.0, 2.0), (0, 0)),
    ],
)
def test_placement(
    source_wh: tuple[int, int],
    input_wh: tuple[int, int],
    mode: str,
    scale_xy: tuple[float, float],
    offset_xy: tuple[float, float],
) -> None:
    box = placement(source_wh, input_wh, mode)  # type: ignore[arg-type]
    assert box.scale_xy == pytest.approx(scale_xy)
    assert box.offset_xy == offset_xy
    assert box.source_wh == source_wh


@pytest.mark.parametrize("mode", ["top_left", "center", "stretch"])
def test_letterbox_batch_places_pixels_and_maps_back(mode: str) -> None:
    image = np.zeros((40, 80, 3), np.uint8)
    image[10:20, 20:40] = (0, 0, 255)  # a red block
    batch, boxes = letterbox_batch([image], (64, 64), mode, pad_value=114)  # type: ignore[arg-type]
    assert batch.shape == (1, 64, 64, 3) and batch.dtype == np.uint8
    red = np.argwhere((batch[0, :, :, 2] > 200) & (batch[0, :, :, 0] < 50))
    (y0, x0), (y1, x1) = red.min(axis=0), red.max(axis=0) + 1
    back = boxes[0].boxes_to_source(np.array([[x0, y0, x1, y1]], np.float32))[0]
    np.testing.assert_allclose(back, [20, 10, 40, 20], atol=2.0)
    if mode == "top_left":
        assert (batch[0, 40:, :] == 114).all()  # padding below the picture
    elif mode == "center":
        assert (batch[0, :16] == 114).all() and (batch[0, 48:] == 114).all()
    else:
        assert not (batch[0] == 114).all(axis=-1).any()


def test_boxes_to_source_clips_to_the_picture_but_points_are_not_clipped() -> None:
    box = Letterbox((0.5, 0.5), (0.0, 16.0), (128, 64))
    np.testing.assert_allclose(box.boxes_to_source(np.array([[-4, 0, 70, 40]]))[0], [0, 0, 128, 48])
    np.testing.assert_allclose(box.points_to_source(np.array([[[-4, 0]]])), [[[-8, -32]]])


def test_letterbox_batch_mixes_sizes_and_grey_pictures() -> None:
    images = [np.full((10, 20, 3), 7, np.uint8), np.full((30, 10), 9, np.uint8), np.zeros((5, 5, 4), np.uint8)]
    batch, boxes = letterbox_batch(images, (32, 32), "center", 0)
    assert batch.shape == (3, 32, 32, 3)
    assert batch[0, 16, 16].tolist() == [7, 7, 7] and batch[1, 16, 16].tolist() == [9, 9, 9]
    assert [b.source_wh for b in boxes] == [(20, 10), (10, 30), (5, 5)]


def test_as_bgr_rejects_other_shapes() -> None:
    with pytest.raises(ValueError, match=r"\[H,W,3\]"):
        as_bgr(np.zeros((4, 4, 2), np.uint8))


@pytest.mark.parametrize(
    ("order", "scale", "mean", "std", "pixel_bgr", "expected"),
    [
        ("bgr", 1.0, (0, 0, 0), (1, 1, 1), (10, 20, 30), (10, 20, 30)),
        ("rgb", 1 / 255, (0, 0, 0), (1, 1, 1), (0, 51, 255), (1.0, 0.2, 0.0)),
        ("bgr", 1.0, (103.53, 116.28, 123.675), (57.375, 57.12, 58.395), (103.53, 116.28, 123.675), (0, 0, 0)),
        ("bgr", 1 / 255, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), (255, 0, 127.5), (1, -1, 0)),
    ],
)
def test_normalizer(
    order: str,
    scale: float,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    pixel_bgr: tuple[float, ...],
    expected: tuple[float, ...],
) -> None:
    batch = np.empty((2, 2, 3, 3), np.float32)
    batch[...] = pixel_bgr  # float pixels let the mean cases land exactly on zero
    blob = Normalizer(order, scale, mean, std)(batch)  # type: ignore[arg-type]
    assert blob.shape == (2, 3, 2, 3) and blob.dtype == np.float32
    np.testing.assert_allclose(blob[1, :, 1, 2], expected, atol=1e-5)


def test_normalizer_float16_and_bad_std() -> None:
    blob = Normalizer(dtype=np.float16)(np.full((1, 2, 2, 3), 200, np.uint8))
    assert blob.dtype == np.float16 and blob[0, 0, 0, 0] == 200
    with pytest.raises(ValueError, match="std"):
        Normalizer(std=(1, 0, 1))


@pytest.mark.parametrize(("value", "expected"), [(0, 32), (15, 32), (17, 32), (48.1, 64), (700, 704), (960, 960)])
def test_multiple_of(value: float, expected: int) -> None:
    assert multiple_of(value) == expected


def per_crop_reference(
    crop: np.ndarray, layout: str, dtype: type, scale: float, mean: tuple[float, ...] | None,
    std: tuple[float, ...] | None, rgb: bool,
) -> np.ndarray:
    """The per-crop float32 arithmetic the classifiers and embedders did before batching it."""
    pixels = (crop[..., ::-1] if rgb else crop).astype(np.float32) * np.float32(scale)
    if mean is not None:
        pixels = pixels - np.asarray(mean, np.float32)
    if std is not None:
        pixels = pixels / np.asarray(std, np.float32)
    return (pixels.transpose(2, 0, 1) if layout == "nchw" else pixels).astype(dtype)


@pytest.mark.parametrize(
    ("layout", "dtype", "scale", "mean", "std", "rgb"),
    [
        ("nchw", np.float32, 1.0, None, None, False),  # SqueezeNet-style 0..255 input
        ("nchw", np.float16, 1.0, None, None, False),  # float16 takes the lookup-table path
        ("nhwc", np.float32, 1.0, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), False),  # re-ID: identities skipped
        ("nchw", np.float32, 1 / 255, (0.48, 0.46, 0.41), (0.27, 0.26, 0.28), True),  # CLIP
        ("nhwc", np.float16, 1 / 255, (0.48, 0.46, 0.41), (0.27, 0.26, 0.28), True),
        ("nchw", np.float16, 0.5, (1.0, 2.0, 3.0), None, True),
    ],
)
def test_hwc_to_tensor_equals_per_crop_arithmetic_bit_for_bit(
    layout: str, dtype: type, scale: float, mean: tuple[float, ...] | None, std: tuple[float, ...] | None, rgb: bool
) -> None:
    crops = np.random.default_rng(5).integers(0, 256, (4, 6, 5, 3), dtype=np.uint8)
    tensor = hwc_to_tensor(crops, layout, dtype, scale=scale, mean=mean, std=std, rgb=rgb)  # type: ignore[arg-type]
    expected = np.stack([per_crop_reference(c, layout, dtype, scale, mean, std, rgb) for c in crops])
    assert tensor.dtype == np.dtype(dtype) and tensor.flags.c_contiguous and tensor.shape == expected.shape
    np.testing.assert_array_equal(tensor, expected)
    alone = hwc_to_tensor(crops[2:3], layout, dtype, scale=scale, mean=mean, std=std, rgb=rgb)  # type: ignore[arg-type]
    np.testing.assert_array_equal(alone[0], tensor[2])  # a crop alone gives the same values as in a batch


def test_hwc_to_tensor_one_channel() -> None:
    grey = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4, 1)
    tensor = hwc_to_tensor(grey, "nchw", np.float32, scale=2.0, mean=(1.0,), std=(4.0,))
    assert tensor.shape == (2, 1, 3, 4)
    np.testing.assert_allclose(tensor[1, 0, 2, 3], (23 * 2.0 - 1.0) / 4.0)
