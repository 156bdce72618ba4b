"""Sources decoded by OpenCV's FFmpeg backend: hardware decoding asked for, and the CPU fallback said aloud."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import pytest
from pydantic import ValidationError

from daemon.sources.cvcapture import open_params
from daemon.sources.file import FileOptions, FileSource
from daemon.sources.rtsp import RtspOptions


def test_hardware_decoding_is_off_unless_asked_and_unknown_names_are_refused() -> None:
    assert open_params(FileOptions(id="a", type="file", path="x.mp4")) == []
    asked = RtspOptions(id="b", type="rtsp", url="rtsp://127.0.0.1/x", hw_decode="vaapi")
    assert open_params(asked) == [cv2.CAP_PROP_HW_ACCELERATION, cv2.VIDEO_ACCELERATION_VAAPI]
    with pytest.raises(ValidationError, match="hw_decode"):
        FileOptions.model_validate({"id": "c", "type": "file", "path": "x.mp4", "hw_decode": "cuda"})


def test_a_box_without_a_hardware_decoder_decodes_on_the_cpu_and_says_so(
    media_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    video = str(media_dir / "london_street_TestV4.mp4")
    source = FileSource(FileOptions(id="street", type="file", path=video, pace="fast", hw_decode="any"))
    with caplog.at_level(logging.INFO, logger="daemon.sources.cvcapture"):
        source.open()
    try:
        item = source.read()
        assert item is not None and item[0].shape == (720, 1280, 3)
    finally:
        source.close()
    lines = [r.getMessage() for r in caplog.records]
    # this VM has no GPU and the opencv-python wheel no hardware decoder: the fallback must be visible
    assert any(
        "source street: hw_decode any asked for, but OpenCV decodes on the CPU" in line for line in lines
    ) or any("source street: hardware decoding" in line for line in lines)
