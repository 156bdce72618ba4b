"""The bounded decoder: allowed formats decode as cv2.imread does; bombs and other formats are refused undecoded."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from pipelines import imagefile
from pipelines.imagefile import TooManyPixelsError, UnsupportedFormatError, decode_image, header_size
from pipelines.preprocess import read_image
from tests.fixtures.bombs import hdr_bomb, jpeg_header, pam_header, png_header, tiff_header

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def imdecode_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A spy on cv2.imdecode as the decoder calls it: records each call, then decodes for real."""
    calls: list[int] = []
    real = cv2.imdecode

    def spy(buf: Any, flags: int) -> Any:
        calls.append(len(buf))
        return real(buf, flags)

    monkeypatch.setattr(imagefile.cv2, "imdecode", spy)
    return calls


@pytest.mark.parametrize("ext", [".jpg", ".png", ".bmp", ".webp"])
def test_allowed_formats_decode_like_imread(media_dir: Path, tmp_path: Path, ext: str) -> None:
    original = cv2.imread(str(media_dir / "rf_car.jpg"))
    path = tmp_path / f"car{ext}"
    cv2.imwrite(str(path), original, [cv2.IMWRITE_WEBP_QUALITY, 101] if ext == ".webp" else [])
    fmt, width, height = header_size(path.read_bytes())
    assert fmt == {".jpg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".webp": "WEBP"}[ext]
    assert (width, height) == (original.shape[1], original.shape[0])
    assert np.array_equal(decode_image(path.read_bytes()), cv2.imread(str(path)))
    assert np.array_equal(read_image(path), cv2.imread(str(path)))


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (hdr_bomb, "Radiance HDR"),
        (pam_header, "PAM"),
        (tiff_header, "TIFF"),
        (lambda w, h: b"P6\n%d %d\n255\n" % (w, h), "PNM"),
    ],
)
def test_formats_outside_the_allow_list_are_refused_undecoded(
    make: Callable[[int, int], bytes], name: str, imdecode_calls: list[int]
) -> None:
    with pytest.raises(UnsupportedFormatError, match=f"format {name} is not an accepted image format; expected JPEG"):
        decode_image(make(3000, 3000), max_pixels=4_000_000, name="upload")
    assert imdecode_calls == []


@pytest.mark.parametrize("make", [png_header, jpeg_header])
def test_allowed_bombs_are_refused_from_their_header(
    make: Callable[[int, int], bytes], imdecode_calls: list[int]
) -> None:
    with pytest.raises(TooManyPixelsError, match="upload: 60000x50000 = 3000000000 pixels; the limit is 4000000"):
        decode_image(make(60000, 50000), max_pixels=4_000_000, name="upload")
    assert imdecode_calls == []


def test_read_image_refuses_a_bomb_file_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "bomb.hdr"
    path.write_bytes(hdr_bomb(3000, 3000))
    with pytest.raises(ValueError, match=f"image {path}: format Radiance HDR is not an accepted"):
        read_image(path)
    with pytest.raises(ValueError, match=f"cannot read image {tmp_path / 'missing.jpg'}"):
        read_image(tmp_path / "missing.jpg")


BOMB_RSS = """
import json, resource, sys
from pipelines.imagefile import ImageRefusedError, decode_image
from tests.fixtures.bombs import hdr_bomb
data = hdr_bomb(4000, 4000)  # 1 MB that OpenCV would decode to 16 M pixels of float32 RGB (~190 MB) and BGR
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    decode_image(data, max_pixels=4_000_000)
    outcome = "decoded"
except ImageRefusedError as exc:
    outcome = type(exc).__name__
print(json.dumps({"outcome": outcome, "rise_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before}))
"""


def test_a_bomb_does_not_raise_peak_rss() -> None:
    done = subprocess.run(
        [sys.executable, "-c", BOMB_RSS], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["outcome"] == "UnsupportedFormatError"
    assert result["rise_kb"] < 20_000  # decoding it would add ~240 MB
