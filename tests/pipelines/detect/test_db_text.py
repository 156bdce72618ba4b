"""DB text detection: real PP-OCR detectors on a real picture, and the map -> polygon contract."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest
import supervision as sv

from pipelines.detect.db_text import DbText
from pipelines.models import load_model
from tests.pipelines.tiny_onnx import channel_mean_model

# The three big words of text_gsoc.jpg ("2022", "Program", "Announced"), boxed by hand.
GSOC_WORDS = np.array([[20, 340, 530, 510], [630, 336, 1496, 544], [28, 564, 1136, 750]], np.float32)


def ppocr_v4_det() -> Path:
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None or spec.origin is None:
        pytest.skip("rapidocr_onnxruntime (which ships the PP-OCRv4 detector) is not installed")
    return Path(spec.origin).parent / "models" / "ch_PP-OCRv4_det_infer.onnx"


@pytest.mark.parametrize("which", ["ppocrv3_en", "ppocrv4"])
def test_finds_the_words_on_a_real_picture(models_dir: Path, media_dir: Path, which: str) -> None:
    path = models_dir / "text_det_ppocrv3_en.onnx" if which == "ppocrv3_en" else ppocr_v4_det()
    model = load_model({"type": "db_text", "path": str(path)})
    image = cv2.imread(str(media_dir / "text_gsoc.jpg"))
    d = model.detect([image])[0]
    assert len(d) >= 5
    assert (sv.box_iou_batch(GSOC_WORDS, d.xyxy).max(axis=1) >= 0.5).all()
    polygon = d.data["polygon"]
    assert polygon.shape == (len(d), 4, 2) and polygon.dtype == np.float32
    h, w = image.shape[:2]
    assert (polygon[..., 0] >= 0).all() and (polygon[..., 0] <= w).all() and (polygon[..., 1] <= h).all()
    np.testing.assert_allclose(polygon.min(axis=1), d.xyxy[:, :2])
    assert d.data["class_name"].tolist() == ["text"] * len(d) and (d.class_id == 0).all()
    assert (np.diff(d.confidence) <= 0).all()  # best first


@pytest.fixture
def mean_map(tmp_path: Path) -> DbText:
    """A stand-in detector whose probability map is the picture itself (0..1), so the text is what we draw."""
    path = channel_mean_model(tmp_path / "db.onnx")
    return DbText(DbText.Options(path=path, mean=(0, 0, 0), std=(1, 1, 1)))


def canvas(w: int = 128, h: int = 64) -> np.ndarray:
    return np.zeros((h, w, 3), np.uint8)


def test_rectangle_is_unclipped_by_area_over_perimeter(mean_map: DbText) -> None:
    image = canvas()
    image[20:36, 20:60] = 255  # the contour's rectangle runs through pixel centres 20..59 x 20..35
    d = mean_map.detect([image])[0]
    assert len(d) == 1
    grow = 39 * 15 * 1.5 / (2 * (39 + 15))  # DB unclip distance: area * ratio / perimeter
    np.testing.assert_allclose(d.xyxy[0], [20 - grow, 20 - grow, 59 + grow, 35 + grow], atol=1.5)
    np.testing.assert_allclose(d.confidence, [1.0], atol=1e-6)
    tl, tr, br, bl = d.data["polygon"][0]
    assert tl[0] < tr[0] and bl[0] < br[0] and tl[1] < bl[1] and tr[1] < br[1]


def test_rotated_text_gives_a_rotated_quadrilateral(mean_map: DbText) -> None:
    image = canvas(160, 160)
    rect = cv2.boxPoints(((80, 80), (100, 20), 30)).astype(np.int32)
    cv2.fillPoly(image, [rect], (255, 255, 255))
    d = mean_map.detect([image])[0]
    assert len(d) == 1
    tl, tr = d.data["polygon"][0][:2]
    angle = np.degrees(np.arctan2(tr[1] - tl[1], tr[0] - tl[0]))
    assert abs(abs(angle) - 30) < 3


def test_threshold_override_and_minimum_size(mean_map: DbText) -> None:
    faint = canvas()
    faint[20:36, 20:60] = 128  # probability 0.5: under the 0.6 box threshold
    faint[50:52, 100:102] = 255  # a 2x2 speck: under min_size
    assert len(mean_map.detect([faint])[0]) == 0
    assert len(mean_map.detect([faint], confidence_threshold=0.4)[0]) == 1
    assert len(mean_map.detect([faint], confidence_threshold=0.4, mask_threshold=0.6)[0]) == 0
    with pytest.raises(ValueError, match="unclip"):
        mean_map.detect([faint], unclip=2.0)


def test_mixed_sizes_in_one_call_keep_their_order(mean_map: DbText) -> None:
    small, big, other = canvas(), canvas(256, 96), canvas(128, 64)
    small[10:20, 10:50] = 255
    big[40:70, 100:200] = 255
    other[30:50, 70:120] = 255
    together = mean_map.detect([small, big, other])
    singles = [mean_map.detect([image])[0] for image in (small, big, other)]
    for a, b in zip(together, singles, strict=True):
        np.testing.assert_allclose(a.xyxy, b.xyxy)
    centres = [float(d.xyxy[0, [0, 2]].mean()) for d in together]
    np.testing.assert_allclose(centres, [29.5, 149.5, 94.5], atol=1.5)


@pytest.mark.parametrize(
    ("limit", "kind", "image_hw", "expected_wh"),
    [(960, "max", (1024, 1600), (960, 608)), (960, "max", (64, 128), (128, 64)), (736, "min", (100, 300), (2208, 736))],
)
def test_working_size(tmp_path: Path, limit: int, kind: str, image_hw: tuple[int, int], expected_wh: tuple) -> None:
    model = DbText(DbText.Options(path=channel_mean_model(tmp_path / "db.onnx"), limit_side_len=limit, limit_type=kind))
    assert model.working_size(np.zeros((*image_hw, 3), np.uint8)) == expected_wh
