"""Embedding files through the on-disk cache: only new or changed content reaches the model."""

from __future__ import annotations

import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipelines.embed import cache as embed_cache
from pipelines.embed.cache import EmbeddingCache, embed_files, list_images
from pipelines.embed.encoders import ImageEmbedder
from pipelines.models import load_model
from tests.fixtures.embed_models import count_runs, image_encoder, solid


@pytest.fixture
def embedder(tmp_path: Path) -> ImageEmbedder:
    model = load_model({"type": "embed", "path": str(image_encoder(tmp_path / "enc.onnx")), "batch_size": 4})
    assert isinstance(model, ImageEmbedder)
    return model


def write(folder: Path, name: str, bgr: tuple[int, int, int]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    assert cv2.imwrite(str(path), solid(bgr))
    return path


def test_second_run_embeds_only_new_and_changed_files(embedder: ImageEmbedder, tmp_path: Path) -> None:
    gallery = tmp_path / "gallery"
    for i in range(6):
        write(gallery, f"{i}.png", (40 * i, 10, 200 - 30 * i))
    cache = EmbeddingCache(tmp_path / "cache")
    calls = count_runs(embedder)

    first = embed_files(embedder, list_images(gallery, ".png"), cache, batch_size=4)
    assert first.computed == 6 and embedder.images_embedded == 6 and sum(calls) == 6

    write(gallery, "new1.png", (1, 2, 3))
    write(gallery, "new2.png", (4, 5, 6))
    write(gallery, "0.png", (250, 250, 250))  # changed content under an old name
    calls.clear()
    second = embed_files(embedder, list_images(gallery, ".png"), cache, batch_size=4)
    assert second.computed == 3 and sum(calls) == 3
    assert len(second.paths) == 8

    calls.clear()
    third = embed_files(embedder, list_images(gallery, ".png"), cache)
    assert third.computed == 0 and calls == []
    fresh = embedder.embed([cv2.imread(str(p)) for p in third.paths])
    np.testing.assert_allclose(third.vectors, fresh, atol=1e-6)


def test_unchanged_files_are_not_read_again(
    embedder: ImageEmbedder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = [write(tmp_path / "g", f"{i}.png", (i, 80, 160)) for i in range(4)]
    for path in files:  # settled files: written a minute ago
        os.utime(path, ns=(time.time_ns() - 60 * 10**9,) * 2)
    cache = EmbeddingCache(tmp_path / "cache")
    hashed: list[Path] = []
    real = embed_cache.file_sha256

    def spy(path: Path) -> str:
        hashed.append(path)
        return real(path)

    monkeypatch.setattr(embed_cache, "file_sha256", spy)
    embed_files(embedder, files, cache)
    assert sorted(hashed) == files
    hashed.clear()
    write(tmp_path / "g", "2.png", (255, 255, 255))
    again = embed_files(embedder, files, cache)
    assert hashed == [files[2]] and again.computed == 1
    hashed.clear()
    embed_files(embedder, files, cache)
    assert hashed == [files[2]]  # modified just now: hashed until it has settled


def test_corrupt_cache_file_names_itself(tmp_path: Path) -> None:
    path = tmp_path / "broken.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(OSError, match=r"broken\.sqlite"):
        EmbeddingCache(path)


def test_identical_content_is_embedded_once(embedder: ImageEmbedder, tmp_path: Path) -> None:
    a = write(tmp_path / "g", "a.png", (9, 9, 9))
    b = tmp_path / "g" / "b.png"
    b.write_bytes(a.read_bytes())
    done = embed_files(embedder, [a, b])
    assert done.computed == 1 and done.paths == [a, b]
    np.testing.assert_array_equal(done.vectors[0], done.vectors[1])


def test_cache_is_per_model_identity(embedder: ImageEmbedder, tmp_path: Path) -> None:
    files = [write(tmp_path / "g", f"{i}.png", (i, 50, 100)) for i in range(3)]
    cache = EmbeddingCache(tmp_path / "cache" / "shared.sqlite")
    embed_files(embedder, files, cache)
    other = load_model({"type": "embed", "path": str(embedder.opts.path), "channel_order": "rgb"})
    assert embed_files(other, files, cache).computed == 3
    assert cache.count(embedder.identity) == 3 and cache.count() == 6


def test_unreadable_files_are_left_out(embedder: ImageEmbedder, tmp_path: Path) -> None:
    good = write(tmp_path / "g", "good.png", (1, 1, 1))
    bad = tmp_path / "g" / "bad.png"
    bad.write_bytes(b"not a picture")
    done = embed_files(embedder, [bad, good], EmbeddingCache(tmp_path / "c"))
    assert done.paths == [good] and done.skipped == [bad] and done.vectors.shape == (1, 4)


def test_list_images_filters_by_ending_and_is_not_recursive(tmp_path: Path) -> None:
    for name in ["b.jpg", "a.jpg", "c.png", "d.JPG", "sub/e.jpg", "notes.txt", "._a.jpg", ".hidden.jpg"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in list_images(tmp_path, ".jpg")] == ["a.jpg", "b.jpg"]
    assert [p.name for p in list_images(tmp_path, [".png", ".JPG"])] == ["c.png", "d.JPG"]
    with pytest.raises(FileNotFoundError, match="nowhere"):
        list_images(tmp_path / "nowhere", ".jpg")


def test_empty_list_gives_empty_result(embedder: ImageEmbedder) -> None:
    done = embed_files(embedder, [])
    assert done.paths == [] and done.vectors.shape[0] == 0 and done.computed == 0
