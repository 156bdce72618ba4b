"""Embedding models: generic ONNX image embedders (re-ID, CNN features) and CLIP image + text encoders."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import ClassVar, Literal

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image as PilImage
from pydantic import Field

from pipelines.crops import batches
from pipelines.embed.cache import file_sha256
from pipelines.embed.tokenizer import CONTEXT_LENGTH, ClipTokenizer
from pipelines.models import Model, ModelOptions
from pipelines.preprocess import Floats, Image, as_image, hwc_to_tensor
from pipelines.runtime.base import ModelLoadError, Tensor, TensorInfo
from pipelines.runtime.onnx import Runtime

log = logging.getLogger(__name__)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_CV_INTERPOLATION = {"linear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA, "cubic": cv2.INTER_CUBIC}


class EmbedOptions(ModelOptions):
    """How crops become the image encoder's input tensor, and how its output becomes an embedding."""

    layout: Literal["auto", "nchw", "nhwc"] = Field(
        "auto", description="Input tensor layout; auto reads it from the model (3 channels at axis 1 or 3)."
    )
    input_size: tuple[int, int] | None = Field(
        None, description="Input (width, height); None reads it from the model, needed when that is dynamic."
    )
    channel_order: Literal["bgr", "rgb"] = Field("bgr", description="Channel order the model expects.")
    resize: Literal["stretch", "center_crop"] = Field(
        "stretch",
        description="stretch: resize straight to the input size; center_crop: scale the short side to fit, "
        "then cut the centre (CLIP).",
    )
    interpolation: Literal["linear", "area", "cubic", "pil_bicubic"] = Field(
        "linear", description="Resampling; pil_bicubic is Pillow's antialiased bicubic, which CLIP uses."
    )
    scale: float = Field(1.0, gt=0, description="Pixel values (0..255) are multiplied by this first.")
    mean: tuple[float, float, float] = Field((0.0, 0.0, 0.0), description="Subtracted after scaling.")
    std: tuple[float, float, float] = Field((1.0, 1.0, 1.0), description="Divisor after the mean.")
    output: str | None = Field(
        None, description="Output tensor holding the embedding; None: the first named *embeds, else the first."
    )
    normalize: bool = Field(True, description="L2-normalise embeddings so that a dot product is the cosine.")
    batch_size: int = Field(16, ge=1, description="Crops per runtime call.")


class ClipOptions(EmbedOptions):
    """A CLIP (OpenAI or OpenCLIP ONNX export) pair: `path` is the image encoder, `text_path` the text one."""

    channel_order: Literal["bgr", "rgb"] = Field("rgb", description="Channel order the model expects.")
    resize: Literal["stretch", "center_crop"] = Field(
        "center_crop", description="CLIP scales the short side to the input size and cuts the centre."
    )
    interpolation: Literal["linear", "area", "cubic", "pil_bicubic"] = Field(
        "pil_bicubic", description="Resampling; CLIP was trained with Pillow's bicubic."
    )
    scale: float = Field(1 / 255, gt=0, description="Pixel values (0..255) are multiplied by this first.")
    mean: tuple[float, float, float] = Field(CLIP_MEAN, description="CLIP's per-channel mean (RGB).")
    std: tuple[float, float, float] = Field(CLIP_STD, description="CLIP's per-channel std (RGB).")
    text_path: Path | None = Field(None, description="Text encoder .onnx; None allows image embeddings only.")
    tokenizer: Path | None = Field(
        None,
        description="tokenizer.json or OpenAI's bpe_simple_vocab_16e6.txt.gz; None looks for either beside text_path.",
    )
    context_length: int = Field(CONTEXT_LENGTH, ge=2, description="Token sequence length of the encoder.")
    text_output: str | None = Field(
        None, description="Text encoder output holding the embedding; None: the first *embeds, else the first."
    )


