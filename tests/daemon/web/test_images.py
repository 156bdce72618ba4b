"""API image references: base64 and URL images decode like cv2.imread; bad and oversized ones are 4xx."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from daemon.web.fetch import UrlFetcher, UrlPolicy
from daemon.web.images import ImageTooLargeError, Limits, decode_bytes, decode_ref, image_refs
from daemon.web.models import ApiError
from tests.fixtures.api_server import file_server
from tests.fixtures.bombs import hdr_bomb, pam_header, png_header

LIMITS = Limits(max_bytes=5_000_000, max_pixels=4_000_000, max_images=4)
ALLOW_LOOPBACK = UrlFetcher(UrlPolicy(enabled=True, hosts=frozenset({"127.0.0.1"})))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def media_server(media_dir: Path) -> Iterator[str]:
    with file_server(media_dir) as url:
        yield url


@pytest.mark.parametrize("form", ["dict", "data_uri", "plain_string"])
def test_base64_decodes_like_imread(media_dir: Path, form: str) -> None:
    path = media_dir / "three_buses.jpg"
    value = b64(path.read_bytes())
    ref: Any = {
        "dict": {"type": "base64", "value": value},
        "data_uri": {"type": "base64", "value": "data:image/jpeg;base64," + value},
        "plain_string": value,
    }[form]
    (parsed,) = image_refs(ref)
    assert np.array_equal(decode_ref(parsed, 0, LIMITS), cv2.imread(str(path)))


def test_url_images_are_fetched(media_dir: Path, media_server: str) -> None:
    (ref,) = image_refs(f"{media_server}/rf_car.jpg")
    assert ref["type"] == "url"
    data = asyncio.run(ALLOW_LOOPBACK.fetch(ref["value"], 0))
    assert np.array_equal(decode_bytes(data, 0, LIMITS), cv2.imread(str(media_dir / "rf_car.jpg")))


def test_url_errors_never_echo_credentials_or_query(media_server: str) -> None:
    url = media_server.replace("http://", "http://user:hunter2@") + "/missing.jpg?token=s3cret"
    with pytest.raises(ApiError, match="answered HTTP 404") as info:
        asyncio.run(ALLOW_LOOPBACK.fetch(url, 0))
    assert "hunter2" not in str(info.value) and "s3cret" not in str(info.value)
    assert "/missing.jpg" in str(info.value)


@pytest.mark.parametrize(
    ("value", "status", "message"),
    [
        (None, 400, "no image"),
        ([], 400, "empty list"),
        ([{"type": "base64", "value": "x"}] * 5, 413, "limit is api.max_batch=4"),
        ([42], 400, r"image\[0\]: expected"),
    ],
)
def test_bad_image_lists(value: Any, status: int, message: str) -> None:
    with pytest.raises(ApiError, match=message) as info:
        image_refs(value, max_images=LIMITS.max_images)
    assert info.value.status == status


@pytest.mark.parametrize(
    ("ref", "status", "message"),
    [
        ({"type": "numpy", "value": "gASV"}, 400, "type 'numpy' is not supported"),
        ({"type": "base64", "value": ""}, 400, "missing"),
        ({"type": "base64", "value": b64(b"this is not an image")}, 400, "image 0: data starting with b'this is "),
        ({"type": "base64", "value": b64(hdr_bomb(3000, 3000))}, 400, "image 0: format Radiance HDR is not an accep"),
        ({"type": "base64", "value": b64(pam_header(3000, 3000))}, 400, "format PAM is not an accepted image format"),
        ({"type": "base64", "value": b64(png_header(64, 64)[:20])}, 400, "image 0: PNG header cannot be read"),
        ({"type": "base64", "value": b64(b"\0" * 6_000_000)}, 413, "max_image_bytes=5000000"),
        ({"type": "base64", "value": b64(png_header(6000, 6000))}, 413, "6000x6000 = 36000000 pixels"),
        ({"type": "base64", "value": b64(png_header(50000, 50000))}, 413, "max_image_pixels"),
        ({"type": "url", "value": "http://example.com/a.jpg"}, 400, "must be fetched before"),
    ],
)
def test_bad_images_are_refused_before_decoding(ref: dict[str, Any], status: int, message: str) -> None:
    with pytest.raises(ApiError, match=message) as info:
        decode_ref(ref, 0, LIMITS)
    assert info.value.status == status


def test_pixel_limit_applies_to_decoded_size(media_dir: Path) -> None:
    data = (media_dir / "three_buses.jpg").read_bytes()  # 640x480
    with pytest.raises(ImageTooLargeError, match="640x480"):
        decode_ref({"type": "base64", "value": b64(data)}, 3, Limits(10**7, 640 * 480 - 1, 1))
