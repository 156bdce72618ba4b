"""The one JSON encoding every text sink uses: compact, UTF-8, strict (no NaN), numpy values accepted."""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np

from pipelines.jsonable import to_jsonable


def _default(value: object) -> object:
    """json.dumps asks only about values it cannot write itself: numpy's are converted, anything else is a bug."""
    if isinstance(value, np.generic | np.ndarray):
        return to_jsonable(value)
    raise TypeError(f"payload value of type {type(value).__name__} is not JSON serialisable: {value!r:.80}")


def to_json(payload: Mapping[str, object]) -> str:
    """Compact JSON text; raises ValueError on NaN/inf and TypeError on values JSON cannot hold."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_default)
