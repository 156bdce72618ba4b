"""The GStreamer source without a network: options, the pipeline it builds, credentials, a local test pipeline."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from daemon import registry
from daemon.sources.base import SourceClosed, SourceError
from daemon.sources.gstreamer import GstOptions, GstSource, credentials, describe_pipeline

URL = "rtsp://alice:pa55%3Aw%40rd@cam.local:8554/stream"


def options(**settings: Any) -> GstOptions:
    return GstOptions.model_validate({"id": "cam", "type": "gstreamer", **settings})


def test_the_registry_resolves_type_gstreamer() -> None:
    assert registry.resolve("source", "gstreamer") is GstSource


@pytest.mark.parametrize(
    ("preset", "decoder"),
    [
        ("cpu", "h264parse ! avdec_h264 ! videoconvert"),
        ("vaapi", "vaapih264dec ! vaapipostproc width=416 height=234 ! videoconvert"),
        ("nvdec", "h264parse ! nvh264dec ! videoconvert"),
        ("jetson", "nvv4l2decoder ! nvvidconv ! video/x-raw,format=BGRx,width=416,height=234 ! videoconvert"),
    ],
)
def test_presets_decode_with_their_element_and_scale_to_decode_size(preset: str, decoder: str) -> None:
    text = describe_pipeline(options(url=URL, preset=preset, decode_size=[416, 234]))
    assert text.startswith('rtspsrc name=edgewatch_src location="rtsp://cam.local:8554/stream" protocols=tcp')
    assert decoder in text
    assert text.endswith(
        "video/x-raw,format=BGR,width=416,height=234 ! appsink name=edgewatch_sink max-buffers=1 drop=true sync=false"
    )
    assert "alice" not in text and "pa55" not in text  # credentials go to rtspsrc's properties


def test_credentials_come_from_the_url_decoded_or_from_the_fields() -> None:
    assert credentials(options(url=URL)) == ("alice", "pa55:w@rd")
    assert credentials(options(url="rtsp://cam/s", username="bob", password="x@y")) == ("bob", "x@y")
    assert credentials(options(url="rtsp://cam/s")) is None


@pytest.mark.parametrize(
    ("settings", "error"),
    [
        ({}, "exactly one of url"),
        ({"url": URL, "pipeline": "videotestsrc"}, "exactly one of url"),
        ({"url": "http://alice:secret@cam/x"}, "rtsp://"),
        ({"url": URL, "preset": "amd"}, "preset"),
        ({"url": URL, "decode_size": [8, 8]}, "decode_size"),
        ({"url": "rtsp://cam/s", "password": "secret"}, "username is not"),
        ({"url": URL, "username": "bob"}, "both in the URL"),
    ],
)
def test_bad_options_name_the_field_and_never_echo_the_password(settings: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError, match=error) as caught:
        options(**settings)
    assert "secret" not in str(caught.value) and "pa55" not in str(caught.value)


def test_a_pipeline_string_is_read_through_the_appsink_scaled_to_decode_size() -> None:
    source = GstSource(
        options(
            pipeline="videotestsrc is-live=true ! video/x-raw,width=322,height=240,framerate=30/1",
            decode_size=[161, 120],
        )
    )
    source.open()
    try:
        frames = [source.read() for _ in range(5)]
    finally:
        source.close()
    shapes = {item[0].shape for item in frames if item is not None}
    assert shapes == {(120, 161, 3)}  # 161 * 3 bytes a row: GStreamer pads rows to 4 bytes, the image is not
    stamps = [item[1] for item in frames if item is not None]
    assert all(s is not None for s in stamps) and stamps == sorted(stamps)
    with pytest.raises(SourceClosed):
        source.read()
    source.close()  # twice is fine


def test_the_end_of_a_pipeline_is_an_error_that_says_so_and_a_bad_element_is_named() -> None:
    source = GstSource(
        options(pipeline="videotestsrc num-buffers=1 ! video/x-raw,width=64,height=48", read_timeout_s=30)
    )
    source.open()
    try:
        with pytest.raises(SourceError, match="the stream ended"):
            source.read()
            source.read()
    finally:
        source.close()
    broken = GstSource(options(pipeline="nosuchsrc ! video/x-raw"))
    with pytest.raises(SourceError, match="nosuchsrc"):
        broken.open()
    broken.close()
