"""Images of inference API requests: Roboflow's {"type", "value"} references to BGR arrays, within limits."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from daemon.web.models import ApiError
from pipelines.imagefile import ImageRefusedError, TooManyPixelsError, decode_image
from pipelines.preprocess import Image, as_image


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


def ref_kind(ref: dict[str, Any], index: int) -> str:
    """"base64" or "url"; a 400 naming the type for anything else."""
    kind = str(ref.get("type") or "base64").lower()
    if kind not in ("base64", "url"):
        raise ApiError(f"image {index}: type {kind!r} is not supported; use base64 or url")
    return kind


def decode_ref(ref: dict[str, Any], index: int, limits: Limits) -> Image:
    """One base64 reference to an HxWx3 uint8 BGR array; blocking (run it off the event loop).

    URL references are fetched first (daemon/web/fetch.py) and their bytes given to decode_bytes().
    """
    if ref_kind(ref, index) == "url":
        raise ApiError(f"image {index}: a URL image must be fetched before it is decoded")
    return decode_bytes(_b64(ref.get("value"), index, limits), index, limits)


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
    except ImageRefusedError as exc:  # a refused format or an undecodable picture: 400, as Roboflow's server
        raise ApiError(str(exc)) from None
