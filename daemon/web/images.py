"""Images of inference API requests: Roboflow's {"type", "value"} references to BGR arrays, within limits."""

from __future__ import annotations

import base64
import binascii
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from daemon.web.models import ApiError
from pipelines.imagefile import ImageRefusedError, TooManyPixelsError, UnsupportedFormatError, decode_image
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
    """Encoded image bytes to BGR through the bounded decoder: allowed formats only, pixels checked before decoding."""
    if len(data) > limits.max_bytes:
        raise ImageTooLargeError(
            f"image {index}: {len(data)} bytes; the limit is api.max_image_bytes={limits.max_bytes}"
        )
    try:
        return as_image(decode_image(data, limits.max_pixels, f"image {index}"))
    except TooManyPixelsError as exc:
        raise ImageTooLargeError(f"{exc} (api.max_image_pixels)") from None
    except UnsupportedFormatError as exc:
        raise ApiError(str(exc), 415) from None
    except ImageRefusedError as exc:
        raise ApiError(str(exc)) from None
