"""Bounded decoding of untrusted encoded images: an allow-list of formats, sized from their header before decoding.

OpenCV decodes many formats (Radiance HDR, PAM, TIFF, JPEG 2000, ...) and allocates the full picture before
anyone can look at its size, so a small file that claims a huge one (a decompression bomb) costs gigabytes.
Every path that decodes images it did not make (the API, the `images` folder source, read_image) goes through
decode_image(): the file's magic bytes must name an allowed format, Pillow (a dependency already) reads only
that format's header for width x height, and the pixel count is checked before cv2.imdecode runs.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import cast

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image as PILImage
from PIL import UnidentifiedImageError

# format -> the magic bytes both Pillow and OpenCV pick their decoder by, so the header read and the decode
# are of the same format (OpenCV tries BMP, HDR, JPEG, WebP, PNG, ... by signature; none of these overlap)
SIGNATURES: dict[str, tuple[bytes, ...]] = {
    "JPEG": (b"\xff\xd8\xff",),
    "PNG": (b"\x89PNG\r\n\x1a\n",),
    "BMP": (b"BM",),
    "WEBP": (b"RIFF",),  # plus b"WEBP" at offset 8, checked in sniff_format
}
ALLOWED = ", ".join(SIGNATURES)
# formats OpenCV would decode but that are refused, by their magic bytes: only to name them in the error
REFUSED: tuple[tuple[bytes, str], ...] = (
    (b"II*\0", "TIFF"),
    (b"MM\0*", "TIFF"),
    (b"#?RADIANCE", "Radiance HDR"),
    (b"#?RGBE", "Radiance HDR"),
    (b"P7", "PAM"),
    *((b"P%d" % i, "PNM") for i in range(1, 7)),
    (b"PF", "PFM"),
    (b"Pf", "PFM"),
    (b"\0\0\0\x0cjP  ", "JPEG 2000"),
    (b"\xffO\xffQ", "JPEG 2000"),
    (b"GIF8", "GIF"),
    (b"v/1\x01", "OpenEXR"),
    (b"Y\xa6j\x95", "Sun raster"),
)
DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_MAX_FILE_BYTES = 200_000_000


class ImageRefusedError(ValueError):
    """An image refused without decoding it; str() names the image and what was expected."""


class UnsupportedFormatError(ImageRefusedError):
    """Not one of the allowed formats."""


class TooManyPixelsError(ImageRefusedError):
    """The header claims more pixels than the limit (or the file is larger than its byte limit)."""


class UndecodableImageError(ImageRefusedError):
    """An allowed format whose header cannot be parsed or whose pixel data OpenCV cannot decode."""


def sniff_format(data: bytes) -> str | None:
    """The allowed format named by the data's magic bytes, or None."""
    for name, prefixes in SIGNATURES.items():
        if data.startswith(prefixes):
            if name == "WEBP" and data[8:12] != b"WEBP":
                continue
            return name
    return None


def _describe(data: bytes) -> str:
    """What the data is, for the error: a refused format's name, else its first bytes."""
    for magic, name in REFUSED:
        if data.startswith(magic):
            return f"format {name}"
    return f"data starting with {data[:8]!r}"


def header_size(data: bytes, name: str = "image") -> tuple[str, int, int]:
    """(format, width, height) from the header alone; UnsupportedFormatError for anything not allowed."""
    fmt = sniff_format(data)
    if fmt is None:
        raise UnsupportedFormatError(f"{name}: {_describe(data)} is not an accepted image format; expected {ALLOWED}")
    PILImage.init()  # registers the format plug-ins (idempotent)
    factory, _accept = PILImage.OPEN[fmt]
    try:
        # the plug-in's own opener parses the header only and skips Pillow's bomb check: the limit is ours
        with factory(io.BytesIO(data), "") as picture:
            width, height = picture.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, struct.error) as exc:
        raise UndecodableImageError(
            f"{name}: {fmt} header cannot be read ({exc}); expected a valid {ALLOWED} image"
        ) from None
    return fmt, int(width), int(height)


def check_pixels(width: int, height: int, max_pixels: int, name: str = "image") -> None:
    if width * height > max_pixels:
        raise TooManyPixelsError(f"{name}: {width}x{height} = {width * height} pixels; the limit is {max_pixels}")


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, name: str = "image") -> npt.NDArray[np.uint8]:
    """Encoded bytes of an allowed format to an HxWx3 BGR uint8 array, its size checked before decoding."""
    if not data:
        raise UndecodableImageError(f"{name}: empty image data")
    fmt, width, height = header_size(data, name)
    check_pixels(width, height, max_pixels, name)
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if decoded is None:
        raise UndecodableImageError(f"{name}: cannot decode {len(data)} bytes of {fmt} data")
    # EXIF rotation may swap the sides; the pixel count is the header's
    check_pixels(decoded.shape[1], decoded.shape[0], max_pixels, name)
    return cast(npt.NDArray[np.uint8], decoded)


def read_image_file(
    path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int = DEFAULT_MAX_FILE_BYTES
) -> npt.NDArray[np.uint8]:
    """An image file decoded with decode_image(); OSError if it cannot be read, ImageRefusedError if refused."""
    file = Path(path)
    with file.open("rb") as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise TooManyPixelsError(f"image {file}: larger than {max_bytes} bytes")
    return decode_image(data, max_pixels, f"image {file}")
