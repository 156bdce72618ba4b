"""Embeddings of image files, batched through the model and cached on disk by file-content hash."""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
from tqdm import tqdm

from pipelines.preprocess import Floats, Image, as_image

log = logging.getLogger(__name__)

_SQL_CHUNK = 500  # keys per SELECT, far below SQLite's bound-parameter limit
_SETTLE_NS = 2_000_000_000


class Embedder(Protocol):
    """What the cache and the comparisons need from a model (ImageEmbedder and ClipModel have it)."""

    @property
    def identity(self) -> str: ...

    def embed(self, crops: Sequence[Image]) -> Floats: ...


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class EmbeddingCache:
    """One SQLite file: (model identity, file sha256) -> float32 vector, and path -> sha256 by size/mtime.

    The second table only spares re-reading unchanged files: a file whose size or modification time
    changed is hashed again, and vectors are always looked up by content hash.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.suffix != ".sqlite":
            self.path = self.path / "embeddings.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS embeddings (model TEXT NOT NULL, sha256 TEXT NOT NULL, "
                "vector BLOB NOT NULL, PRIMARY KEY (model, sha256))"
            )
            db.execute(
                "CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, size INTEGER NOT NULL, "
                "mtime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL)"
            )

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        try:
            db = sqlite3.connect(self.path, timeout=30)
        except sqlite3.Error as exc:
            raise OSError(f"embedding cache {self.path}: cannot open: {exc}") from exc
        try:
            with db:
                yield db
        except sqlite3.DatabaseError as exc:
            raise OSError(f"embedding cache {self.path}: {exc} (delete the file to start afresh)") from exc
        finally:
            db.close()

    def _select(self, sql: str, first: list[str], keys: list[str]) -> list[tuple[Any, ...]]:
        """Rows of `sql` for `keys`, queried in chunks; untyped, as sqlite3 returns whatever the columns hold."""
        rows: list[tuple[Any, ...]] = []
        with self._db() as db:
            for start in range(0, len(keys), _SQL_CHUNK):
                chunk = keys[start : start + _SQL_CHUNK]
                rows += db.execute(sql.format(marks=",".join("?" * len(chunk))), [*first, *chunk]).fetchall()
        return rows

    def get_many(self, model: str, digests: Iterable[str]) -> dict[str, Floats]:
        keys = list(dict.fromkeys(digests))
        sql = "SELECT sha256, vector FROM embeddings WHERE model = ? AND sha256 IN ({marks})"
        return {sha: np.frombuffer(blob, dtype=np.float32) for sha, blob in self._select(sql, [model], keys)}

    def put_many(self, model: str, vectors: dict[str, Floats]) -> None:
        rows = [(model, sha, np.asarray(v, dtype=np.float32).tobytes()) for sha, v in vectors.items()]
        with self._db() as db:
            db.executemany("INSERT OR REPLACE INTO embeddings (model, sha256, vector) VALUES (?, ?, ?)", rows)

    def file_digests(self, paths: Sequence[Path]) -> dict[Path, str]:
        """sha256 of each file, read again only when its size or modification time changed."""
        keys = {p: str(p.resolve()) for p in paths}
        stats = {p: p.stat() for p in paths}
        sql = "SELECT path, size, mtime_ns, sha256 FROM files WHERE path IN ({marks})"
        known = {row[0]: row[1:] for row in self._select(sql, [], list(keys.values()))}
        digests: dict[Path, str] = {}
        fresh = []
        # A file modified within the clock's granularity of now could change again with the same size and
        # mtime (git's "racy" case): such files are hashed every time until they have settled.
        settled_before = time.time_ns() - _SETTLE_NS
        for path in paths:
            st, row = stats[path], known.get(keys[path])
            if row is not None and row[0] == st.st_size and row[1] == st.st_mtime_ns:
                digests[path] = row[2]
                continue
            digests[path] = file_sha256(path)
            if st.st_mtime_ns < settled_before:
                fresh.append((keys[path], st.st_size, st.st_mtime_ns, digests[path]))
        if fresh:
            with self._db() as db:
                db.executemany("INSERT OR REPLACE INTO files (path, size, mtime_ns, sha256) VALUES (?, ?, ?, ?)", fresh)
        return digests

    def count(self, model: str | None = None) -> int:
        with self._db() as db:
            if model is None:
                return int(db.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0])
            return int(db.execute("SELECT COUNT(*) FROM embeddings WHERE model = ?", (model,)).fetchone()[0])


@dataclass(frozen=True)
class EmbeddedFiles:
    """The readable files, their embeddings [N, D] in the same order, and how many were computed now."""

    paths: list[Path]
    vectors: Floats
    computed: int
    skipped: list[Path]


def list_images(folder: str | Path, extensions: str | Sequence[str]) -> list[Path]:
    """Files in `folder` (not recursive) whose name ends with one of the extensions (leading dot), sorted."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist or is not a folder")
    suffixes = (extensions,) if isinstance(extensions, str) else tuple(extensions)
    # Dot files are skipped as glob("*.png") skips them (and macOS "._x.png" resource forks are not images).
    return sorted(p for p in root.iterdir() if p.is_file() and p.name.endswith(suffixes) and not p.name.startswith("."))


def _read_batch(paths: Sequence[Path]) -> tuple[list[Path], list[Image], list[Path]]:
    ok_paths: list[Path] = []
    images: list[Image] = []
    bad: list[Path] = []
    for path in paths:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            log.warning("cannot decode image %s; left out", path)
            bad.append(path)
        else:
            ok_paths.append(path)
            images.append(as_image(image))
    return ok_paths, images, bad


def embed_files(
    model: Embedder,
    paths: Sequence[str | Path],
    cache: EmbeddingCache | None = None,
    *,
    batch_size: int = 32,
    progress: bool = False,
    desc: str = "embedding",
) -> EmbeddedFiles:
    """Embed image files, reusing cached vectors for content already seen by this same model.

    Files with identical content are embedded once. Unreadable files are logged and left out.
    """
    files = [Path(p) for p in paths]
    digests = cache.file_digests(files) if cache else {p: file_sha256(p) for p in files}
    known = cache.get_many(model.identity, digests.values()) if cache else {}
    todo: dict[str, Path] = {}
    for path in files:
        if digests[path] not in known:
            todo.setdefault(digests[path], path)
    unreadable = 0
    pending = list(todo.values())
    with tqdm(total=len(pending), desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for start in range(0, len(pending), batch_size):
            ok_paths, images, bad = _read_batch(pending[start : start + batch_size])
            unreadable += len(bad)
            fresh = dict(zip((digests[p] for p in ok_paths), model.embed(images), strict=True)) if images else {}
            if cache and fresh:
                cache.put_many(model.identity, fresh)
            known.update(fresh)
            bar.update(len(ok_paths) + len(bad))
    kept = [p for p in files if digests[p] in known]
    skipped = [p for p in files if digests[p] not in known]
    vectors = np.stack([known[digests[p]] for p in kept]).astype(np.float32) if kept else np.zeros((0, 0), np.float32)
    computed = len(pending) - unreadable
    log.debug(
        "embedded %d files (%d computed, %d cached, %d unreadable)",
        len(kept),
        computed,
        len(kept) - computed,
        len(skipped),
    )
    return EmbeddedFiles(paths=kept, vectors=vectors, computed=computed, skipped=skipped)
