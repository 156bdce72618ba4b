"""Text recognisers on crops: the PP-OCR CTC recogniser (default) and an optional tesseract engine."""

from __future__ import annotations

import importlib.util
import logging
import math
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar, Literal

import cv2
import numpy as np
import numpy.typing as npt
from pydantic import Field, field_validator

from pipelines.models import Model, ModelOptions
from pipelines.preprocess import Image, as_image
from pipelines.runtime.base import InferenceError, ModelLoadError, model_label
from pipelines.runtime.inputs import check_input
from pipelines.runtime.open import open_runtime

log = logging.getLogger(__name__)

REC_MODEL_FILE = "ch_PP-OCRv4_rec_infer.onnx"
INPUT_HEIGHT = 48


def default_rec_model() -> Path:
    """The PP-OCRv4 recogniser shipped inside the installed rapidocr_onnxruntime package."""
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the default OCR model comes from the rapidocr_onnxruntime package, which is not installed "
            "(pip install --no-deps rapidocr_onnxruntime==1.4.4), or set `path` to a recogniser .onnx"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / REC_MODEL_FILE
    if not path.is_file():
        raise ModelLoadError(f"rapidocr_onnxruntime is installed but {path} is missing")
    return path


class CtcOcrOptions(ModelOptions):
    type: str = Field(default="ocr", description="Model type: ocr.")
    path: Path = Field(
        default_factory=default_rec_model,
        description="Recogniser .onnx; default: the PP-OCRv4 recogniser in the rapidocr_onnxruntime package.",
    )
    charset_file: Path | None = Field(
        default=None, description="Character table, one per line; default: the model metadata field 'character'."
    )
    max_width: int = Field(
        default=320, ge=INPUT_HEIGHT, description="Widest input in pixels; wider crops are squeezed."
    )
    bucket_widths: list[int] = Field(
        default_factory=lambda: [96, 160, 224, 320],
        description="Padded input widths; crops of one bucket run together (max_width is always a bucket).",
    )
    min_confidence: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Readings with a lower mean confidence come back with empty text."
    )
    allowed_characters: str | None = Field(
        default=None, description="Keep only these characters (after uppercasing), e.g. A-Z and 0-9 for plates."
    )
    uppercase: bool = Field(default=False, description="Uppercase the text before filtering.")

    @field_validator("bucket_widths")
    @classmethod
    def _positive(cls, widths: list[int]) -> list[int]:
        if not widths or min(widths) < 8:
            raise ValueError(f"bucket_widths must be a non-empty list of widths >= 8, got {widths}")
        return sorted(set(widths))


def character_table(lines: Sequence[str]) -> list[str]:
    """PP-OCR's table: index 0 is the CTC blank, then the charset, then a space."""
    return ["blank", *lines, " "]


def ctc_greedy(probs: npt.NDArray[np.generic], table: Sequence[str]) -> list[tuple[str, list[float]]]:
    """Greedy CTC over [N, T, C] probabilities: best class per step, repeats and blanks dropped."""
    best = probs.argmax(axis=2)
    conf = np.take_along_axis(probs, best[..., None], axis=2)[..., 0]
    changed = np.ones_like(best, dtype=bool)
    changed[:, 1:] = best[:, 1:] != best[:, :-1]
    keep = changed & (best != 0)
    lookup = np.asarray(table, dtype=object)
    return [
        ("".join(lookup[best[n, keep[n]]]), conf[n, keep[n]].astype(float).tolist()) for n in range(len(best))
    ]


