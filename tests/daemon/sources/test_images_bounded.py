"""The images folder source decodes through the bounded decoder: a bomb or a refused format is skipped undecoded."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.sources.images import ImagesOptions, ImagesSource
from pipelines import imagefile
from tests.fixtures.bombs import hdr_bomb, png_header
from tests.fixtures.media import grey_level, make_images


def test_bombs_and_refused_formats_are_skipped_without_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_images(tmp_path, ["1.png", "4.png"])
    (tmp_path / "2.png").write_bytes(png_header(30000, 30000))
    (tmp_path / "3.png").write_bytes(hdr_bomb(3000, 3000))  # a .png name does not make it a PNG
    decoded: list[int] = []
    real = imagefile.cv2.imdecode
    monkeypatch.setattr(imagefile.cv2, "imdecode", lambda buf, flags: decoded.append(len(buf)) or real(buf, flags))
    options = ImagesOptions.model_validate(
        {"id": "i", "type": "images", "folder": str(tmp_path), "max_pixels": 4_000_000}
    )
    source = ImagesSource(options)
    skipped: list[tuple[str, str]] = []
    source.on_skip = lambda reason, detail: skipped.append((reason, detail))
    source.open()
    levels = []
    while (item := source.read()) is not None:
        levels.append(grey_level(item[0]))
    assert levels == [10, 20]  # 1.png and 4.png
    assert len(decoded) == 2  # only the two real pictures reached OpenCV
    assert [r for r, _ in skipped] == ["unreadable", "unreadable"]
    assert "2.png: 30000x30000 = 900000000 pixels; the limit is 4000000" in skipped[0][1]
    assert "3.png: format Radiance HDR is not an accepted image format" in skipped[1][1]
