"""Similarity ranking: clip_compare over folders and the four subject/prompt pairings (clip_similarity)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Protocol, TypeAlias, runtime_checkable

import numpy as np
import numpy.typing as npt

from pipelines.embed.cache import Embedder, EmbeddingCache, embed_files, list_images
from pipelines.preprocess import Floats, ImageArg

log = logging.getLogger(__name__)

InputType = Literal["image", "text"]
ImageRef: TypeAlias = ImageArg


@runtime_checkable
class TextEncoder(Protocol):
    """A model that also embeds text (ClipModel with a text encoder); checked at run time by isinstance."""

    def embed_text(self, texts: Sequence[str]) -> Floats: ...


class TextEmbedder(Embedder, TextEncoder, Protocol):
    """Images and text into one embedding space."""


def cosine(a: npt.ArrayLike, b: npt.ArrayLike) -> Floats:
    """Cosine similarity [N, M] between rows of a [N, D] and b [M, D] (any scale)."""
    rows = np.atleast_2d(np.asarray(a, dtype=np.float32))
    cols = np.atleast_2d(np.asarray(b, dtype=np.float32))
    if rows.shape[1] != cols.shape[1]:
        raise ValueError(f"embedding sizes differ: {rows.shape[1]} vs {cols.shape[1]}")
    an = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    bn = cols / np.maximum(np.linalg.norm(cols, axis=1, keepdims=True), 1e-12)
    return np.asarray(an @ bn.T, dtype=np.float32)


def rank(paths: Sequence[Path], vectors: Floats, query: Floats) -> list[dict[str, object]]:
    """[{"image": path, "similarity": cosine}] best first; ties keep path order so output is stable."""
    if len(paths) == 0:
        return []
    sims = cosine(vectors, query.reshape(1, -1))[:, 0]
    order = sorted(range(len(paths)), key=lambda i: (-float(sims[i]), str(paths[i])))
    return [{"image": str(paths[i]), "similarity": float(sims[i])} for i in order]


def _cache(cache_dir: str | Path | None) -> EmbeddingCache | None:
    return EmbeddingCache(cache_dir) if cache_dir is not None else None



def _embed_images(model: Embedder, refs: Sequence[ImageRef], cache: EmbeddingCache | None) -> Floats:
    """Embeddings for paths (through the cache) and arrays (always computed), in the given order."""
    paths = [Path(r) for r in refs if not isinstance(r, np.ndarray)]
    by_path: dict[Path, Floats] = {}
    if paths:
        done = embed_files(model, paths, cache)
        if done.skipped:
            raise ValueError(f"cannot read image {done.skipped[0]}: missing or not a picture")
        by_path = dict(zip(done.paths, done.vectors, strict=True))
    arrays = [r for r in refs if isinstance(r, np.ndarray)]
    from_arrays = iter(model.embed(arrays)) if arrays else iter(())
    return np.stack([next(from_arrays) if isinstance(r, np.ndarray) else by_path[Path(r)] for r in refs])


def clip_compare(
    dir: str | Path = "",  # Roboflow's name for it, shadowing the builtin on purpose
    image_ext: str = ".png",
    target_image: ImageRef = "",
    *,
    model: Embedder,
    text: str | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = False,
) -> list[dict[str, object]]:
    """Rank every `*{image_ext}` image in `dir` by cosine similarity to `target_image`, best first.

    As Roboflow's `clip_compare(dir, image_ext, target_image)`, returning
    `[{"image": path, "similarity": cosine}]`. With `text` (a CLIP model) the images are ranked against
    the text embedding instead of a target image. `cache_dir` keeps embeddings by file-content hash so
    that a second run over the same gallery embeds only new files.
    """
    has_target = isinstance(target_image, np.ndarray) or bool(target_image)
    if has_target == (text is not None):
        raise ValueError("clip_compare takes exactly one of target_image and text")
    cache = _cache(cache_dir)
    files = list_images(dir, image_ext)
    gallery = embed_files(model, files, cache, progress=progress, desc=f"embedding {dir}")
    if text is not None:
        query = _text_model(model).embed_text([text])[0]
    else:
        query = _embed_images(model, [target_image], cache)[0]
    return rank(gallery.paths, gallery.vectors, query)


def _text_model(model: Embedder) -> TextEmbedder:
    if not isinstance(model, TextEncoder):
        raise ValueError(f"{type(model).__name__} embeds images only; text needs a CLIP text encoder")
    return model


def _embed(model: Embedder, items: Sequence[ImageRef], kind: InputType, cache: EmbeddingCache | None) -> Floats:
    if kind == "text":
        texts = [t for t in items if isinstance(t, str)]
        if len(texts) != len(items):
            raise ValueError("text inputs must be strings")
        return _text_model(model).embed_text(texts)
    if kind == "image":
        return _embed_images(model, list(items), cache)
    raise ValueError(f"input type must be 'image' or 'text', got {kind!r}")


def clip_similarity(
    subject: ImageRef,
    prompt: ImageRef | Sequence[ImageRef],
    subject_type: InputType = "image",
    prompt_type: InputType = "text",
    *,
    model: Embedder,
    cache_dir: str | Path | None = None,
) -> float | list[float]:
    """The SDK's `clip_compare(subject, prompt, subject_type, prompt_type)`: cosine similarities.

    All four pairings work: image-text (default), image-image, text-image, text-text. Images are paths
    or BGR arrays. A single prompt gives a float, a list of prompts a list in the same order.
    """
    prompts: list[ImageRef]
    if isinstance(prompt, str | Path | np.ndarray):
        single, prompts = True, [prompt]
    else:
        single, prompts = False, list(prompt)
    cache = _cache(cache_dir)
    subject_vec = _embed(model, [subject], subject_type, cache)
    if not prompts:
        return []
    prompt_vecs = _embed(model, prompts, prompt_type, cache)
    sims = [float(s) for s in cosine(subject_vec, prompt_vecs)[0]]
    return sims[0] if single else sims