class CtcOcr(Model):
    """PP-OCR style CTC recogniser: width-bucketed batches, greedy decode, per-character confidences."""

    kind: ClassVar[Literal["ocr"]] = "ocr"
    Options: ClassVar[type[ModelOptions]] = CtcOcrOptions

    def __init__(self, options: ModelOptions, name: str = "") -> None:
        if not isinstance(options, CtcOcrOptions):
            options = CtcOcrOptions.model_validate(options.model_dump())
        super().__init__(options, name)
        self.opts = options
        self.runtime = open_runtime(options.path, options.runtime, stage=self.name)
        self.input = self.runtime.inputs[0]
        self._check_input()
        self.table = character_table(self._charset())
        classes = self.runtime.outputs[0].shape[-1]
        if isinstance(classes, int) and classes != len(self.table):
            raise self._fail(f"charset gives {len(self.table)} classes but the model outputs {classes}")
        self.buckets = sorted({w for w in options.bucket_widths if w < options.max_width} | {options.max_width})

    def _fail(self, message: str) -> ModelLoadError:
        return ModelLoadError(f"{model_label(self.name, Path(self.opts.path))}: {message}")

    def _check_input(self) -> None:
        """The shared rank/channel/dtype check, plus the recogniser's fixed line height."""
        check_input(self.runtime, "ocr")
        height = self.input.shape[2]
        if isinstance(height, int) and height != INPUT_HEIGHT:
            raise self._fail(f"recogniser input {self.input.name!r} has shape {self.input.shape}; expected [N,3,48,W]")

    def _charset(self) -> list[str]:
        if self.opts.charset_file is not None:
            try:
                text = Path(self.opts.charset_file).read_text(encoding="utf-8")
            except OSError as exc:
                raise self._fail(f"charset_file: {exc}") from exc
            return [line.rstrip("\r\n") for line in text.splitlines()]
        metadata = self.runtime.metadata
        if "character" not in metadata:
            raise self._fail("the model has no 'character' metadata field: set charset_file")
        return metadata["character"].splitlines()

    def width_of(self, crop: Image) -> int:
        """Input width for a crop: its proportions at height 48, capped at max_width."""
        h, w = crop.shape[:2]
        return min(max(math.ceil(INPUT_HEIGHT * w / max(h, 1)), 1), self.opts.max_width)

    def bucket_of(self, width: int) -> int:
        return next(b for b in self.buckets if b >= width)

    def preprocess(self, crops: Sequence[Image], bucket: int) -> npt.NDArray[np.floating]:
        """[N,3,48,bucket] float input: resized to its own width, normalised, zero (mid-grey) padded right."""
        batch = np.zeros((len(crops), 3, INPUT_HEIGHT, bucket), dtype=np.float32)
        for i, crop in enumerate(crops):
            if crop.ndim == 2:
                crop = as_image(cv2.cvtColor(crop, cv2.COLOR_GRAY2BGR))
            width = self.width_of(crop)
            resized = cv2.resize(crop[..., :3], (width, INPUT_HEIGHT), interpolation=cv2.INTER_LINEAR)
            batch[i, :, :, :width] = resized.transpose(2, 0, 1) * (2.0 / 255.0) - 1.0
        return batch.astype(self.input.dtype, copy=False)

    def read(self, crops: Sequence[Image]) -> list[dict[str, object]]:
        """One {"text", "confidence", "char_confidences"} per crop; one runtime call per width bucket."""
        for i, crop in enumerate(crops):
            if crop.size == 0:
                raise ValueError(f"stage {self.name!r}: crop {i} is empty ({crop.shape})")
        groups: dict[int, list[int]] = {}
        for i, crop in enumerate(crops):
            groups.setdefault(self.bucket_of(self.width_of(crop)), []).append(i)
        results: list[dict[str, object]] = [{} for _ in crops]
        for bucket, members in groups.items():
            probs = self.runtime.run({self.input.name: self.preprocess([crops[i] for i in members], bucket)})[0]
            for i, (text, confs) in zip(members, ctc_greedy(np.asarray(probs), self.table), strict=True):
                results[i] = finish_reading(text, confs, self.opts)
        return results


def finish_reading(
    text: str, confs: Sequence[float], options: CtcOcrOptions | TesseractOptions
) -> dict[str, object]:
    """Apply uppercase, the allowed-character filter and min_confidence to one decoded reading."""
    if options.uppercase:
        text = text.upper()
    allowed = options.allowed_characters
    pairs = [(c, p) for c, p in zip(text, confs, strict=True) if allowed is None or c in allowed]
    text = "".join(c for c, _ in pairs)
    char_confidences = [float(p) for _, p in pairs]
    confidence = float(np.mean(char_confidences)) if char_confidences else 0.0
    if confidence < options.min_confidence:
        text, char_confidences = "", []
    return {"text": text, "confidence": confidence, "char_confidences": char_confidences}


