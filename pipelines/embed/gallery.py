"""The match step: compare detections' embeddings with a folder of reference images, keep the best match.

An `embed` stage (pipelines/stages.py) leaves one float32 vector per parent in `data[<stage name>]`
(None where it did not run). `match_detections` reads that column and writes `data[<match name>]`: per
parent a dict {"name", "image", "similarity"} for the best reference image at or above the threshold,
else None. `best_match` picks the frame's single best one, for alerts ("a person like these appeared").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import supervision as sv
from pydantic import BaseModel, ConfigDict, Field

from pipelines.embed.cache import Embedder, EmbeddingCache, embed_files, list_images
from pipelines.embed.similarity import cosine
from pipelines.preprocess import Floats

log = logging.getLogger(__name__)

DEFAULT_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class GalleryOptions(BaseModel):
    """A folder of reference pictures and how close a detection must be to one of them to match."""

    model_config = ConfigDict(extra="forbid")

    folder: Path = Field(
        ..., description="Folder of reference images (not recursive); in a config file, relative to that file."
    )
    extensions: list[str] = Field(
        list(DEFAULT_EXTENSIONS), min_length=1, description="File name endings that count as images."
    )
    threshold: float = Field(
        0.9, ge=-1.0, le=1.0, description="Cosine similarity a detection needs to match a reference image."
    )
    embedding: str | None = Field(
        None, description="Name of the embed stage whose vectors are compared; left out under a stage's match:."
    )
    name: str = Field("match", min_length=1, description="Key of the match result in the detections' data.")
    cache_dir: Path | None = Field(
        None, description="Folder for the embedding cache (by file content); None embeds the gallery each load."
    )


@dataclass(frozen=True)
class Match:
    name: str
    image: str
    similarity: float

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "image": self.image, "similarity": round(self.similarity, 6)}


class Gallery:
    """Reference embeddings of a folder, computed once (or read from the cache) with the same embedder."""

    def __init__(self, options: GalleryOptions, embedder: Embedder, progress: bool = False) -> None:
        self.options = options
        self.embedder = embedder
        self.progress = progress
        self.paths: list[Path] = []
        self.vectors: Floats = np.zeros((0, 0), dtype=np.float32)
        self.reload()

    def reload(self) -> int:
        """Re-read the folder (new, changed and removed files); returns how many images were embedded now."""
        files = list_images(self.options.folder, self.options.extensions)
        cache = EmbeddingCache(self.options.cache_dir) if self.options.cache_dir is not None else None
        done = embed_files(self.embedder, files, cache, progress=self.progress, desc=f"gallery {self.options.folder}")
        self.paths, self.vectors = done.paths, done.vectors
        if not self.paths:
            log.warning("gallery %s has no readable images; nothing will match", self.options.folder)
        log.info("gallery %s: %d images (%d embedded now)", self.options.folder, len(self.paths), done.computed)
        return done.computed

    def __len__(self) -> int:
        return len(self.paths)

    def best(self, embeddings: npt.ArrayLike) -> list[Match | None]:
        """For each row of embeddings [N, D]: the most similar reference, or None below the threshold."""
        rows = np.asarray(embeddings, dtype=np.float32)
        embeddings = rows.reshape(len(rows), -1)
        if len(embeddings) == 0 or not self.paths:
            return [None] * len(embeddings)
        if embeddings.shape[1] != self.vectors.shape[1]:
            raise ValueError(
                f"gallery {self.options.folder}: embeddings have {embeddings.shape[1]} values, the gallery's "
                f"have {self.vectors.shape[1]}; the embed stage and the gallery must use the same model"
            )
        sims = cosine(embeddings, self.vectors)
        top = np.argmax(sims, axis=1)
        out: list[Match | None] = []
        for row, j in enumerate(top):
            similarity = float(sims[row, j])
            path = self.paths[int(j)]
            ok = similarity >= self.options.threshold
            out.append(Match(name=path.stem, image=str(path), similarity=similarity) if ok else None)
        return out


def match_detections(detections: sv.Detections, gallery: Gallery) -> sv.Detections:
    """Fill data[gallery.options.name] with one Match dict or None per detection; returns the detections."""
    key = gallery.options.embedding
    if key is None:
        raise ValueError(f"gallery {gallery.options.folder}: options.embedding names no embed stage to compare")
    column = detections.data.get(key)
    result = np.full(len(detections), None, dtype=object)
    if column is not None and len(detections):
        rows = [i for i, v in enumerate(column) if v is not None]
        if rows:
            matches = gallery.best(np.stack([np.asarray(column[i], dtype=np.float32).ravel() for i in rows]))
            for i, found in zip(rows, matches, strict=True):
                result[i] = found.as_dict() if found is not None else None
    elif column is None and len(detections):
        log.debug("match %s: detections carry no %r embeddings", gallery.options.name, key)
    detections.data[gallery.options.name] = result
    return detections


def best_match(detections: sv.Detections, name: str = "match") -> dict[str, object] | None:
    """The single best match in a frame with the index of its detection, or None when nothing matched."""
    column = detections.data.get(name)
    if column is None:
        return None
    found = [(i, m) for i, m in enumerate(column) if m is not None]
    if not found:
        return None
    index, match = max(found, key=lambda item: item[1]["similarity"])
    return {"detection": index, **match}
