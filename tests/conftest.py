"""Shared test fixtures: where the real models and media live (../shared beside the checkout)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = ["tests.fixtures.mosquitto", "tests.fixtures.rtsp_server"]

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EDGEWATCH_SHARED", ROOT.parent / "shared"))
MODELS = SHARED / "models"
MEDIA = SHARED / "media"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent: the real models and media live in ../shared beside the checkout")
    return path


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """CLI tests call main(), which configures the root logger; put it back so tests stay independent."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="session")
def models_dir() -> Path:
    return _need(MODELS)


@pytest.fixture(scope="session")
def media_dir() -> Path:
    return _need(MEDIA)