class TesseractOptions(ModelOptions):
    type: str = Field(default="tesseract", description="Model type: tesseract.")
    path: Path = Field(default=Path("tesseract"), description="The tesseract binary: a name on PATH or a full path.")
    psm: int = Field(default=7, ge=0, le=13, description="Page segmentation mode; 7 treats the crop as one text line.")
    lang: str = Field(default="eng", description="Tesseract language(s), e.g. eng or eng+deu.")
    allowed_characters: str | None = Field(
        default=None, description="Whitelist passed to tesseract (tessedit_char_whitelist) and applied to its output."
    )
    uppercase: bool = Field(default=False, description="Uppercase the text before filtering.")
    min_confidence: float = Field(
        default=0.0, ge=0.0, le=1.0, description="Readings with a lower mean confidence come back with empty text."
    )
    timeout_s: float = Field(default=10.0, gt=0, description="Longest time one tesseract call may take.")


class TesseractOcr(Model):
    """The tesseract command-line engine, one process per crop; reads clean printed text, not plates."""

    kind: ClassVar[Literal["ocr"]] = "ocr"
    Options: ClassVar[type[ModelOptions]] = TesseractOptions

    def __init__(self, options: ModelOptions, name: str = "") -> None:
        if not isinstance(options, TesseractOptions):
            options = TesseractOptions.model_validate(options.model_dump())
        super().__init__(options, name)
        self.opts = options
        binary = shutil.which(str(options.path))
        if binary is None:
            raise ModelLoadError(
                f"stage {self.name!r}: tesseract binary {str(options.path)!r} not found; install the "
                "tesseract-ocr package or set `path` to the binary"
            )
        self.binary = binary

    def command(self) -> list[str]:
        cmd = [self.binary, "stdin", "stdout", "--psm", str(self.opts.psm), "-l", self.opts.lang]
        if self.opts.allowed_characters:
            cmd += ["-c", f"tessedit_char_whitelist={self.opts.allowed_characters}"]
        return [*cmd, "tsv"]

    def read(self, crops: Sequence[Image]) -> list[dict[str, object]]:
        return [self._read_one(i, crop) for i, crop in enumerate(crops)]

    def _read_one(self, index: int, crop: Image) -> dict[str, object]:
        ok, png = cv2.imencode(".png", crop)
        if not ok:
            raise ValueError(f"stage {self.name!r}: crop {index} {crop.shape} cannot be encoded")
        try:
            done = subprocess.run(
                self.command(), input=png.tobytes(), capture_output=True, timeout=self.opts.timeout_s, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise InferenceError(f"stage {self.name!r}: tesseract took over {self.opts.timeout_s}s") from exc
        if done.returncode != 0:
            raise InferenceError(
                f"stage {self.name!r}: tesseract exited {done.returncode}: {done.stderr.decode(errors='replace')}"
            )
        text, confs = parse_tsv(done.stdout.decode("utf-8", errors="replace"))
        return finish_reading(text, confs, self.opts)


def parse_tsv(tsv: str) -> tuple[str, list[float]]:
    """Words of tesseract's TSV output joined by spaces, each character with its word's confidence (0..1)."""
    lines = tsv.splitlines()
    if not lines:
        return "", []
    header = lines[0].split("\t")
    col_text, col_conf = header.index("text"), header.index("conf")
    text, confs = "", list[float]()
    for line in lines[1:]:
        cells = line.split("\t")
        if len(cells) <= col_text or not cells[col_text].strip() or float(cells[col_conf]) < 0:
            continue
        word, conf = cells[col_text].strip(), float(cells[col_conf]) / 100.0
        if text:
            text, confs = text + " ", [*confs, conf]
        text, confs = text + word, confs + [conf] * len(word)
    return text, confs
