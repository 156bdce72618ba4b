"""The one JSON encoding every text sink uses: compact, UTF-8, strict (no NaN), numpy scalars accepted."""

from __future__ import annotations

import json
from typing import Any

import numpy as np


def _default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"payload value of type {type(value).__name__} is not JSON serialisable: {value!r:.80}")


def to_json(payload: Any) -> str:
    """Compact JSON text; raises ValueError on NaN/inf and TypeError on values JSON cannot hold."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_default)
