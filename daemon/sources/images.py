"""ImagesSource: the image files of a folder, one frame each, in a stable order; unreadable ones are skipped."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from daemon.sources.base import Source, SourceClosed, SourceError, SourceOptions
from pipelines.imagefile import DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_PIXELS, ImageRefusedError, read_image_file
from pipelines.preprocess import Image, as_image

log = logging.getLogger(__name__)

# the formats the bounded decoder accepts (pipelines/imagefile.py); others are skipped with the reason
DEFAULT_EXTS = ["jpg", "jpeg", "png", "bmp", "webp"]


def _natural_key(path: Path) -> list[str | int]:
    """img2 before img10: digit runs compare as numbers."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.as_posix())]


class ImagesOptions(SourceOptions):
    folder: str = Field(..., description="Folder holding the images.")
    image_ext: str | list[str] = Field(
        default_factory=lambda: list(DEFAULT_EXTS),
        description="Extension(s) to take, with or without the dot, case-insensitive (e.g. jpg or [png, jpg]).",
    )
    sort: Literal["natural", "name", "none"] = Field(
        "natural",
        description="Order: natural (img2 before img10), name (plain string order) or none (as listed).",
    )
    recursive: bool = Field(False, description="Also take images from sub-folders.")
    loop: bool = Field(False, description="Start again with the first image after the last instead of ending.")
    max_pixels: int = Field(
        DEFAULT_MAX_PIXELS, ge=1, description="Largest image (width x height) decoded; bigger ones are skipped, "
        "checked from the file header before decoding.",
    )
    max_file_bytes: int = Field(DEFAULT_MAX_FILE_BYTES, ge=1, description="Largest image file read.")

    @field_validator("image_ext")
    @classmethod
    def _normalise_ext(cls, value: str | list[str]) -> list[str]:
        items = [value] if isinstance(value, str) else value
        exts = [item.strip().lstrip(".").lower() for item in items]
        if not exts or not all(exts):
            raise ValueError(f"expected one or more non-empty extensions, got {value!r}")
        return exts

    @property
    def extensions(self) -> list[str]:
        return [self.image_ext] if isinstance(self.image_ext, str) else self.image_ext


class ImagesSource(Source):
    """One frame per image file; the `fps` cap paces the folder, since images have no time of their own.

    An image that cannot be decoded is logged with its file name, reported through `skipped` (the capture
    counts it in stats.errors_by_reason["unreadable"]) and passed over; the others still come through.
    """

    live: ClassVar[bool] = False
    Options: ClassVar[type[SourceOptions]] = ImagesOptions

    def __init__(self, options: SourceOptions) -> None:
        super().__init__(options)
        assert isinstance(options, ImagesOptions)
        self.opts = options
        self.files: list[Path] = []
        self.current: Path | None = None  # the file the last frame came from
        self._next = 0
        self._good_in_pass = 0
        self._closed = False

    def describe(self) -> str:
        return f"images:{self.options.id} {self.opts.folder}"

    def list_files(self) -> list[Path]:
        folder = Path(self.opts.folder)
        if not folder.is_dir():
            raise SourceError(f"source {self.options.id}: image folder {folder} does not exist or is not a folder")
        suffixes = {"." + ext for ext in self.opts.extensions}
        candidates = folder.rglob("*") if self.opts.recursive else folder.iterdir()
        files = [p for p in candidates if p.suffix.lower() in suffixes and p.is_file()]
        if self.opts.sort == "natural":
            files.sort(key=lambda p: _natural_key(p.relative_to(folder)))
        elif self.opts.sort == "name":
            files.sort(key=lambda p: p.relative_to(folder).as_posix())
        return files

    def open(self) -> None:
        self.files = self.list_files()
        if not self.files:
            exts = ", ".join("." + ext for ext in self.opts.extensions)
            where = " or its sub-folders" if self.opts.recursive else ""
            raise SourceError(f"source {self.options.id}: no {exts} images in folder {self.opts.folder}{where}")
        self._next = 0
        self._good_in_pass = 0
        self._closed = False
        log.info("source %s: %d image(s) in %s", self.options.id, len(self.files), self.opts.folder)

    def read(self) -> tuple[Image, float | None] | None:
        while True:
            if self._closed:
                raise SourceClosed(f"source {self.options.id}: closed")
            if self._next >= len(self.files):
                if not self.opts.loop:
                    return None
                if self._good_in_pass == 0:
                    raise SourceError(f"source {self.options.id}: no readable image in {self.opts.folder}")
                self._next, self._good_in_pass = 0, 0
            path = self.files[self._next]
            self._next += 1
            try:
                image = read_image_file(path, self.opts.max_pixels, self.opts.max_file_bytes)
            except (OSError, ImageRefusedError) as exc:
                # a bomb, a refused format or a broken file costs only itself: the folder goes on
                log.warning("source %s: cannot decode image %s; skipped: %s", self.options.id, path, exc)
                self.skipped("unreadable", f"cannot decode image {path}: {exc}")
                continue
            self._good_in_pass += 1
            self.current = path
            return as_image(image), None

    def close(self) -> None:
        self._closed = True  # from any thread: read() notices before its next file
