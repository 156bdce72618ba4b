"""OCR: the PP-OCR recogniser on real and rendered plates, width buckets, CTC decoding, filters, tesseract."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from daemon.bench.scenes import render_plate
from pipelines.models import load_model
from pipelines.ocr import CtcOcr, ctc_greedy, default_rec_model, finish_reading, parse_tsv
from pipelines.runtime.base import ModelLoadError

PLATE_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


class CountingRun:
    """Delegates to the real runtime.run and records the batch size of every call."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.batches: list[tuple[int, ...]] = []

    def __call__(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.batches.append(next(iter(feeds.values())).shape)
        return self.real(feeds)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def ocr() -> CtcOcr:
    return load_model({"type": "ocr"}, name="text")


@pytest.fixture(scope="module")
def plate_ocr() -> CtcOcr:
    return load_model({"type": "ocr", "uppercase": True, "allowed_characters": PLATE_CHARS}, name="plate_text")


def test_default_model_comes_from_the_rapidocr_package() -> None:
    path = default_rec_model()
    assert path.name == "ch_PP-OCRv4_rec_infer.onnx" and path.is_file()
    assert "rapidocr_onnxruntime" in path.parts


def test_charset_from_model_metadata(ocr: CtcOcr) -> None:
    assert ocr.table[0] == "blank" and ocr.table[-1] == " "
    assert len(ocr.table) == 6625


def test_reads_a_real_plate_crop(ocr: CtcOcr, plate_ocr: CtcOcr, media_dir: Path) -> None:
    crop = cv2.imread(str(media_dir / "plate_crop_1.png"))
    [raw] = ocr.read([crop])
    assert raw["text"] == "AD 799 KB"
    assert len(raw["char_confidences"]) == len(raw["text"])
    assert raw["confidence"] == pytest.approx(np.mean(raw["char_confidences"]))
    [plate] = plate_ocr.read([crop])
    assert plate["text"] == "AD799KB"
    assert len(plate["char_confidences"]) == 7


@pytest.mark.parametrize("colour", ["white", "yellow", "blue"])
def test_reads_rendered_plates_in_one_batch(plate_ocr: CtcOcr, colour: str) -> None:
    texts = ["AB123CD", "KX907ZT", "MN450PR", "HT221LW", "ZZ808AA", "Q7"]
    sizes = [(160, 46), (200, 48), (120, 40), (240, 56), (160, 46), (60, 40)]
    plates = [render_plate(t, s, colour) for t, s in zip(texts, sizes, strict=True)]
    assert [r["text"] for r in plate_ocr.read(plates)] == texts


def test_one_runtime_call_per_width_bucket(plate_ocr: CtcOcr, monkeypatch: pytest.MonkeyPatch) -> None:
    texts = ["AB1", "AB12", "AB123CD", "KX907ZT", "MN450PR", "HT221LW", "ZZ808AA"]
    crops = [render_plate(t, (w, 48)) for t, w in zip(texts, (60, 90, 150, 155, 230, 400, 900), strict=True)]
    widths = [plate_ocr.width_of(c) for c in crops]
    assert widths == [60, 90, 150, 155, 230, 320, 320]  # capped at max_width
    counter = CountingRun(plate_ocr.runtime.run)
    monkeypatch.setattr(plate_ocr.runtime, "run", counter)
    results = plate_ocr.read(crops)
    # buckets 96, 160, 224, 320: one call each for the three buckets in use, never one per crop
    assert sorted(counter.batches) == [(2, 3, 48, 96), (2, 3, 48, 160), (3, 3, 48, 320)]
    assert [r["text"] for r in results[:6]] == texts[:6]  # the last one is squeezed 2.8x: unreadable


def test_results_do_not_depend_on_the_batch(plate_ocr: CtcOcr) -> None:
    crops = [render_plate(t, (160, 46)) for t in ("AB123CD", "KX907ZT", "MN450PR")]
    together = plate_ocr.read(crops)
    alone = [plate_ocr.read([c])[0] for c in crops]
    assert together == alone


def test_ctc_greedy_drops_repeats_and_blanks() -> None:
    table = ["blank", "A", "B", " "]
    steps = [[1, 1, 0, 1, 2, 2, 3, 0, 0], [0, 0, 0, 0, 0, 0, 0, 0, 0], [2, 0, 2, 2, 0, 2, 1, 3, 3]]
    probs = np.full((3, 9, 4), 0.1, dtype=np.float32)
    for n, row in enumerate(steps):
        probs[n, np.arange(9), row] = 0.7
    probs[0, 0, 1] = 0.9
    decoded = ctc_greedy(probs, table)
    assert [text for text, _ in decoded] == ["AAB ", "", "BBBA "]
    np.testing.assert_allclose(decoded[0][1], [0.9, 0.7, 0.7, 0.7])


@pytest.mark.parametrize(
    ("options", "text", "confs", "expected"),
    [
        ({}, "ab 1", [0.9, 0.9, 0.5, 0.9], ("ab 1", 0.8, 4)),
        ({"uppercase": True}, "ab", [0.9, 0.7], ("AB", 0.8, 2)),
        ({"allowed_characters": "AB1"}, "aB 1", [0.1, 0.9, 0.5, 0.7], ("B1", 0.8, 2)),
        ({"min_confidence": 0.9}, "ab", [0.9, 0.7], ("", 0.8, 0)),
        ({}, "", [], ("", 0.0, 0)),
    ],
)
def test_finish_reading(
    options: dict[str, Any], text: str, confs: list[float], expected: tuple[str, float, int]
) -> None:
    from pipelines.ocr import CtcOcrOptions

    opts = CtcOcrOptions.model_validate({"path": "unused.onnx", **options})
    result = finish_reading(text, confs, opts)
    assert (result["text"], round(result["confidence"], 6), len(result["char_confidences"])) == expected


def test_charset_file_must_match_the_model(tmp_path: Path) -> None:
    charset = tmp_path / "chars.txt"
    charset.write_text("A\nB\nC\n")
    with pytest.raises(ModelLoadError, match="charset gives 5 classes but the model outputs 6625") as info:
        load_model({"type": "ocr", "charset_file": str(charset)}, name="plates_ocr")
    assert "plates_ocr" in str(info.value)


def test_wrong_model_fails_at_load(models_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"expected \[N,3,48,W\]"):
        load_model({"type": "ocr", "path": str(models_dir / "yolox_nano.onnx")}, name="text")


def test_empty_crop_is_an_error(ocr: CtcOcr) -> None:
    with pytest.raises(ValueError, match="crop 1 is empty"):
        ocr.read([render_plate("AB1"), np.zeros((0, 10, 3), np.uint8)])


def test_parse_tsv() -> None:
    tsv = (
        "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext\n"
        "1\t1\t0\t0\t0\t0\t0\t0\t100\t30\t-1\t\n"
        "5\t1\t1\t1\t1\t1\t2\t2\t40\t20\t91.5\tAB12\n"
        "5\t1\t1\t1\t1\t2\t50\t2\t40\t20\t80\tCD\n"
    )
    text, confs = parse_tsv(tsv)
    assert text == "AB12 CD"
    np.testing.assert_allclose(confs, [0.915] * 4 + [0.8] * 3)


@pytest.mark.skipif(shutil.which("tesseract") is None, reason="the tesseract binary is not installed")
def test_tesseract_reads_clean_text() -> None:
    engine = load_model({"type": "tesseract", "allowed_characters": PLATE_CHARS}, name="tess")
    picture = cv2.copyMakeBorder(
        render_plate("AB123CD", (320, 80), "white"), 20, 20, 20, 20, cv2.BORDER_CONSTANT, value=(255, 255, 255)
    )
    [result] = engine.read([picture])
    assert result["text"] == "AB123CD"
    assert 0.0 < result["confidence"] <= 1.0


def test_tesseract_missing_binary_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"tesseract binary '.*no-such-tesseract' not found"):
        load_model({"type": "tesseract", "path": str(tmp_path / "no-such-tesseract")}, name="tess")
