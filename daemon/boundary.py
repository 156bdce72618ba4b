"""The worker thread's isolation boundary: one step (a batch, a frame, a result, an offer, a job) fails alone."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def attempt(step: Callable[..., T], *args: Any) -> tuple[T | None, Exception | None]:
    """Run one worker step; return its value, or its error for the caller to log, count and carry on."""
    try:
        return step(*args), None
    except Exception as exc:  # isolation boundary: the per-frame worker step
        return None, exc
