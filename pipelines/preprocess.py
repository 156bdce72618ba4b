"""Image -> model input: letterbox or resize, channel order, scale, mean/std, NCHW batch; and the way back."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeAlias, cast

import cv2
import numpy as np
import numpy.typing as npt

from pipelines.imagefile import DEFAULT_MAX_PIXELS, read_image_file

Placement = Literal["top_left", "center", "stretch"]
ChannelOrder = Literal["bgr", "rgb"]
Image: TypeAlias = npt.NDArray[np.uint8]  # a picture or crop: H x W x 3 BGR (H x W grey, H x W x 4 BGRA on input)
Floats: TypeAlias = npt.NDArray[np.float32]


def as_image(mat: cv2.typing.MatLike) -> Image:
    """An OpenCV result on a uint8 picture, typed as one: cv2's stubs give every result as any numeric array."""
    return cast(Image, mat)


ImageArg: TypeAlias = "Image | str | Path"  # a decoded picture, or the path of an image file


def read_image(image: ImageArg, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image:
    """A BGR picture from an array (returned as is) or an image file; the error names the file.

    Files go through the bounded decoder (pipelines/imagefile.py): JPEG, PNG, BMP or WebP, at most
    `max_pixels`, checked from the header before decoding.
    """
    if isinstance(image, np.ndarray):
        return image
    try:
        return read_image_file(image, max_pixels)
    except OSError as exc:
        raise ValueError(f"cannot read image {image}: {exc.strerror or exc}") from None


@dataclass(frozen=True)
class Letterbox:
    """Where a source image landed in the model input: input_xy = source_xy * scale_xy + offset_xy."""

    scale_xy: tuple[float, float]
    offset_xy: tuple[float, float]
    source_wh: tuple[int, int]

    def points_to_source(self, points: npt.ArrayLike) -> Floats:
        """Points [..., 2] in model-input pixels -> source pixels (not clipped: key points may lie outside)."""
        pts = np.asarray(points, dtype=np.float32)
        mapped = (pts - np.asarray(self.offset_xy, np.float32)) / np.asarray(self.scale_xy, np.float32)
        return np.asarray(mapped, np.float32)  # float32 already; numpy's stubs widen the division to float64

    def boxes_to_source(self, xyxy: npt.ArrayLike) -> Floats:
        """Boxes [N,4] in model-input pixels -> source pixels, clipped to the image."""
        boxes = self.points_to_source(np.asarray(xyxy, np.float32).reshape(-1, 2, 2)).reshape(-1, 4)
        w, h = self.source_wh
        np.clip(boxes[:, 0::2], 0, w, out=boxes[:, 0::2])
        np.clip(boxes[:, 1::2], 0, h, out=boxes[:, 1::2])
        return boxes


def placement(source_wh: tuple[int, int], input_wh: tuple[int, int], mode: Placement) -> Letterbox:
    """The scale and offset that fit `source_wh` into `input_wh`: aspect kept (letterbox) or stretched."""
    (sw, sh), (iw, ih) = source_wh, input_wh
    if mode == "stretch":
        return Letterbox((iw / sw, ih / sh), (0.0, 0.0), source_wh)
    ratio = min(iw / sw, ih / sh)
    nw, nh = max(1, round(sw * ratio)), max(1, round(sh * ratio))
    ox, oy = ((iw - nw) // 2, (ih - nh) // 2) if mode == "center" else (0, 0)
    return Letterbox((nw / sw, nh / sh), (float(ox), float(oy)), source_wh)


def as_bgr(image: Image) -> Image:
    """A 3-channel uint8 view/copy of a grey, BGR or BGRA picture."""
    if image.ndim == 2:
        return as_image(cv2.cvtColor(image, cv2.COLOR_GRAY2BGR))
    if image.ndim == 3 and image.shape[2] == 4:
        return as_image(cv2.cvtColor(image, cv2.COLOR_BGRA2BGR))
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    raise ValueError(f"expected an image of shape [H,W], [H,W,3] or [H,W,4]; got {image.shape}")


def letterbox_into(image: Image, canvas: Image, box: Letterbox) -> None:
    """Resize `image` into `canvas` ([H,W,3] uint8, already filled with the pad value) where `box` says."""
    ox, oy = int(box.offset_xy[0]), int(box.offset_xy[1])
    ch, cw = canvas.shape[:2]
    nw = min(cw - ox, round(box.source_wh[0] * box.scale_xy[0]))
    nh = min(ch - oy, round(box.source_wh[1] * box.scale_xy[1]))
    src = as_bgr(image)
    view = canvas[oy : oy + nh, ox : ox + nw]
    if (nw, nh) == (src.shape[1], src.shape[0]):
        view[...] = src
        return
    # LINEAR is what YOLO-family training pipelines resize with; results match their reference decoders.
    resized = cv2.resize(src, (nw, nh), dst=view, interpolation=cv2.INTER_LINEAR)
    if not np.may_share_memory(resized, canvas):
        view[...] = resized


def letterbox_batch(
    images: Sequence[Image], input_wh: tuple[int, int], mode: Placement, pad_value: int = 0
) -> tuple[Image, list[Letterbox]]:
    """Place every image in an [N,H,W,3] uint8 batch of the model's input size."""
    iw, ih = input_wh
    batch = np.full((len(images), ih, iw, 3), pad_value, dtype=np.uint8)
    boxes = []
    for index, image in enumerate(images):
        box = placement((image.shape[1], image.shape[0]), input_wh, mode)
        letterbox_into(image, batch[index], box)
        boxes.append(box)
    return batch, boxes


class Normalizer:
    """uint8 [N,H,W,3] BGR -> float [N,3,H,W]: channel order, then (x * scale - mean) / std per channel.

    mean and std are in the model's channel order and in units after `scale` (e.g. ImageNet's 0.485 with
    scale 1/255, or 103.53 with scale 1).
    """

    def __init__(
        self,
        channel_order: ChannelOrder = "bgr",
        scale: float = 1.0,
        mean: Sequence[float] = (0.0, 0.0, 0.0),
        std: Sequence[float] = (1.0, 1.0, 1.0),
        dtype: npt.DTypeLike = np.float32,
    ) -> None:
        self.rgb = channel_order == "rgb"
        std_arr = np.asarray(std, dtype=np.float64)
        if std_arr.shape != (3,) or np.any(std_arr == 0):
            raise ValueError(f"std must be 3 non-zero numbers; got {list(std)}")
        # One multiply-add per pixel: x * (scale / std) + (-mean / std).
        self.mul = (scale / std_arr).astype(np.float32).reshape(1, 3, 1, 1)
        self.add = (-np.asarray(mean, dtype=np.float64) / std_arr).astype(np.float32).reshape(1, 3, 1, 1)
        self.identity = bool(np.all(self.mul == 1) and np.all(self.add == 0))
        self.dtype = np.dtype(dtype)

    def __call__(self, batch_hwc: Image) -> npt.NDArray[np.floating]:
        src = batch_hwc[..., ::-1] if self.rgb else batch_hwc
        blob = src.transpose(0, 3, 1, 2).astype(np.float32)
        if not self.identity:
            np.multiply(blob, self.mul, out=blob)
            np.add(blob, self.add, out=blob)
        return blob if self.dtype == np.float32 else blob.astype(self.dtype)


def multiple_of(value: float, base: int = 32) -> int:
    """`value` rounded to the nearest positive multiple of `base` (networks with strided downsampling)."""
    return max(base, round(value / base) * base)


def hwc_to_tensor(
    batch_hwc: Image,
    layout: Literal["nchw", "nhwc"],
    dtype: npt.DTypeLike,
    *,
    scale: float = 1.0,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    rgb: bool = False,
) -> npt.NDArray[np.generic]:
    """[N,H,W,C] crops (uint8) -> one model tensor: channel flip, layout, then float32 (x * scale - mean) / std.

    Done once on the stacked batch rather than per crop. Every element goes through the same float32 steps
    whatever the batch (identity steps skipped), so a crop gives bit-identical values alone or in a batch.
    mean and std are per channel, in the model's channel order.
    """
    src = batch_hwc[..., ::-1] if rgb else batch_hwc
    if layout == "nchw":
        src = src.transpose(0, 3, 1, 2)
    target = np.dtype(dtype)
    channel_axis = 1 if layout == "nchw" else 3
    if src.dtype == np.uint8 and target.kind == "f" and target.itemsize < 4:
        # numpy converts to float16 in software (~6x slower than to float32): look the 256 values up instead
        channels = src.shape[channel_axis]
        levels = np.tile(np.arange(256, dtype=np.float32), (channels, 1))
        tables = _normalise(levels, scale, mean, std, (-1, 1)).astype(target)
        out = np.empty(src.shape, dtype=target)
        for c in range(channels):
            index = (slice(None), c) if layout == "nchw" else (Ellipsis, c)
            out[index] = np.take(tables[c], src[index])
        return out
    per_channel = (1, -1, 1, 1) if layout == "nchw" else (1, 1, 1, -1)
    blob = _normalise(np.ascontiguousarray(src, dtype=np.float32), scale, mean, std, per_channel)
    return blob if target == np.float32 else blob.astype(target)


def _normalise(
    blob: Floats, scale: float, mean: Sequence[float] | None, std: Sequence[float] | None,
    per_channel: tuple[int, ...],
) -> Floats:
    """(blob * scale - mean) / std in place, in float32, skipping the steps that are exact identities."""
    if scale != 1.0:
        blob *= np.float32(scale)
    if mean is not None and any(float(m) != 0.0 for m in mean):
        blob -= np.asarray(mean, dtype=np.float32).reshape(per_channel)
    if std is not None and any(float(v) != 1.0 for v in std):
        blob /= np.asarray(std, dtype=np.float32).reshape(per_channel)
    return blob
