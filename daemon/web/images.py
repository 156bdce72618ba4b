"""Images of inference API requests: Roboflow's {"type", "value"} references to BGR arrays, within limits."""

from __future__ import annotations

import base64
import binascii
import io
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from PIL import Image as PILImage
from PIL import UnidentifiedImageError

from daemon.web.models import ApiError
from pipelines.preprocess import Image, as_image

URL_TIMEOUT_S = 10.0


class ImageTooLargeError(ApiError):
    status = 413


@dataclass(frozen=True)
class Limits:
    max_bytes: int
    max_pixels: int
    max_images: int


def image_refs(value: Any, field: str = "image", max_images: int | None = None) -> list[dict[str, Any]]:
    """The request's image reference(s) as a list of {"type", "value"} dicts, or a 4xx naming the problem."""
    if value is None:
        raise ApiError(f"no image: the request needs '{field}': {{\"type\": \"base64\", \"value\": ...}} or a list")
    refs = value if isinstance(value, list) else [value]
    if not refs:
        raise ApiError(f"no image: '{field}' is an empty list")
    if max_images is not None and len(refs) > max_images:
        raise ApiError(f"'{field}' has {len(refs)} images; the limit is api.max_batch={max_images}", status=413)
    for i, ref in enumerate(refs):
        if isinstance(ref, str):
            refs[i] = {"type": "url" if _is_url(ref) else "base64", "value": ref}
        elif not isinstance(ref, dict) or "value" not in ref:
            raise ApiError(f"{field}[{i}]: expected {{\"type\": \"base64\"|\"url\", \"value\": ...}}, got "
                           f"{type(ref).__name__}")
    return refs


def decode_ref(ref: dict[str, Any], index: int, limits: Limits) -> Image:
    """One reference to an HxWx3 uint8 BGR array; blocking (run it off the event loop)."""
    kind = str(ref.get("type") or "base64").lower()
    value = ref.get("value")
    if kind == "base64":
        data = _b64(value, index, limits)
    elif kind == "url":
        data = fetch_url(value, index, limits)
    else:
        raise ApiError(f"image {index}: type {kind!r} is not supported; use base64 or url")
    return decode_bytes(data, index, limits)


def _b64(value: Any, index: int, limits: Limits) -> bytes:
    if not isinstance(value, str) or not value:
        raise ApiError(f"image {index}: base64 value is missing or not a string")
    if value.startswith("data:"):
        value = value.partition(",")[2]  # data:image/jpeg;base64,....
    if len(value) * 3 // 4 > limits.max_bytes + 3:
        raise ImageTooLargeError(
            f"image {index}: about {len(value) * 3 // 4} bytes encoded; the limit is api.max_image_bytes="
            f"{limits.max_bytes}"
        )
    try:
        return base64.b64decode(value, validate=False)
    except (binascii.Error, ValueError) as exc:
        raise ApiError(f"image {index}: invalid base64: {exc}") from None


def _is_url(value: str) -> bool:
    return value.startswith(("http://", "https://"))


def _safe_url(url: str) -> str:
    """The URL without userinfo, query or fragment: safe to echo in errors and logs."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def fetch_url(value: Any, index: int, limits: Limits) -> bytes:
    if not isinstance(value, str) or not _is_url(value):
        raise ApiError(f"image {index}: url must start with http:// or https://")
    request = urllib.request.Request(value, headers={"User-Agent": "edgewatch"})
    try:
        with urllib.request.urlopen(request, timeout=URL_TIMEOUT_S) as response:
            data: bytes = response.read(limits.max_bytes + 1)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise ApiError(f"image {index}: cannot fetch {_safe_url(value)}: {reason}") from None
    if len(data) > limits.max_bytes:
        raise ImageTooLargeError(
            f"image {index}: {_safe_url(value)} is larger than api.max_image_bytes={limits.max_bytes}"
        )
    return data


def decode_bytes(data: bytes, index: int, limits: Limits) -> Image:
    """Encoded image bytes to BGR, refusing oversized pictures from their header, before decoding them."""
    if len(data) > limits.max_bytes:
        raise ImageTooLargeError(
            f"image {index}: {len(data)} bytes; the limit is api.max_image_bytes={limits.max_bytes}"
        )
    if not data:
        raise ApiError(f"image {index}: empty image data")
    _check_header_size(data, index, limits)
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if decoded is None:
        raise ApiError(f"image {index}: cannot decode {len(data)} bytes as an image (expected JPEG, PNG, BMP, ...)")
    _check_pixels(decoded.shape[1], decoded.shape[0], index, limits)
    return as_image(decoded)


def _check_header_size(data: bytes, index: int, limits: Limits) -> None:
    """Width x height from the file header (no pixel decoding), so a decompression bomb is never decoded."""
    try:
        with PILImage.open(io.BytesIO(data)) as picture:
            width, height = picture.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return  # not a format Pillow knows; OpenCV decides below
    except (PILImage.DecompressionBombWarning, PILImage.DecompressionBombError):
        raise ImageTooLargeError(
            f"image {index}: more pixels than api.max_image_pixels={limits.max_pixels}"
        ) from None
    _check_pixels(width, height, index, limits)


def _check_pixels(width: int, height: int, index: int, limits: Limits) -> None:
    if width * height > limits.max_pixels:
        raise ImageTooLargeError(
            f"image {index}: {width}x{height} = {width * height} pixels; the limit is "
            f"api.max_image_pixels={limits.max_pixels}"
        )