def l2_normalize(x: Floats) -> Floats:
    """Rows scaled to unit length; all-zero rows stay zero instead of becoming NaN."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.asarray(x / np.maximum(norms, 1e-12), dtype=np.float32)


def as_bgr(image: Image) -> Image:
    if image.ndim == 2:
        return as_image(cv2.cvtColor(image, cv2.COLOR_GRAY2BGR))
    if image.ndim == 3 and image.shape[2] == 4:
        return as_image(cv2.cvtColor(image, cv2.COLOR_BGRA2BGR))
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"expected an HxWx3 BGR image, got shape {image.shape}")
    return image


def _resize(image: Image, size_wh: tuple[int, int], interpolation: str) -> Image:
    if interpolation == "pil_bicubic":
        return np.asarray(PilImage.fromarray(image).resize(size_wh, PilImage.Resampling.BICUBIC))
    return as_image(cv2.resize(image, size_wh, interpolation=_CV_INTERPOLATION[interpolation]))


def fit_image(image: Image, size_wh: tuple[int, int], resize: str, interpolation: str) -> Image:
    """The image resized to exactly size_wh: stretched, or short side scaled then centre-cropped (CLIP)."""
    width, height = size_wh
    if resize == "stretch":
        return _resize(image, (width, height), interpolation)
    h, w = image.shape[:2]
    # torchvision's Resize(int) truncates the long side; matching it keeps us equal to CLIP's preprocess.
    if width / w < height / h:
        rh, rw = height, max(width, int(w * height / h))
    else:
        rh, rw = max(height, int(h * width / w)), width
    resized = _resize(image, (rw, rh), interpolation)
    y0, x0 = (rh - height) // 2, (rw - width) // 2
    return resized[y0 : y0 + height, x0 : x0 + width]


def preprocess(
    images: Sequence[Image], options: EmbedOptions, size_wh: tuple[int, int], layout: str, dtype: np.dtype[np.generic]
) -> Tensor:
    """BGR uint8 images -> one input batch in the model's layout and dtype.

    Only the resize is per image; scaling, mean/std, layout and dtype are done once on the stacked batch.
    """
    # resampling treats channels independently, so the RGB flip can wait for the batch
    fitted = [fit_image(as_bgr(image), size_wh, options.resize, options.interpolation) for image in images]
    return hwc_to_tensor(
        np.stack(fitted), "nchw" if layout == "nchw" else "nhwc", dtype,
        scale=options.scale, mean=options.mean, std=options.std, rgb=options.channel_order == "rgb",
    )


def _input_geometry(info: TensorInfo, options: EmbedOptions, stage: str) -> tuple[str, tuple[int, int]]:
    shape = info.shape
    if len(shape) != 4:
        raise ModelLoadError(f"{stage}: input {info.name!r} should be 4-D (N,C,H,W or N,H,W,C), got {shape}")
    layout: str = options.layout
    if layout == "auto":
        layout = "nchw" if shape[1] in (1, 3) else "nhwc" if shape[3] in (1, 3) else ""
        if not layout:
            raise ModelLoadError(f"{stage}: cannot tell the layout of input shape {shape}; set layout")
    channels = shape[1] if layout == "nchw" else shape[3]
    if isinstance(channels, int) and channels != 3:
        raise ModelLoadError(f"{stage}: input {info.name!r} {shape} has {channels} channels as {layout}; expected 3")
    if options.input_size is not None:
        return layout, options.input_size
    h, w = (shape[2], shape[3]) if layout == "nchw" else (shape[1], shape[2])
    if not isinstance(h, int) or not isinstance(w, int) or h <= 0 or w <= 0:
        raise ModelLoadError(f"{stage}: input {info.name!r} has dynamic size {shape}; set input_size")
    return layout, (w, h)


def _output_index(outputs: Sequence[TensorInfo], name: str | None, stage: str) -> int:
    """The named output; by default the first one called *embeds (HF/optimum CLIP exports), else the first."""
    names = [o.name for o in outputs]
    if name is None:
        return next((i for i, n in enumerate(names) if n.endswith("embeds")), 0)
    if name not in names:
        raise ModelLoadError(f"{stage}: no output named {name!r}; the model has {names}")
    return names.index(name)


class ImageEmbedder(Model):
    """Any ONNX image embedder: crops (BGR uint8) -> L2-normalised float32 [N, D]."""

    kind: ClassVar[Literal["embed"]] = "embed"
    Options: ClassVar[type[ModelOptions]] = EmbedOptions

    def __init__(self, options: ModelOptions, name: str = "") -> None:
        super().__init__(options, name)
        if not isinstance(options, EmbedOptions):
            raise TypeError(f"{type(self).__name__} needs {EmbedOptions.__name__}, got {type(options).__name__}")
        self.opts: EmbedOptions = options
        self.runtime = Runtime(options.path, options.runtime, stage=self.name)
        self.input = self.runtime.inputs[0]
        self.layout, self.input_size = _input_geometry(self.input, options, self.name)
        self.output_index = _output_index(self.runtime.outputs, options.output, self.name)
        self.images_embedded = 0

    @cached_property
    def identity(self) -> str:
        """Content hash of the model file(s) and preprocessing: the embedding cache key for this model."""
        settings = self.opts.model_dump(mode="json", exclude={"path", "runtime", "batch_size", "type"})
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
        for path in self._identity_files():
            digest.update(file_sha256(path).encode())
        return digest.hexdigest()[:32]

    def _identity_files(self) -> list[Path]:
        return [Path(self.opts.path)]

    def embed(self, crops: Sequence[Image]) -> Floats:
        """Embeddings float32 [N, D] for BGR crops, one runtime call per batch_size crops."""
        if len(crops) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self._run(crops)
        self.images_embedded += len(crops)
        return l2_normalize(vectors) if self.opts.normalize else vectors

    def _run(self, crops: Sequence[Image]) -> Floats:
        chunks = []
        for chunk in batches(crops, self.opts.batch_size):
            tensor = preprocess(chunk, self.opts, self.input_size, self.layout, self.input.dtype)
            out = self.runtime.run({self.input.name: tensor})[self.output_index]
            chunks.append(np.asarray(out, dtype=np.float32).reshape(len(chunk), -1))
        return np.concatenate(chunks)

    @cached_property
    def dim(self) -> int:
        shape = self.runtime.outputs[self.output_index].shape
        known = [d for d in shape[1:] if isinstance(d, int)]
        if len(known) != len(shape) - 1:
            return int(self._run([np.zeros((8, 8, 3), np.uint8)]).shape[1])
        return int(np.prod(known))


def find_tokenizer(options: ClipOptions) -> Path:
    """The configured tokenizer file, or a tokenizer.json / bpe_simple_vocab_16e6.txt.gz beside text_path."""
    if options.tokenizer is not None:
        return Path(options.tokenizer)
    folder = Path(options.text_path or options.path).parent
    for candidate in ("tokenizer.json", "bpe_simple_vocab_16e6.txt.gz", "bpe_simple_vocab_16e6.txt"):
        if (folder / candidate).is_file():
            return folder / candidate
    raise ModelLoadError(
        f"no tokenizer configured and none beside {options.text_path}: expected tokenizer.json or "
        "bpe_simple_vocab_16e6.txt.gz there, or set tokenizer"
    )


class ClipModel(ImageEmbedder):
    """CLIP: the image encoder embeds crops (CLIP preprocessing), the text encoder embeds prompts."""

    Options: ClassVar[type[ModelOptions]] = ClipOptions

    def __init__(self, options: ModelOptions, name: str = "") -> None:
        if not isinstance(options, ClipOptions):
            raise TypeError(f"ClipModel needs {ClipOptions.__name__}, got {type(options).__name__}")
        super().__init__(options, name)
        self.clip_opts: ClipOptions = options
        self.text_runtime: Runtime | None = None
        self.tokenizer: ClipTokenizer | None = None
        if options.text_path is not None:
            self.text_runtime = Runtime(options.text_path, options.runtime, stage=f"{self.name} text")
            self.tokenizer = ClipTokenizer(find_tokenizer(options), options.context_length)
            self.text_output_index = _output_index(self.text_runtime.outputs, options.text_output, self.name)

    def _identity_files(self) -> list[Path]:
        files = [Path(self.opts.path)]
        return files + ([Path(self.clip_opts.text_path)] if self.clip_opts.text_path else [])

    def tokenize(self, texts: Sequence[str]) -> npt.NDArray[np.int64]:
        if self.tokenizer is None:
            raise ValueError(f"{self.name}: text embeddings need text_path (a CLIP text encoder .onnx)")
        return self.tokenizer.encode(texts)

    def _text_feeds(self, ids: npt.NDArray[np.int64]) -> dict[str, Tensor]:
        assert self.text_runtime is not None and self.tokenizer is not None
        feeds: dict[str, Tensor] = {}
        for info in self.text_runtime.inputs:
            values = self.tokenizer.attention_mask(ids) if "mask" in info.name.lower() else ids
            feeds[info.name] = values.astype(info.dtype)
        return feeds

    def embed_text(self, texts: Sequence[str]) -> Floats:
        """Embeddings float32 [N, D] for texts (L2-normalised unless normalize is off)."""
        ids = self.tokenize(list(texts))
        if self.text_runtime is None or len(ids) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        chunks = []
        for start in range(0, len(ids), self.opts.batch_size):
            part = ids[start : start + self.opts.batch_size]
            out = self.text_runtime.run(self._text_feeds(part))[self.text_output_index]
            chunks.append(np.asarray(out, dtype=np.float32).reshape(len(part), -1))
        vectors = np.concatenate(chunks)
        return l2_normalize(vectors) if self.opts.normalize else vectors
