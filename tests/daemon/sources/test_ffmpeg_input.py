"""The private ffconcat file that carries an ffmpeg input URL with a password (daemon/sources/ffmpeg_input.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.sources.ffmpeg_input import InputFile, has_password, split_stream_options


def test_only_urls_with_a_password_go_through_a_file() -> None:
    assert has_password("rtsp://admin:s3cret@cam/live") and has_password("rtmp://u:@host/app")
    assert not has_password("rtsp://cam/live") and not has_password("rtsp://admin@cam/live")
    assert not has_password("/videos/a:b@c.mp4")


def test_stream_options_are_split_from_the_command_line() -> None:
    outer, inner = split_stream_options(["-hwaccel", "cuda", "-rtsp_transport", "tcp", "-c:v", "h264_cuvid",
                                         "-timeout", "5000000"])
    assert outer == ["-hwaccel", "cuda", "-c:v", "h264_cuvid"]
    assert inner == [("rtsp_transport", "tcp"), ("timeout", "5000000")]


def test_the_file_is_private_quoted_and_removed() -> None:
    made = InputFile("rtsp://admin:it's@cam/live", [("rtsp_transport", "tcp")])
    path = Path(made.path)
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700
    assert path.read_text().splitlines() == [
        "ffconcat version 1.0", "file 'rtsp://admin:it'\\''s@cam/live'", "option rtsp_transport 'tcp'"]
    assert made.input_args()[-2:] == ["-i", str(path)] and "it's" not in " ".join(made.input_args())
    made.remove()
    assert not path.parent.exists()


def test_a_line_break_in_the_url_is_refused() -> None:
    with pytest.raises(ValueError, match="line break"):
        InputFile("rtsp://a:b@cam/live\nfile '/etc/passwd'", [])
